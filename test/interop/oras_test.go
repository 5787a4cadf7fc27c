// Package interop checks that other OCI tools take toolgate's artifacts as
// they are: oras (the library OPA's own OCI bundle downloader is built on)
// copies our pushed bundle by digest and its one layer is the bundle.
package interop

import (
	"bytes"
	"context"
	"io"
	"testing"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
	"github.com/toolgate/toolgate/test/registry"
)

func TestOrasPullsOurBundle(t *testing.T) {
	ctx := context.Background()
	b, _, err := build.Build(ctx, []policy.Source{{Path: "policies/github.yaml", Data: []byte("version: \"1\"\ntools:\n  x:\n    rules: []\n")}}, build.Options{Revision: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	reg := registry.Start(t, registry.Options{})
	d, err := oci.Push(ctx, buf.Bytes(), reg.Repo("acme/policies:v1"))
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := d.Name()
	repo, err := remote.NewRepository(ref.Context().Name())
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true // the test registry is on loopback
	store := memory.New()
	desc, err := oras.Copy(ctx, repo, ref.DigestStr(), store, "", oras.DefaultCopyOptions)
	if err != nil {
		t.Fatalf("oras copy by digest: %v", err)
	}
	if desc.Digest.String() != ref.DigestStr() {
		t.Fatalf("oras resolved %s, want %s", desc.Digest, ref.DigestStr())
	}
	manifest, err := content.FetchAll(ctx, store, desc)
	if err != nil {
		t.Fatal(err)
	}
	successors, err := content.Successors(ctx, store, desc)
	if err != nil {
		t.Fatal(err)
	}
	var layers int
	for _, s := range successors {
		if s.MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
			continue
		}
		layers++
		rc, err := store.Fetch(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, buf.Bytes()) {
			t.Fatalf("oras's layer is not the bundle (%d vs %d bytes)", len(got), len(buf.Bytes()))
		}
	}
	if layers != 1 {
		t.Fatalf("oras found %d bundle layers in %s, want 1", layers, manifest)
	}
}
