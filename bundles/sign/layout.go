package sign

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore/pkg/signature"
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
	maxLayoutSignatures   = 256
	maxLayoutPayloadSize  = 64 << 10
	maxLayoutManifestSize = 1 << 20
	maxLayoutIndexSize    = 4 << 20
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
	if _, err := readBlob(p, h, maxLayoutManifestSize); err != nil {
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
	if verifySignatures(ctx, what, h, existing, []signature.Verifier{sv}) == nil {
		return nil // this key signed it already
	}
	if len(existing) >= maxLayoutSignatures {
		return fmt.Errorf("signing %s: the layout holds %d signatures already", what, len(existing))
	}
	sig, err := newSignature(ctx, sv, d)
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
	return verifySignatures(ctx, what, h, list, verifiers)
}

// layoutSignatures reads the signatures the layout tags sha256-<hex>.sig
// for h (the last such manifest, as a tag moves); none when there is none.
// Every file it reads is bounded and must be a regular file; each blob must
// hash to its digest.
func layoutSignatures(p layout.Path, h v1.Hash) ([]oci.Signature, error) {
	raw, err := readLimited(filepath.Join(string(p), "index.json"), maxLayoutIndexSize)
	if err != nil {
		return nil, fmt.Errorf("reading the layout's index: %w", err)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(raw, &im); err != nil {
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
	raw, err = readBlob(p, found.Digest, maxLayoutManifestSize)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", tag, err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
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
		pl, err := readBlob(p, l.Digest, maxLayoutPayloadSize)
		if err != nil {
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

// readBlob reads the blob h of the layout p, at most max bytes, and checks
// that it hashes to h.
func readBlob(p layout.Path, h v1.Hash, max int64) ([]byte, error) {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return nil, fmt.Errorf("blob %s: not a sha256 digest", h)
	}
	b, err := readLimited(filepath.Join(string(p), "blobs", h.Algorithm, h.Hex), max)
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != h.Hex {
		return nil, fmt.Errorf("blob %s does not hash to its digest", h)
	}
	return b, nil
}

// readLimited reads the regular file path, refusing one larger than max
// bytes (or not a regular file: a link, a device).
func readLimited(path string, max int64) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}
