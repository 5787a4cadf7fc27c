package oci_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/cache"
	"github.com/toolgate/toolgate/bundles/oci"
)

// isolate keeps the developer's docker credentials and TOOLGATE_REGISTRY_*
// variables out of the test.
func isolate(t testing.TB) {
	t.Helper()
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	t.Setenv(oci.EnvUsername, "")
	t.Setenv(oci.EnvPassword, "")
}

// bundle returns a valid bundle's bytes; wasmSize bytes of random Wasm make
// it about that large, compressed.
func bundle(t testing.TB, revision string, wasmSize int) []byte {
	t.Helper()
	wasm := make([]byte, 8+wasmSize)
	copy(wasm, "\x00asm\x01\x00\x00\x00")
	r := rand.New(rand.NewPCG(1, uint64(len(revision))))
	for i := 8; i < len(wasm); i++ {
		wasm[i] = byte(r.Uint32())
	}
	b := &bundles.Bundle{
		Manifest: bundles.Manifest{
			Revision: revision,
			Roots:    []string{"toolgate"},
			Wasm:     []bundles.WasmResolver{{Entrypoint: bundles.Entrypoint, Module: bundles.WasmFile}},
			Metadata: bundles.Metadata{Compiler: "toolgate test", Servers: []string{"github"}},
		},
		Wasm:    wasm,
		Rego:    []byte("package toolgate\n"),
		Sources: []bundles.File{{Path: "policies/github.yaml", Data: []byte("server: github\n")}},
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// targz writes a .tar.gz with the given entries (name → body).
func targz(t testing.TB, entries ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e[0], Size: int64(len(e[1])), Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func newCache(t testing.TB) *cache.Cache {
	t.Helper()
	c, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cacheEntries lists the files in the cache.
func cacheEntries(t testing.TB, c *cache.Cache) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(c.Dir(), "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func hashOf(b []byte) v1.Hash {
	h, _, _ := v1.SHA256(bytes.NewReader(b))
	return h
}

// rawManifest is a manifest pushed as it is, for artifacts Push would never
// make.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

type blob struct {
	mediaType types.MediaType
	data      []byte
}

// pushRaw uploads the blobs to repo and a manifest with config and layers
// made of them, and returns the manifest's digest reference.
func pushRaw(t testing.TB, repo string, config blob, layers ...blob) string {
	t.Helper()
	r, err := name.NewRepository(repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc := func(b blob) v1.Descriptor {
		if err := remote.WriteLayer(r, static.NewLayer(b.data, b.mediaType)); err != nil {
			t.Fatal(err)
		}
		return v1.Descriptor{MediaType: b.mediaType, Size: int64(len(b.data)), Digest: hashOf(b.data)}
	}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: desc(config)}
	for _, l := range layers {
		m.Layers = append(m.Layers, desc(l))
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := r.Digest(hashOf(raw).String())
	if err := remote.Put(d, rawManifest{raw, types.OCIManifestSchema1}); err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// proxy is an httptest reverse proxy in front of a registry that can rewrite
// answers and counts the requests it saw.
type proxy struct {
	*httptest.Server
	mu       sync.Mutex // guards requests
	requests []string   // "GET /v2/…"
}

// host is the proxy's "127.0.0.1:PORT".
func (p *proxy) host() string { return strings.TrimPrefix(p.URL, "http://") }

func (p *proxy) saw(prefix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.requests {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

// startProxy forwards to the registry at target ("http://host:port");
// modify, when not nil, may change each answer.
func startProxy(t testing.TB, target string, modify func(*http.Response) error) *proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			p.mu.Lock()
			p.requests = append(p.requests, r.In.Method+" "+r.In.URL.Path)
			p.mu.Unlock()
		},
		ModifyResponse: modify,
	}
	p.Server = httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

// replaceBody sets a response's body.
func replaceBody(resp *http.Response, b []byte) {
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
}

// ctx is a test context with a deadline.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}
