package oci_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/toolgate/toolgate/bundles/cache"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/test/registry"
)

var _ oci.Cache = (*cache.Cache)(nil)

func TestPushPullRoundTrip(t *testing.T) {
	isolate(t)
	reg := registry.Start(t, registry.Options{})
	b := bundle(t, "abc123", 4096)
	ref := reg.Repo("acme/policies:v1")

	d, err := oci.Push(ctx(t), b, ref, oci.WithSource("https://git.example.com/acme/policies"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.String(), reg.Repo("acme/policies")+"@"+d.Hash().String(); got != want {
		t.Errorf("Push returned %q, want %q", got, want)
	}
	got, err := oci.Pull(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, b) {
		t.Fatal("pulled bytes differ from the pushed bundle")
	}

	again, err := oci.Push(ctx(t), b, ref, oci.WithSource("https://git.example.com/acme/policies"))
	if err != nil {
		t.Fatal(err)
	}
	if again != d {
		t.Errorf("pushing the same bundle twice: got %s then %s", d, again)
	}
	resolved, err := oci.Resolve(ctx(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	if resolved != d {
		t.Errorf("Resolve(%s) = %s, want %s", ref, resolved, d)
	}

	// The artifact is laid out as architecture.md says.
	nd, _ := d.Name()
	desc, err := remote.Get(nd)
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != oci.ManifestMediaType || m.Config.MediaType != oci.ConfigMediaType || len(m.Layers) != 1 ||
		m.Layers[0].MediaType != oci.LayerMediaType || m.Layers[0].Annotations[oci.AnnotationTitle] != "bundle.tar.gz" {
		t.Errorf("manifest layout: %s", desc.Manifest)
	}
	wantAnn := map[string]string{
		oci.AnnotationRevision: "abc123",
		oci.AnnotationSource:   "https://git.example.com/acme/policies",
		oci.AnnotationCreated:  "1970-01-01T00:00:00Z",
		oci.AnnotationTitle:    "policy bundle",
	}
	for k, want := range wantAnn {
		if got := m.Annotations[k]; got != want {
			t.Errorf("annotation %s: got %q, want %q", k, got, want)
		}
	}
	img, err := remote.Image(nd)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil || string(cfg) != "{}" {
		t.Errorf("config: got %q, %v; want {}", cfg, err)
	}
}

func TestParseDigest(t *testing.T) {
	const h = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in      string
		want    string // String(), when it parses
		wantErr error
	}{
		{"127.0.0.1:5000/acme/policies@" + h, "127.0.0.1:5000/acme/policies@" + h, nil},
		{"registry.example.com/acme/policies:v1@" + h, "registry.example.com/acme/policies@" + h, nil},
		{"oci:/var/lib/toolgate/store@" + h, "oci:/var/lib/toolgate/store@" + h, nil},
		{"oci:./store@" + h, "oci:./store@" + h, nil},
		{"127.0.0.1:5000/acme/policies:v1", "", oci.ErrTag},
		{"registry.example.com/acme/policies", "", oci.ErrTag},
		{"oci:/var/lib/store:v1", "", oci.ErrTag},
		{"oci:/var/lib/store", "", oci.ErrTag},
		{"oci:./a:b/c", "", oci.ErrTag},
		{"oci:", "", oci.ErrBadReference},
		{"oci:@" + h, "", oci.ErrBadReference},
		{"oci:/x@sha256:abc", "", oci.ErrBadReference},
		{"oci:/x:bad tag", "", oci.ErrBadReference},
		{"UPPER/case@" + h, "", oci.ErrBadReference},
		{"host/repo@sha256:abc", "", oci.ErrBadReference},
		{"", "", oci.ErrBadReference},
	}
	for _, tt := range tests {
		d, err := oci.ParseDigest(tt.in)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("ParseDigest(%q): got %v, want %v", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseDigest(%q): %v", tt.in, err)
			continue
		}
		if got := d.String(); got != tt.want {
			t.Errorf("ParseDigest(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
		if got := d.Hash().String(); got != h {
			t.Errorf("ParseDigest(%q).Hash() = %q", tt.in, got)
		}
	}
}

func TestLoopbackIsPlainHTTP(t *testing.T) {
	const h = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		ref      string
		opts     []oci.Option
		wantHTTP bool
	}{
		{"127.0.0.1:5000/policies@" + h, nil, true},
		{"127.1.2.3:5000/policies@" + h, nil, true},
		{"localhost:5000/policies@" + h, nil, true},
		{"[::1]:5000/policies@" + h, nil, true},
		{"registry.example.com/policies@" + h, nil, false},
		{"registry.example.com/policies@" + h, []oci.Option{oci.WithInsecure(true)}, true},
	}
	for _, tt := range tests {
		d, err := oci.ParseDigest(tt.ref, tt.opts...)
		if err != nil {
			t.Fatal(err)
		}
		nd, _ := d.Name()
		if got := nd.Context().Scheme() == "http"; got != tt.wantHTTP {
			t.Errorf("%s: plain HTTP %v, want %v", tt.ref, got, tt.wantHTTP)
		}
	}
}

// A private address that is not loopback gets no plain-HTTP fallback
// unless asked, although go-containerregistry would allow it. Nothing
// listens at the address; the point is which requests are made.
func TestInsecureRefusedUnlessAsked(t *testing.T) {
	isolate(t)
	const ref = "10.255.255.1:5000/policies@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	d, err := oci.ParseDigest(ref)
	if err != nil {
		t.Fatal(err)
	}
	_, err = oci.Pull(ctx(t), d, oci.WithTimeout(200*time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), oci.ErrInsecure.Error()) {
		t.Fatalf("got %v, want the plain-HTTP fallback refused", err)
	}
	_, err = oci.Pull(ctx(t), d, oci.WithTimeout(200*time.Millisecond), oci.WithInsecure(true))
	if err == nil || strings.Contains(err.Error(), oci.ErrInsecure.Error()) {
		t.Fatalf("with WithInsecure: got %v, want plain HTTP tried", err)
	}
}

func TestLayoutRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	b1, b2 := bundle(t, "rev1", 1024), bundle(t, "rev2", 1024)

	d1, err := oci.Push(ctx(t), b1, "oci:"+dir+":v1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d1.String(), "oci:"+dir+"@"+d1.Hash().String(); got != want {
		t.Errorf("Push returned %q, want %q", got, want)
	}
	if again, err := oci.Push(ctx(t), b1, "oci:"+dir+":v1"); err != nil || again != d1 {
		t.Errorf("second push: got %v, %v; want %v", again, err, d1)
	}
	got, err := oci.Pull(ctx(t), d1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, b1) {
		t.Fatal("pulled bytes differ from the pushed bundle")
	}
	parsed, err := oci.ParseDigest(d1.String())
	if err != nil || parsed != d1 {
		t.Fatalf("ParseDigest(%q) = %v, %v", d1, parsed, err)
	}

	// Moving the tag: the layout keeps both images, the tag names the new one.
	d2, err := oci.Push(ctx(t), b2, "oci:"+dir+":v1")
	if err != nil {
		t.Fatal(err)
	}
	if d2 == d1 {
		t.Fatal("two bundles gave one digest")
	}
	if r, err := oci.Resolve(ctx(t), "oci:"+dir+":v1"); err != nil || r != d2 {
		t.Errorf("Resolve after moving the tag: got %v, %v; want %v", r, err, d2)
	}
	if got, err := oci.Pull(ctx(t), d1); err != nil || !bytes.Equal(got, b1) {
		t.Errorf("the earlier digest no longer pulls: %v", err)
	}
	index, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(index, &im); err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations[oci.AnnotationRefName] != "v1" || im.Manifests[0].Digest != d2.Hash() {
		t.Errorf("index.json: %s", index)
	}

	if _, err := oci.Resolve(ctx(t), "oci:"+dir+":nope"); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("Resolve of a missing tag: got %v, want ErrNotFound", err)
	}
	if _, err := oci.Push(ctx(t), b1, "oci:"+t.TempDir()); err != nil {
		t.Errorf("push to an empty folder (it becomes a layout): %v", err)
	}
	notLayout := t.TempDir()
	os.WriteFile(filepath.Join(notLayout, "README"), []byte("hi"), 0o644)
	if _, err := oci.Push(ctx(t), b1, "oci:"+notLayout); err == nil {
		t.Error("push into a folder that is not a layout: no error")
	}
}

func TestBasicAuth(t *testing.T) {
	isolate(t)
	reg := registry.Start(t, registry.Options{Username: "ci", Password: "s3cret"})
	b := bundle(t, "auth", 512)
	ref := reg.Repo("acme/policies:v1")

	if _, err := oci.Push(ctx(t), b, ref); !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("push with no credentials: got %v, want ErrUnauthorized", err)
	}
	t.Setenv(oci.EnvUsername, "ci")
	t.Setenv(oci.EnvPassword, "wrong")
	if _, err := oci.Push(ctx(t), b, ref); !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("push with a wrong password: got %v, want ErrUnauthorized", err)
	}
	t.Setenv(oci.EnvPassword, "s3cret")
	d, err := oci.Push(ctx(t), b, ref)
	if err != nil {
		t.Fatalf("push with the password: %v", err)
	}
	if got, err := oci.Pull(ctx(t), d); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("pull with the password: %v", err)
	}

	// docker's config.json, as `docker login` writes it.
	t.Setenv(oci.EnvUsername, "")
	t.Setenv(oci.EnvPassword, "")
	if _, err := oci.Pull(ctx(t), d); !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("pull with no credentials: got %v, want ErrUnauthorized", err)
	}
	config := `{"auths":{"` + reg.Host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("ci:s3cret")) + `"}}}`
	if err := os.WriteFile(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := oci.Pull(ctx(t), d); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("pull with docker's config.json: %v", err)
	}
	// The variables take precedence over config.json.
	t.Setenv(oci.EnvUsername, "ci")
	t.Setenv(oci.EnvPassword, "wrong")
	if _, err := oci.Pull(ctx(t), d); !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("variables over config.json: got %v, want ErrUnauthorized", err)
	}
}

