// Package sign signs and verifies bundle manifests with cosign key pairs: the
// signature step between `toolgate push` (CI) and the proxy's pull (runtime).
//
// Signatures are cosign's own: a simple-signing payload naming the manifest
// digest, signed with an ECDSA P-256 key in cosign's encrypted key format and
// stored as a layer of the image tagged sha256-<hex>.sig in the bundle's
// repository. No transparency log is written or read (air-gapped by default).
// A manifest signed by [Sign] verifies with `cosign verify --key KEY
// --insecure-ignore-tlog=true`, and one signed by `cosign sign --key KEY
// --tlog-upload=false` verifies with [Verify].
//
// Every function here takes a [name.Digest], never a tag: what is signed and
// verified is the digest. All functions are safe for concurrent use.
package sign

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	cremote "github.com/sigstore/cosign/v2/pkg/cosign/remote"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// Errors returned by [Verify] and [Sign], wrapped with the digest and details;
// test for them with [errors.Is].
var (
	// ErrNoSignature: the digest has no signature at all (no sha256-<hex>.sig
	// tag, or an empty one). Sign it with `toolgate sign REF@DIGEST --key KEY`.
	ErrNoSignature = errors.New("no signature")
	// ErrUntrusted: the digest has signatures, but none verifies with any
	// listed public key (signed by another key, or a corrupt signature).
	ErrUntrusted = errors.New("not signed by any trusted key")
	// ErrWrongDigest: a listed key made the signature, but its payload names
	// another digest (a signature copied from another manifest).
	ErrWrongDigest = errors.New("signature is for a different digest")
	// ErrWrongPassword: the private key could not be decrypted with the
	// password given (COSIGN_PASSWORD for the command line).
	ErrWrongPassword = errors.New("wrong password for the private key")
)

// GenerateKeys returns a new ECDSA P-256 key pair in cosign's format: the
// private key PKCS #8, encrypted with password (scrypt + secretbox) in a PEM
// block "ENCRYPTED SIGSTORE PRIVATE KEY", and the public key as a PKIX PEM
// block, exactly what `cosign generate-key-pair` writes to cosign.key and
// cosign.pub. An empty password is allowed, as in cosign.
func GenerateKeys(password []byte) (privPEM, pubPEM []byte, err error) {
	kb, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return password, nil })
	if err != nil {
		return nil, nil, fmt.Errorf("generating key pair: %w", err)
	}
	return kb.PrivateBytes, kb.PublicBytes, nil
}

// Sign signs the manifest d with the cosign private key privPEM (decrypted with
// password) and adds the signature to the sha256-<hex>.sig tag of d's
// repository, keeping the signatures already there (signing twice with the
// same key adds nothing). It does what `cosign sign --key KEY
// --tlog-upload=false d` does. The manifest must exist in the registry.
//
// opts are go-containerregistry's remote options (authentication, transport);
// without any, credentials come from the default keychain, as in cosign.
func Sign(ctx context.Context, d name.Digest, privPEM, password []byte, opts ...remote.Option) error {
	sv, err := loadPrivateKey(privPEM, password)
	if err != nil {
		return fmt.Errorf("signing %s: %w", d, err)
	}
	ropts := remoteOptions(ctx, opts)

	se, err := ociremote.SignedEntity(d, ropts...)
	if err != nil {
		var nf *ociremote.EntityNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("signing %s: manifest not found; push it first: %w", d, err)
		}
		return fmt.Errorf("signing %s: reading manifest: %w", d, err)
	}

	sig, err := newSignature(ctx, sv, d)
	if err != nil {
		return fmt.Errorf("signing %s: %w", d, err)
	}
	signed, err := mutate.AttachSignatureToEntity(se, sig, mutate.WithDupeDetector(cremote.NewDupeDetector(sv)))
	if err != nil {
		return fmt.Errorf("signing %s: attaching signature: %w", d, err)
	}
	if err := ociremote.WriteSignatures(d.Repository, signed, ropts...); err != nil {
		return fmt.Errorf("signing %s: writing signature: %w", d, err)
	}
	return nil
}

