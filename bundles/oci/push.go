package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/toolgate/toolgate/bundles"
)

// Push publishes bundle (the .tar.gz bytes bundles.Write makes) at ref, a
// registry reference or oci:DIR[:tag], and returns where it now is, by
// digest. The bundle is read with bundles.ReadBytes first, and refused if it
// is not valid or is over [WithMaxSize].
//
// The tag is resolved once, here: the digest returned is that of the
// manifest Push built and wrote, not one read back from the tag (which
// another push may already have moved). If ref names a digest, it must be
// the one the bundle gives, or Push fails with [ErrDigestMismatch].
//
// Pushing to a layout creates the folder if needed and records the tag in
// index.json (org.opencontainers.image.ref.name), replacing the image the tag
// named before; concurrent pushes to one layout folder are not safe.
func Push(ctx context.Context, bundle []byte, ref string, opts ...Option) (Digest, error) {
	o := makeOptions(opts)
	r, err := parse(ref, o)
	if err != nil {
		return Digest{}, fmt.Errorf("pushing: %w", err)
	}
	if n := int64(len(bundle)); n > o.maxSize {
		return Digest{}, fmt.Errorf("pushing to %s: %w: the bundle is %d bytes, the limit is %d", ref, ErrTooLarge, n, o.maxSize)
	}
	b, err := bundles.ReadBytes(bundle, bundles.Limits{MaxCompressed: o.maxSize})
	if err != nil {
		return Digest{}, fmt.Errorf("pushing to %s: %w: %w", ref, ErrBadBundle, err)
	}
	img, err := newArtifact(bundle, b.Manifest.Revision, o)
	if err != nil {
		return Digest{}, fmt.Errorf("pushing to %s: %w", ref, err)
	}
	h, err := img.Digest()
	if err != nil {
		return Digest{}, fmt.Errorf("pushing to %s: %w", ref, err)
	}
	if want, ok := r.digest(); ok && want.hash != h {
		return Digest{}, fmt.Errorf("pushing to %s: %w: the bundle's manifest is %s", ref, ErrDigestMismatch, h)
	}
	if r.layout != "" {
		if err := pushLayout(r, img, h); err != nil {
			return Digest{}, fmt.Errorf("pushing to %s: %w", ref, err)
		}
		return Digest{layout: r.layout, hash: h}, nil
	}
	ro, err := o.remote(ctx)
	if err != nil {
		return Digest{}, fmt.Errorf("pushing to %s: %w", ref, err)
	}
	if err := remote.Write(r.name, img, ro...); err != nil {
		return Digest{}, fmt.Errorf("pushing to %s: %w", ref, o.registryError(err))
	}
	return registryDigest(r, h)
}

// Resolve turns ref into a digest: a tag is looked up once (in the registry,
// or in a layout's index.json), and the manifest it names is checked to be a
// bundle artifact; a reference that already names a digest is returned as
// it is, without a request. Use it in push and pin, never when loading.
func Resolve(ctx context.Context, ref string, opts ...Option) (Digest, error) {
	o := makeOptions(opts)
	r, err := parse(ref, o)
	if err != nil {
		return Digest{}, fmt.Errorf("resolving: %w", err)
	}
	if d, ok := r.digest(); ok {
		return d, nil
	}
	if r.layout != "" {
		d, err := resolveLayout(r, o)
		if err != nil {
			return Digest{}, fmt.Errorf("resolving %s: %w", ref, err)
		}
		return d, nil
	}
	ro, err := o.remote(ctx)
	if err != nil {
		return Digest{}, fmt.Errorf("resolving %s: %w", ref, err)
	}
	desc, err := remote.Get(r.name, ro...)
	if err != nil {
		return Digest{}, fmt.Errorf("resolving %s: %w", ref, o.registryError(err))
	}
	// go-containerregistry computed desc.Digest from the bytes it read.
	if _, err := checkManifest(desc.Manifest, o.maxSize); err != nil {
		return Digest{}, fmt.Errorf("resolving %s: %w", ref, err)
	}
	return registryDigest(r, desc.Digest)
}

func registryDigest(r reference, h v1.Hash) (Digest, error) {
	var nopts []name.Option
	if r.insec {
		nopts = append(nopts, name.Insecure)
	}
	nd, err := name.NewDigest(r.name.Context().Name()+"@"+h.String(), nopts...)
	if err != nil {
		return Digest{}, fmt.Errorf("%w: %v", ErrBadReference, err)
	}
	return Digest{repo: nd, hash: h}, nil
}

// registryError wraps go-containerregistry's errors with this package's
// sentinels and says what to do next.
func (o *options) registryError(err error) error {
	err = o.mark(err)
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	switch te.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%w (set %s and %s, or docker login): %w", ErrUnauthorized, EnvUsername, EnvPassword, err)
	}
	return err
}