func TestTLSWithCA(t *testing.T) {
	isolate(t)
	reg := registry.Start(t, registry.Options{TLS: true})
	b := bundle(t, "tls", 512)
	ref := reg.Repo("acme/policies:v1")

	_, err := oci.Push(ctx(t), b, ref)
	if !errors.Is(err, oci.ErrCertificate) {
		t.Fatalf("push without the CA: got %v, want ErrCertificate", err)
	}
	d, err := oci.Push(ctx(t), b, ref, oci.WithCACert(reg.CACert))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oci.Pull(ctx(t), d); !errors.Is(err, oci.ErrCertificate) {
		t.Fatalf("pull without the CA: got %v, want ErrCertificate", err)
	}
	got, err := oci.Pull(ctx(t), d, oci.WithCACert(reg.CACert))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, b) {
		t.Fatal("pulled bytes differ")
	}
	if _, err := oci.Pull(ctx(t), d, oci.WithCACert(filepath.Join(t.TempDir(), "missing.pem"))); err == nil {
		t.Fatal("a missing CA file: no error")
	}
}

// crane, go-containerregistry's CLI, built from the module version go.mod
// requires (go build, not go run pkg@version, which would need the module
// proxy), fetches our layer as a user would.
func TestCraneInterop(t *testing.T) {
	isolate(t)
	if testing.Short() {
		t.Skip("builds crane")
	}
	crane := filepath.Join(t.TempDir(), "crane")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(gobin, "build", "-o", crane, "github.com/google/go-containerregistry/cmd/crane").CombinedOutput(); err != nil {
		t.Fatalf("building crane: %v\n%s", err, out)
	}
	reg := registry.Start(t, registry.Options{})
	b := bundle(t, "crane", 2048)
	d, err := oci.Push(ctx(t), b, reg.Repo("acme/policies:v1"))
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := exec.Command(crane, "manifest", "--insecure", d.String()).Output()
	if err != nil {
		t.Fatalf("crane manifest: %v", err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(manifest, &m); err != nil || len(m.Layers) != 1 {
		t.Fatalf("crane manifest: %s (%v)", manifest, err)
	}
	layer, err := exec.Command(crane, "blob", "--insecure", reg.Repo("acme/policies")+"@"+m.Layers[0].Digest.String()).Output()
	if err != nil {
		t.Fatalf("crane blob: %v", err)
	}
	if !bytes.Equal(layer, b) {
		t.Fatal("crane blob: the layer is not the bundle")
	}
	digest, err := exec.Command(crane, "digest", "--insecure", reg.Repo("acme/policies:v1")).Output()
	if err != nil || strings.TrimSpace(string(digest)) != d.Hash().String() {
		t.Fatalf("crane digest: %q, %v; want %s", digest, err, d.Hash())
	}
}

func TestPullFromCache(t *testing.T) {
	isolate(t)
	reg := registry.Start(t, registry.Options{})
	b := bundle(t, "cached", 2048)
	d, err := oci.Push(ctx(t), b, reg.Repo("acme/policies:v1"))
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, reg.URL, nil)
	viaProxy, err := oci.ParseDigest(p.host() + "/acme/policies@" + d.Hash().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(t)
	if got, err := oci.Pull(ctx(t), viaProxy, oci.WithCache(c)); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("first pull: %v", err)
	}
	if n := len(cacheEntries(t, c)); n != 2 {
		t.Fatalf("cache holds %d entries, want 2 (manifest and layer)", n)
	}

	// The registry goes down: the pinned digest still loads.
	p.Close()
	got, err := oci.Pull(ctx(t), viaProxy, oci.WithCache(c))
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("pull with the registry down: %v", err)
	}

	// A corrupt layer is discarded; with the registry down that is an error,
	// with it up the layer is fetched again.
	layerFile := filepath.Join(c.Dir(), "sha256", hashOf(b).Hex)
	if err := os.WriteFile(layerFile, append([]byte("x"), b[1:]...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := oci.Pull(ctx(t), viaProxy, oci.WithCache(c), oci.WithTimeout(time.Second)); err == nil {
		t.Fatal("corrupt cache and registry down: no error")
	}
	if _, err := os.Stat(layerFile); !os.IsNotExist(err) {
		t.Fatal("the corrupt layer was not deleted")
	}
	if got, err := oci.Pull(ctx(t), d, oci.WithCache(c)); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("pull after the corruption: %v", err)
	}
	if got, err := os.ReadFile(layerFile); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("the layer was not cached again: %v", err)
	}
}

