package sign

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// Bundles in an OCI image layout on disk (oci:DIR) are signed as in a
// registry: the same simple-signing payload and signature layers, in an
// image the layout's index.json tags sha256-<hex>.sig, next to the bundle's
// manifest. A layout has no repository, so the payload names
// layoutRepository; what verification checks is the digest it names.

// layoutRepository is the repository a layout signature's payload names.
const layoutRepository = "toolgate.local/oci-layout"

// refNameAnnotation tags a manifest in index.json (OCI image spec).
const refNameAnnotation = "org.opencontainers.image.ref.name"

// Bounds on what a layout's signature image may hold: how many signatures,
// and how large each payload.
const (
	maxLayoutSignatures  = 256
	maxLayoutPayloadSize = 64 << 10
)

// signatureTag is where the signatures of h live: cosign's sha256-<hex>.sig.
func signatureTag(h v1.Hash) string { return h.Algorithm + "-" + h.Hex + ".sig" }

// SignLayout signs the manifest h of the OCI image layout in dir with the
// cosign private key privPEM (decrypted with password), keeping the
// signatures already there; a key that already signed h adds nothing. The
// manifest must be in the layout.
func SignLayout(ctx context.Context, dir string, h v1.Hash, privPEM, password []byte) error {
	what := "oci:" + dir + "@" + h.String()
	sv, err := loadPrivateKey(privPEM, password)
	if err != nil {
		return fmt.Errorf("signing %s: %w", what, err)
	}
	p := layout.Path(dir)
	if _, err := p.Image(h); err != nil {
		return fmt.Errorf("signing %s: manifest not found in the layout; push it first: %w", what, err)
	}
	existing, err := layoutSignatures(p, h)
	if err != nil {
		return fmt.Errorf("signing %s: %w", what, err)
	}
	d, err := name.NewDigest(layoutRepository + "@" + h.String())
	if err != nil {
		return fmt.Errorf("signing %s: %w", what, err)
	}
	if verifySignatures(ctx, d, h, existing, []signature.Verifier{sv}) == nil {
		return nil // this key signed it already
	}
	if len(existing) >= maxLayoutSignatures {
		return fmt.Errorf("signing %s: the layout holds %d signatures already", what, len(existing))
	}
	pl, err := payload.Cosign{Image: d}.MarshalJSON()
	if err != nil {
		return fmt.Errorf("signing %s: payload: %w", what, err)
	}
	raw, err := sv.SignMessage(bytes.NewReader(pl), options.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("signing %s: %w", what, err)
	}
	sig, err := static.NewSignature(pl, base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		return fmt.Errorf("signing %s: %w", what, err)
	}
	sigs, err := mutate.AppendSignatures(empty.Signatures(), false, append(existing, sig)...)
	if err != nil {
		return fmt.Errorf("signing %s: %w", what, err)
	}
	tag := signatureTag(h)
	if err := p.ReplaceImage(sigs, match.Annotation(refNameAnnotation, tag), layout.WithAnnotations(map[string]string{refNameAnnotation: tag})); err != nil {
		return fmt.Errorf("signing %s: writing the signature: %w", what, err)
	}
	return nil
}

// VerifyLayout is [Verify] for the manifest h of the OCI image layout in
// dir: it succeeds when a signature at the layout's sha256-<hex>.sig tag was
// made by one of pubKeys over a payload naming h, and returns an error
// wrapping [ErrNoSignature], [ErrUntrusted] or [ErrWrongDigest] otherwise.
func VerifyLayout(ctx context.Context, dir string, h v1.Hash, pubKeys [][]byte) error {
	what := "oci:" + dir + "@" + h.String()
	verifiers, err := loadVerifiers(pubKeys)
	if err != nil {
		return fmt.Errorf("verifying %s: %w", what, err)
	}
	list, err := layoutSignatures(layout.Path(dir), h)
	if err != nil {
		return fmt.Errorf("verifying %s: %w", what, err)
	}
	if len(list) == 0 {
		return fmt.Errorf("verifying %s: %w at its %s tag; sign it with `toolgate sign %s --key KEY`", what, ErrNoSignature, signatureTag(h), what)
	}
	d, err := name.NewDigest(layoutRepository + "@" + h.String())
	if err != nil {
		return err
	}
	return verifySignatures(ctx, d, h, list, verifiers)
}

// layoutSignatures reads the signatures the layout tags sha256-<hex>.sig
// for h (the last such manifest, as a tag moves); none when there is none.
func layoutSignatures(p layout.Path, h v1.Hash) ([]oci.Signature, error) {
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("reading the layout's index: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the layout's index: %w", err)
	}
	tag := signatureTag(h)
	var found *v1.Descriptor
	for i := range im.Manifests {
		if im.Manifests[i].Annotations[refNameAnnotation] == tag {
			found = &im.Manifests[i]
		}
	}
	if found == nil {
		return nil, nil
	}
	img, err := p.Image(found.Digest)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", tag, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", tag, err)
	}
	if len(m.Layers) > maxLayoutSignatures {
		return nil, fmt.Errorf("%s holds %d signatures, more than %d", tag, len(m.Layers), maxLayoutSignatures)
	}
	var out []oci.Signature
	for _, l := range m.Layers {
		b64 := l.Annotations[static.SignatureAnnotationKey]
		if b64 == "" || l.Size > maxLayoutPayloadSize {
			continue // not a signature this reads: another may verify
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			continue
		}
		rc, err := layer.Compressed()
		if err != nil {
			continue
		}
		pl, err := io.ReadAll(io.LimitReader(rc, maxLayoutPayloadSize+1))
		rc.Close()
		if err != nil || len(pl) > maxLayoutPayloadSize {
			continue
		}
		sig, err := static.NewSignature(pl, b64)
		if err != nil {
			continue
		}
		out = append(out, sig)
	}
	return out, nil
}
