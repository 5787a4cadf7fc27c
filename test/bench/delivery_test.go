package bench

import (
	"bytes"
	"context"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/cache"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/bundles/sign"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/test/registry"
)

// BenchmarkDelivery times the 500-rule bundle's way to the proxy against a
// real local registry: CI's push + sign, the proxy's verify + pull, and its
// load of a verified bundle from the digest-addressed cache.
func BenchmarkDelivery(b *testing.B) {
	ctx := context.Background()
	bd, _, err := build.Build(ctx, Large(), build.Options{Revision: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, bd); err != nil {
		b.Fatal(err)
	}
	raw := buf.Bytes()
	password := []byte("bench")
	priv, pub, err := sign.GenerateKeys(password)
	if err != nil {
		b.Fatal(err)
	}
	reg := registry.Start(b, registry.Options{})
	ref := reg.Repo("acme/policies:latest")
	remote, err := oci.RemoteOptions()
	if err != nil {
		b.Fatal(err)
	}
	var d oci.Digest
	b.Run("step=push-sign", func(b *testing.B) {
		for b.Loop() {
			if d, err = oci.Push(ctx, raw, ref); err != nil {
				b.Fatal(err)
			}
			nd, _ := d.Name()
			if err := sign.Sign(ctx, nd, priv, password, remote...); err != nil {
				b.Fatal(err)
			}
		}
	})
	nd, _ := d.Name()
	b.Run("step=verify-pull", func(b *testing.B) {
		for b.Loop() {
			if err := sign.Verify(ctx, nd, [][]byte{pub}, remote...); err != nil {
				b.Fatal(err)
			}
			if _, err := oci.Pull(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
	})
	c, err := cache.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := oci.Pull(ctx, d, oci.WithCache(c)); err != nil {
		b.Fatal(err)
	}
	b.Run("step=load-cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := oci.Pull(ctx, d, oci.WithCache(c)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