// newSignature signs cosign's simple-signing payload naming d with sv.
func newSignature(ctx context.Context, sv signature.Signer, d name.Digest) (oci.Signature, error) {
	p, err := payload.Cosign{Image: d}.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	raw, err := sv.SignMessage(bytes.NewReader(p), options.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	return static.NewSignature(p, base64.StdEncoding.EncodeToString(raw))
}

// Verify succeeds when at least one signature in d's sha256-<hex>.sig tag was
// made by one of pubKeys (PEM public keys, as in cosign.pub; any listed key
// may sign, for key rotation) over a payload that names d itself. It checks
// what `cosign verify --key KEY --insecure-ignore-tlog=true d` checks.
//
// It returns an error wrapping [ErrNoSignature], [ErrWrongDigest] or
// [ErrUntrusted] when d is not verified, and another error when it could not
// tell (registry unreachable, unreadable key): either way, d is not to be
// trusted.
func Verify(ctx context.Context, d name.Digest, pubKeys [][]byte, opts ...remote.Option) error {
	verifiers, err := loadVerifiers(pubKeys)
	if err != nil {
		return fmt.Errorf("verifying %s: %w", d, err)
	}
	h, err := v1.NewHash(d.DigestStr())
	if err != nil {
		return fmt.Errorf("verifying %s: %w", d, err)
	}
	ropts := remoteOptions(ctx, opts)

	tag, err := ociremote.SignatureTag(d, ropts...)
	if err != nil {
		return fmt.Errorf("verifying %s: %w", d, err)
	}
	sigs, err := ociremote.Signatures(tag, ropts...)
	if err != nil {
		return fmt.Errorf("verifying %s: reading %s: %w", d, tag, err)
	}
	list, err := sigs.Get()
	if err != nil {
		return fmt.Errorf("verifying %s: reading %s: %w", d, tag, err)
	}
	if len(list) == 0 {
		return fmt.Errorf("verifying %s: %w at %s; sign it with `toolgate sign %s --key KEY`", d, ErrNoSignature, tag, d)
	}
	return verifySignatures(ctx, d.String(), h, list, verifiers)
}

// loadVerifiers reads PEM public keys (as in cosign.pub) into SHA-256
// verifiers.
func loadVerifiers(pubKeys [][]byte) ([]signature.Verifier, error) {
	if len(pubKeys) == 0 {
		return nil, errors.New("no public key given")
	}
	verifiers := make([]signature.Verifier, 0, len(pubKeys))
	for i, k := range pubKeys {
		// A PEM public key and a SHA-256 verifier, from sigstore directly:
		// cosign's pkg/signature would do the same but links every key
		// provider it knows (KMS, PKCS #11, GitHub, GitLab, Kubernetes),
		// whose package initialisation alone kept ~25 MiB of the binary
		// resident in every proxy.
		pub, err := cryptoutils.UnmarshalPEMToPublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("public key %d: %w", i+1, err)
		}
		v, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("public key %d: %w", i+1, err)
		}
		verifiers = append(verifiers, v)
	}
	return verifiers, nil
}

// verifySignatures checks each signature against each key with cosign's
// verification, then the payload's digest against h.
func verifySignatures(ctx context.Context, what string, h v1.Hash, list []oci.Signature, verifiers []signature.Verifier) error {
	var wrong, unreadable []string
	for _, s := range list {
		// Read the layer once, not once per key. An unreadable one is
		// skipped: another signature may still verify.
		s, err := static.Copy(s)
		if err != nil {
			unreadable = append(unreadable, err.Error())
			continue
		}
		for _, v := range verifiers {
			co := &cosign.CheckOpts{SigVerifier: v, IgnoreTlog: true, IgnoreSCT: true}
			if _, err := cosign.VerifyImageSignature(ctx, s, h, co); err != nil {
				continue
			}
			// Cryptographically good; now the claim must name d.
			if err := cosign.SimpleClaimVerifier(s, h, nil); err != nil {
				wrong = append(wrong, err.Error())
				continue
			}
			return nil
		}
	}
	if len(wrong) > 0 {
		return fmt.Errorf("verifying %s: %w (%s)", what, ErrWrongDigest, strings.Join(wrong, "; "))
	}
	msg := ""
	if len(unreadable) > 0 {
		msg = fmt.Sprintf(" (%d unreadable: %s)", len(unreadable), strings.Join(unreadable, "; "))
	}
	return fmt.Errorf("verifying %s: %w: %d signature(s), none verifies with the %d listed key(s)%s",
		what, ErrUntrusted, len(list), len(verifiers), msg)
}

// loadPrivateKey decrypts a cosign private key, telling a wrong password apart
// from a file that is not a cosign key.
func loadPrivateKey(privPEM, password []byte) (signature.SignerVerifier, error) {
	b, _ := pem.Decode(privPEM)
	if b == nil {
		return nil, errors.New("private key: not a PEM file")
	}
	if b.Type != cosign.SigstorePrivateKeyPemType && b.Type != cosign.CosignPrivateKeyPemType {
		return nil, fmt.Errorf("private key: PEM type %q is not a cosign private key (want %q; make one with `toolgate keygen`)",
			b.Type, cosign.SigstorePrivateKeyPemType)
	}
	sv, err := cosign.LoadPrivateKey(privPEM, password, nil)
	if err != nil {
		// cosign wraps the decryption failure as "decrypt: ...": the password
		// (or the key's ciphertext) is wrong.
		if strings.HasPrefix(err.Error(), "decrypt") {
			return nil, fmt.Errorf("%w (set COSIGN_PASSWORD to the key's password): %v", ErrWrongPassword, err)
		}
		return nil, fmt.Errorf("private key: %w", err)
	}
	return sv, nil
}

// remoteOptions turns go-containerregistry options into cosign's, bound to ctx.
// Given none, cosign's default (the default keychain) is kept.
func remoteOptions(ctx context.Context, opts []remote.Option) []ociremote.Option {
	if len(opts) == 0 {
		return []ociremote.Option{ociremote.WithMoreRemoteOptions(remote.WithContext(ctx))}
	}
	all := append([]remote.Option{remote.WithContext(ctx)}, opts...)
	return []ociremote.Option{ociremote.WithRemoteOptions(all...)}
}