func TestPushRefusesBadInput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	b := bundle(t, "x", 4096)
	tests := []struct {
		name    string
		bundle  []byte
		ref     string
		opts    []oci.Option
		wantErr error
	}{
		{"not a bundle", []byte("hello"), "oci:" + dir, nil, oci.ErrBadBundle},
		{"unsafe entry", targz(t, [2]string{"../x", "y"}), "oci:" + dir, nil, oci.ErrBadBundle},
		{"over the limit", b, "oci:" + dir, []oci.Option{oci.WithMaxSize(1000)}, oci.ErrTooLarge},
		{"digest that is not the bundle's", b, "oci:" + dir + "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", nil, oci.ErrDigestMismatch},
		{"bad reference", b, "Not A Ref", nil, oci.ErrBadReference},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := oci.Push(ctx(t), tt.bundle, tt.ref, tt.opts...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestPullZeroDigest(t *testing.T) {
	if _, err := oci.Pull(ctx(t), oci.Digest{}); !errors.Is(err, oci.ErrBadReference) {
		t.Fatalf("got %v, want ErrBadReference", err)
	}
}

func TestRemoteOptions(t *testing.T) {
	isolate(t)
	reg := registry.Start(t, registry.Options{TLS: true})
	d, err := oci.Push(ctx(t), bundle(t, "ro", 256), reg.Repo("acme/policies:v1"), oci.WithCACert(reg.CACert))
	if err != nil {
		t.Fatal(err)
	}
	ro, err := oci.RemoteOptions(oci.WithCACert(reg.CACert))
	if err != nil {
		t.Fatal(err)
	}
	nd, _ := d.Name()
	if _, err := remote.Head(nd, ro...); err != nil {
		t.Fatalf("go-containerregistry with RemoteOptions: %v", err)
	}
	if _, err := remote.Head(nd); err == nil {
		t.Fatal("without RemoteOptions the test CA should not be trusted")
	}
	tag, _ := name.NewTag(reg.Repo("acme/policies:v1"))
	if _, err := remote.Head(tag, ro...); err != nil {
		t.Fatal(err)
	}
}
