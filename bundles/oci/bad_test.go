package oci_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/test/registry"
)

// gzipBomb is a valid-looking bundle whose one file inflates to n zero bytes.
func gzipBomb(t testing.TB, n int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "/policy.wasm", Size: n, Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, zeros{}, n); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// Each bad artifact is refused with its sentinel error, and nothing reaches
// the cache.
func TestPullRefusesBadInput(t *testing.T) {
	isolate(t)
	reg := registry.Start(t, registry.Options{})
	good, other := bundle(t, "good", 4096), bundle(t, "other", 4096)
	dGood, err := oci.Push(ctx(t), good, reg.Repo("acme/good:v1"))
	if err != nil {
		t.Fatal(err)
	}
	dOther, err := oci.Push(ctx(t), other, reg.Repo("acme/good:v2"))
	if err != nil {
		t.Fatal(err)
	}
	nOther, _ := dOther.Name()
	otherManifest, err := remote.Get(nOther)
	if err != nil {
		t.Fatal(err)
	}
	goodPath := "/v2/acme/good/"

	// A proxy that flips one byte of the good layer, keeping its length.
	tamper := startProxy(t, reg.URL, func(resp *http.Response) error {
		if resp.Request.URL.Path != goodPath+"blobs/"+hashOf(good).String() {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		b[len(b)/2] ^= 0xff
		replaceBody(resp, b)
		return nil
	})
	// A proxy that answers the good digest with the other manifest.
	swap := startProxy(t, reg.URL, func(resp *http.Response) error {
		if resp.Request.URL.Path == goodPath+"manifests/"+dGood.Hash().String() {
			replaceBody(resp, otherManifest.Manifest)
			resp.Header.Set("Docker-Content-Digest", dGood.Hash().String())
		}
		return nil
	})
	counting := startProxy(t, reg.URL, nil)

	ociConfig := blob{types.OCIConfigJSON, []byte("{}")}
	layer := func(b []byte) blob { return blob{types.OCILayer, b} }
	raw := func(config blob, layers ...blob) string {
		return pushRaw(t, reg.Repo("acme/raw"), config, layers...)
	}

	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	// The hanging servers hold each request until the client gives up.
	hang := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}
	hangingPing := httptest.NewServer(http.HandlerFunc(hang))
	t.Cleanup(hangingPing.Close)
	hangingManifest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return // 200: no auth
		}
		hang(w, r)
	}))
	t.Cleanup(hangingManifest.Close)
	at := func(server *httptest.Server) string {
		return strings.TrimPrefix(server.URL, "http://") + "/acme/good@" + dGood.Hash().String()
	}
	short := []oci.Option{oci.WithTimeout(300 * time.Millisecond)}

	tests := []struct {
		name    string
		ref     string
		opts    []oci.Option
		wantErr []error
		check   func(t *testing.T)
	}{
		{name: "tampered layer", ref: at(tamper.Server), wantErr: []error{oci.ErrDigestMismatch}},
		{name: "different manifest", ref: at(swap.Server), wantErr: []error{oci.ErrDigestMismatch}},
		{name: "two layers", ref: raw(ociConfig, layer(good), layer(other)), wantErr: []error{oci.ErrBadManifest}},
		{name: "wrong layer media type", ref: raw(ociConfig, blob{"application/vnd.oci.image.layer.v1.tar", good}), wantErr: []error{oci.ErrBadManifest}},
		{name: "wrong config media type", ref: raw(blob{types.DockerConfigJSON, []byte("{}")}, layer(good)), wantErr: []error{oci.ErrBadManifest}},
		{name: "no layer", ref: raw(ociConfig), wantErr: []error{oci.ErrBadManifest}},
		{
			name: "layer over the size limit", ref: at(counting.Server),
			opts:    []oci.Option{oci.WithMaxSize(int64(len(good) - 1))},
			wantErr: []error{oci.ErrTooLarge},
			check: func(t *testing.T) {
				if n := counting.saw("GET " + goodPath + "blobs/"); n != 0 {
					t.Errorf("the layer was downloaded %d times; the size check comes first", n)
				}
			},
		},
		{name: "gzip bomb", ref: raw(ociConfig, layer(gzipBomb(t, 129<<20))), wantErr: []error{oci.ErrBadBundle, bundles.ErrTooLarge}},
		{name: "unsafe tar entry", ref: raw(ociConfig, layer(targz(t, [2]string{"../../etc/cron.d/x", "y"}))), wantErr: []error{oci.ErrBadBundle, bundles.ErrUnsafeEntry}},
		{name: "not a bundle", ref: raw(ociConfig, layer([]byte("plain text"))), wantErr: []error{oci.ErrBadBundle, bundles.ErrCorrupt}},
		{name: "unknown digest", ref: reg.Repo("acme/good@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"), wantErr: []error{oci.ErrNotFound}},
		{
			name: "registry answers 500", ref: at(failing),
			check: func(t *testing.T) {}, // the message is checked below
		},
		{name: "registry hangs at /v2/", ref: at(hangingPing), opts: short, wantErr: []error{oci.ErrTimeout}},
		{name: "registry hangs at the manifest", ref: at(hangingManifest), opts: short, wantErr: []error{oci.ErrTimeout}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := oci.ParseDigest(tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			c := newCache(t)
			start := time.Now()
			got, err := oci.Pull(ctx(t), d, append(tt.opts, oci.WithCache(c))...)
			elapsed := time.Since(start)
			if err == nil {
				t.Fatalf("pulled %d bytes, want an error", len(got))
			}
			t.Logf("error (after %v): %v", elapsed.Round(time.Millisecond), err)
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("got %v, want it to wrap %q", err, want)
				}
			}
			if !strings.Contains(err.Error(), d.Hash().String()) {
				t.Errorf("the error does not name the digest: %v", err)
			}
			if tt.name == "registry answers 500" && !strings.Contains(err.Error(), "500") {
				t.Errorf("the error does not say 500: %v", err)
			}
			if elapsed > 10*time.Second {
				t.Errorf("took %v", elapsed)
			}
			if entries := cacheEntries(t, c); len(entries) != 0 {
				t.Errorf("cached %v after a refusal", entries)
			}
			if tt.check != nil {
				tt.check(t)
			}
		})
	}
	// And the good bundle still pulls through the counting proxy.
	d, _ := oci.ParseDigest(at(counting.Server))
	if b, err := oci.Pull(ctx(t), d); err != nil || !bytes.Equal(b, good) {
		t.Fatalf("good pull: %v", err)
	}
}
