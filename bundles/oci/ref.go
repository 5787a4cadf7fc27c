package oci

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// LayoutPrefix starts a reference to an OCI image layout on disk:
// oci:DIR, oci:DIR:TAG or oci:DIR@sha256:….
const LayoutPrefix = "oci:"

// Digest names one bundle artifact by the digest of its manifest, in a
// registry repository or in an OCI image layout. It never holds a tag; make
// one with [ParseDigest], [Push] or [Resolve]. The zero value names nothing.
type Digest struct {
	repo   name.Digest // in a registry; zero for a layout
	layout string      // the layout folder; "" for a registry
	hash   v1.Hash
}

// ParseDigest parses "REPO@sha256:…" or "oci:DIR@sha256:…". A reference
// with a tag and no digest is refused with [ErrTag]. Pass the options the
// Digest will be used with: [WithInsecure] decides the registry's scheme.
func ParseDigest(s string, opts ...Option) (Digest, error) {
	r, err := parse(s, makeOptions(opts))
	if err != nil {
		return Digest{}, err
	}
	d, ok := r.digest()
	if !ok {
		return Digest{}, fmt.Errorf("%q: %w", s, ErrTag)
	}
	return d, nil
}

// String returns "REPO@sha256:…" (the repository fully qualified) or
// "oci:DIR@sha256:…": what `toolgate push` prints and a pin file holds.
func (d Digest) String() string {
	switch {
	case d.hash == v1.Hash{}:
		return ""
	case d.layout != "":
		return LayoutPrefix + d.layout + "@" + d.hash.String()
	default:
		return d.repo.Context().Name() + "@" + d.hash.String()
	}
}

// Hash returns the manifest digest.
func (d Digest) Hash() v1.Hash { return d.hash }

// Name returns the registry reference, for go-containerregistry and cosign;
// ok is false for a layout.
func (d Digest) Name() (ref name.Digest, ok bool) {
	return d.repo, d.layout == "" && d.hash != v1.Hash{}
}

// Layout returns the OCI image layout folder; ok is false for a registry.
func (d Digest) Layout() (dir string, ok bool) { return d.layout, d.layout != "" }

// IsZero reports whether d names nothing.
func (d Digest) IsZero() bool { return d.hash == v1.Hash{} }

// reference is any parsed reference: a registry one, or a layout with a tag
// or a digest.
type reference struct {
	name   name.Reference // registry
	layout string         // layout folder
	tag    string         // layout tag, when there is no hash
	hash   v1.Hash        // layout digest
	insec  bool
}

// digest returns the reference as a Digest when it names a digest.
func (r reference) digest() (Digest, bool) {
	if r.layout != "" {
		return Digest{layout: r.layout, hash: r.hash}, r.hash != v1.Hash{}
	}
	d, ok := r.name.(name.Digest)
	if !ok {
		return Digest{}, false
	}
	h, err := v1.NewHash(d.DigestStr())
	if err != nil {
		return Digest{}, false
	}
	return Digest{repo: d, hash: h}, true
}

func (r reference) String() string {
	switch {
	case r.layout == "":
		return r.name.String()
	case r.hash != v1.Hash{}:
		return LayoutPrefix + r.layout + "@" + r.hash.String()
	default:
		return LayoutPrefix + r.layout + ":" + r.tag
	}
}

var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

func parse(s string, o *options) (reference, error) {
	if rest, ok := strings.CutPrefix(s, LayoutPrefix); ok {
		return parseLayout(s, rest)
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return reference{}, fmt.Errorf("%w %q: %v", ErrBadReference, s, err)
	}
	insecure := o.insecure || isLoopback(ref.Context().RegistryStr())
	if insecure {
		if ref, err = name.ParseReference(s, name.Insecure); err != nil {
			return reference{}, fmt.Errorf("%w %q: %v", ErrBadReference, s, err)
		}
	}
	if d, ok := ref.(name.Digest); ok {
		if !strings.HasPrefix(d.DigestStr(), "sha256:") {
			return reference{}, fmt.Errorf("%w %q: only sha256 digests are used", ErrBadReference, s)
		}
	}
	return reference{name: ref, insec: insecure}, nil
}

// parseLayout parses DIR, DIR:TAG or DIR@sha256:… (after "oci:"). A colon
// followed by something with a "/" belongs to DIR.
func parseLayout(s, rest string) (reference, error) {
	r := reference{layout: rest, tag: "latest"}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		h, err := v1.NewHash(rest[at+1:])
		if err != nil || h.Algorithm != "sha256" {
			return reference{}, fmt.Errorf("%w %q: bad digest %q (want sha256:<64 hex digits>)", ErrBadReference, s, rest[at+1:])
		}
		r.layout, r.tag, r.hash = rest[:at], "", h
	} else if c := strings.LastIndex(rest, ":"); c >= 0 && !strings.Contains(rest[c+1:], "/") {
		if !tagRE.MatchString(rest[c+1:]) {
			return reference{}, fmt.Errorf("%w %q: bad tag %q", ErrBadReference, s, rest[c+1:])
		}
		r.layout, r.tag = rest[:c], rest[c+1:]
	}
	if r.layout == "" {
		return reference{}, fmt.Errorf("%w %q: no folder after %q", ErrBadReference, s, LayoutPrefix)
	}
	return r, nil
}
