package oci_test

import (
	"os"
	"testing"

	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/test/registry"
)

func BenchmarkReal500(b *testing.B) {
	isolate(b)
	reg := registry.Start(b, registry.Options{})
	bundle, err := os.ReadFile("/tmp/bench500.tar.gz")
	if err != nil {
		b.Fatal(err)
	}
	var d oci.Digest
	b.Run("push-first", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			// a fresh repository each time: blobs are uploaded
			d, err = oci.Push(ctx(b), bundle, reg.Repo("acme/p"+string(rune('a'+i%26))+string(rune('a'+i/26%26))+":v1"))
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pull", func(b *testing.B) {
		for b.Loop() {
			if _, err := oci.Pull(ctx(b), d); err != nil {
				b.Fatal(err)
			}
		}
	})
	c := newCache(b)
	oci.Pull(ctx(b), d, oci.WithCache(c))
	down, _ := oci.ParseDigest("127.0.0.1:1/acme/policies@" + d.Hash().String())
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := oci.Pull(ctx(b), down, oci.WithCache(c)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
