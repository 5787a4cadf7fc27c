package oci_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/test/registry"
)

// benchBundle is 512 KiB of incompressible Wasm: larger than the 500-rule
// bundle, so the numbers are an upper bound.
const benchWasm = 512 << 10

// BenchmarkPush pushes to a local registry. After the first push the
// registry already has the blobs, as it does when CI pushes a rebuilt,
// byte-identical bundle.
func BenchmarkPush(b *testing.B) {
	isolate(b)
	reg := registry.Start(b, registry.Options{})
	bundle := bundle(b, "bench", benchWasm)
	b.SetBytes(int64(len(bundle)))
	for b.Loop() {
		if _, err := oci.Push(ctx(b), bundle, reg.Repo("acme/policies:v1")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPull is pull + verify (digests, manifest checks, bundle read)
// from a local registry, with no cache. The issue asks for ≤ 300 ms.
func BenchmarkPull(b *testing.B) {
	isolate(b)
	reg := registry.Start(b, registry.Options{})
	bundle := bundle(b, "bench", benchWasm)
	d, err := oci.Push(ctx(b), bundle, reg.Repo("acme/policies:v1"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(bundle)))
	for b.Loop() {
		if _, err := oci.Pull(ctx(b), d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPullVerifyCached loads a cached bundle by digest: the manifest
// and layer re-hashed, the manifest re-checked and the bundle re-read, with
// no registry (the one given is down). The issue asks for ≤ 50 ms.
func BenchmarkPullVerifyCached(b *testing.B) {
	isolate(b)
	reg := registry.Start(b, registry.Options{})
	bundle := bundle(b, "bench", benchWasm)
	d, err := oci.Push(ctx(b), bundle, reg.Repo("acme/policies:v1"))
	if err != nil {
		b.Fatal(err)
	}
	c := newCache(b)
	if _, err := oci.Pull(ctx(b), d, oci.WithCache(c)); err != nil {
		b.Fatal(err)
	}
	down, err := oci.ParseDigest("127.0.0.1:1/acme/policies@" + d.Hash().String())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(bundle)))
	for b.Loop() {
		got, err := oci.Pull(ctx(b), down, oci.WithCache(c))
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != len(bundle) {
			b.Fatal("short read")
		}
	}
}

// BenchmarkPullLayout pulls from an OCI image layout on disk.
func BenchmarkPullLayout(b *testing.B) {
	bundle := bundle(b, "bench", benchWasm)
	d, err := oci.Push(ctx(b), bundle, "oci:"+filepath.Join(b.TempDir(), "store")+":v1")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(bundle)))
	for b.Loop() {
		if _, err := oci.Pull(ctx(b), d); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParseDigest(f *testing.F) {
	const h = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, s := range []string{
		"127.0.0.1:5000/acme/policies@" + h, "registry.example.com/a/b:v1@" + h, "oci:/x@" + h,
		"oci:./a:b", "oci:", "host/repo:tag", "@", "oci:@", "[::1]:5000/repo@" + h,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := oci.ParseDigest(s)
		if err != nil {
			return
		}
		// A parsed digest prints as a reference that parses to itself.
		again, err := oci.ParseDigest(d.String())
		if err != nil {
			t.Fatalf("ParseDigest(%q).String() = %q does not parse: %v", s, d, err)
		}
		if again.String() != d.String() || again.Hash() != d.Hash() {
			t.Fatalf("round trip: %q → %q → %q", s, d, again)
		}
	})
}

// Push and Pull through an OCI image layout, the default that needs no
// registry.
func Example() {
	dir, _ := os.MkdirTemp("", "toolgate-oci")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	var buf bytes.Buffer
	_ = bundles.Write(&buf, &bundles.Bundle{
		Manifest: bundles.Manifest{
			Revision: "0f3c2a1",
			Wasm:     []bundles.WasmResolver{{Entrypoint: bundles.Entrypoint, Module: bundles.WasmFile}},
		},
		Wasm: []byte("\x00asm\x01\x00\x00\x00"),
	})
	d, err := oci.Push(ctx, buf.Bytes(), "oci:"+filepath.Join(dir, "store")+":v1")
	if err != nil {
		fmt.Println(err)
		return
	}
	// d prints as oci:DIR@sha256:…, the string a pin file keeps.
	pinned, err := oci.ParseDigest(d.String())
	if err != nil {
		fmt.Println(err)
		return
	}
	got, err := oci.Pull(ctx, pinned)
	fmt.Println(bytes.Equal(got, buf.Bytes()), err)

	// A tag is not a digest.
	_, err = oci.ParseDigest("oci:" + filepath.Join(dir, "store") + ":v1")
	fmt.Println(errors.Is(err, oci.ErrTag))
	// Output:
	// true <nil>
	// true
}
