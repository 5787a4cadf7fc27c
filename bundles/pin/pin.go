// Package pin reads and writes pin files: the deployed state of the pipeline,
// kept in git and synced to the proxy's filesystem. A pin file names the one
// bundle the proxy runs, by digest, the public keys its signature must verify
// with, and the digests pinned before it, for rollback:
//
//	bundle: registry.example.com/acme/policies@sha256:…
//	publicKey: cosign.pub          # relative to the pin file, or a list: [a.pub, b.pub] (publicKeys: too)
//	history:                       # newest first, written by `toolgate pin`
//	  - digest: sha256:…
//	    pinnedAt: 2026-11-25T10:00:00Z
//
// history is the log of pins, newest first: its first entry is normally the
// current bundle. `toolgate pin` ([File.Pin]) adds an entry; `toolgate
// rollback` ([File.Rollback] then [File.Pin]) re-pins an earlier digest.
//
// A File is a plain value, not safe for concurrent mutation.
package pin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"gopkg.in/yaml.v3"

	"github.com/toolgate/toolgate/internal/statedir"
)

// MaxHistory is how many entries [File.Pin] keeps in history; older ones are
// dropped (git still has them).
const MaxHistory = 50

// Errors of this package, wrapped with the file and value; test for them with
// [errors.Is].
var (
	// ErrNotDigest: bundle names a tag (or nothing), not REPO@sha256:….
	ErrNotDigest = errors.New("bundle is not pinned by digest")
	// ErrNoHistory: rollback found no earlier digest in history.
	ErrNoHistory = errors.New("no earlier digest in history")
	// ErrNotInHistory: rollback --to names a digest that history does not hold.
	ErrNotInHistory = errors.New("digest not in history")
)

// File is a pin file. The zero value is an empty pin file: no bundle, no keys,
// no history; it is valid only once [File.Pin] and a key have filled it.
type File struct {
	// Bundle is the pinned bundle, REPO@sha256:<hex>. Required.
	Bundle string `yaml:"bundle"`
	// PublicKey is one cosign public key file, relative to the pin file's
	// folder unless absolute. Exactly one of PublicKey and PublicKeys is set.
	PublicKey string `yaml:"publicKey,omitempty"`
	// PublicKeys lists several keys (key rotation: any listed key may sign).
	PublicKeys []string `yaml:"publicKeys,omitempty"`
	// History is the log of pins, newest first, at most MaxHistory long.
	History []Entry `yaml:"history,omitempty"`

	dir string    // folder of the file read or written: KeyPaths are relative to it
	doc yaml.Node // the document read, to keep the user's comments on Write
}

// Entry is one pin in the history.
type Entry struct {
	// Digest is sha256:<hex>, in the repository of the file's bundle; or
	// REPO@sha256:<hex> when it was pinned from another repository.
	Digest string `yaml:"digest"`
	// PinnedAt is when it was pinned, RFC 3339 in UTC; zero (omitted) when
	// unknown, as for a bundle that was pinned by hand.
	PinnedAt time.Time `yaml:"pinnedAt,omitempty"`
}

// New returns an empty pin file to be written at path: relative key paths
// added to it are relative to path's folder, as when it is read.
func New(path string) *File { return &File{dir: filepath.Dir(path)} }

// Read reads and validates the pin file at path. Relative key paths are then
// resolved against path's folder by [File.KeyPaths].
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading pin file: %w", err)
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("pin file %s: %w", path, err)
	}
	f.dir = filepath.Dir(path)
	return f, nil
}

// Parse parses and validates a pin file's contents. Unknown fields are refused
// (a misspelt publicKey must not silently drop a key).
func Parse(data []byte) (*File, error) {
	f := &File{}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty; want at least bundle: and publicKey:")
	}
	if err := yaml.Unmarshal(data, &f.doc); err != nil {
		return nil, fmt.Errorf("parsing: %w", err)
	}
	if m := mapping(&f.doc); m != nil {
		// publicKey: may hold a list of keys too (architecture.md: "or a
		// keys list"): read it as publicKeys:.
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "publicKey" && m.Content[i+1].Kind == yaml.SequenceNode {
				m.Content[i].Value = "publicKeys"
				var err error
				if data, err = yaml.Marshal(&f.doc); err != nil {
					return nil, fmt.Errorf("parsing: %w", err)
				}
				break
			}
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(f); err != nil {
		return nil, fmt.Errorf("parsing: %w", err)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// Validate returns every problem of f, joined; nil when f is usable.
func (f *File) Validate() error {
	var errs []error
	if _, err := f.Digest(); err != nil {
		errs = append(errs, err)
	}
	switch {
	case f.PublicKey == "" && len(f.PublicKeys) == 0:
		errs = append(errs, errors.New("no public key: set publicKey: FILE (or publicKeys: [A, B])"))
	case f.PublicKey != "" && len(f.PublicKeys) > 0:
		errs = append(errs, errors.New("both publicKey and publicKeys are set: keep one"))
	}
	for i, k := range f.PublicKeys {
		if strings.TrimSpace(k) == "" {
			errs = append(errs, fmt.Errorf("publicKeys[%d] is empty", i))
		}
	}
	for i, e := range f.History {
		if _, err := parseEntry(e.Digest); err != nil {
			errs = append(errs, fmt.Errorf("history[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// Digest returns the pinned bundle as a digest reference.
func (f *File) Digest() (name.Digest, error) {
	if f.Bundle == "" {
		return name.Digest{}, fmt.Errorf("%w: bundle: is empty; run `toolgate pin REF@DIGEST` to pin one", ErrNotDigest)
	}
	d, err := name.NewDigest(f.Bundle)
	if err != nil {
		if t, terr := name.NewTag(f.Bundle); terr == nil && !strings.Contains(f.Bundle, "@") {
			return name.Digest{}, fmt.Errorf("%w: bundle: %q is a tag, which can move; pin a digest: write %s@sha256:<digest> there (toolgate push prints it)",
				ErrNotDigest, f.Bundle, t.Context().Name())
		}
		return name.Digest{}, fmt.Errorf("%w: bundle: %q: %v; want REPO@sha256:<hex> (run `toolgate pin REF@DIGEST`)", ErrNotDigest, f.Bundle, err)
	}
	return d, nil
}

// KeyPaths returns the public key files, relative paths resolved against the
// folder of the pin file (as read by [Read] or last written by [File.Write]).
func (f *File) KeyPaths() []string {
	keys := f.PublicKeys
	if f.PublicKey != "" {
		keys = []string{f.PublicKey}
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if !filepath.IsAbs(k) {
			k = filepath.Join(f.dir, k)
		}
		out = append(out, k)
	}
	return out
}

// Pin makes d the pinned bundle and records it at the top of history with now
// (in UTC, to the second). Pinning the digest already on top changes nothing
// in history. A current bundle missing from history (pinned by hand) is
// recorded first, without a time. History keeps the newest MaxHistory entries.
// Pin does not verify d: the caller verifies its signature first.
func (f *File) Pin(d name.Digest, now time.Time) {
	if cur, err := f.Digest(); err == nil {
		curEntry := cur.DigestStr()
		if len(f.History) == 0 || !sameDigest(f.History[0].Digest, cur) {
			f.History = append([]Entry{{Digest: curEntry}}, f.History...)
		}
		if cur.Context().Name() != d.Context().Name() {
			// The repository moves: qualify the entries that relied on the old one.
			for i, e := range f.History {
				if !strings.Contains(e.Digest, "@") {
					f.History[i].Digest = cur.Context().Name() + "@" + e.Digest
				}
			}
		}
	}
	f.Bundle = d.String()
	if len(f.History) == 0 || !sameDigest(f.History[0].Digest, d) {
		f.History = append([]Entry{{Digest: d.DigestStr(), PinnedAt: now.UTC().Truncate(time.Second)}}, f.History...)
	}
	if len(f.History) > MaxHistory {
		f.History = f.History[:MaxHistory]
	}
}

// Rollback returns the digest to roll back to, without changing f: with to
// empty, the newest digest in history other than the current bundle; else
// to (sha256:<hex> or REPO@sha256:<hex>), which history must hold. The caller
// verifies it and then calls [File.Pin].
func (f *File) Rollback(to string) (name.Digest, error) {
	cur, err := f.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	if to == "" {
		for _, e := range f.History {
			d, err := entryDigest(e.Digest, cur.Context().Name())
			if err != nil {
				return name.Digest{}, fmt.Errorf("history: %w", err)
			}
			if d.DigestStr() != cur.DigestStr() {
				return d, nil
			}
		}
		return name.Digest{}, fmt.Errorf("rolling back %s: %w; pin another one with `toolgate pin REF@DIGEST`", cur, ErrNoHistory)
	}
	want, err := entryDigest(to, cur.Context().Name())
	if err != nil {
		return name.Digest{}, fmt.Errorf("rolling back to %q: %w", to, err)
	}
	for _, e := range f.History {
		if sameDigest(e.Digest, want) {
			return entryDigest(e.Digest, cur.Context().Name())
		}
	}
	return name.Digest{}, fmt.Errorf("rolling back to %s: %w (%d entries); pin it with `toolgate pin REF@DIGEST` instead",
		want.DigestStr(), ErrNotInHistory, len(f.History))
}

// Write writes f to path atomically (a temporary file in the same folder,
// then a rename), keeping the comments of the file it was read from. f must
// be valid.
func (f *File) Write(path string) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("writing pin file %s: %w", path, err)
	}
	out, err := f.marshal()
	if err != nil {
		return fmt.Errorf("writing pin file %s: %w", path, err)
	}
	if err := writeAtomic(path, out); err != nil {
		return fmt.Errorf("writing pin file %s: %w", path, err)
	}
	f.dir = filepath.Dir(path)
	return nil
}

// marshal encodes f, grafting the new values onto the document it was read
// from so that comments on keys and scalar values survive.
func (f *File) marshal() ([]byte, error) {
	var fresh yaml.Node
	if err := fresh.Encode(f); err != nil {
		return nil, err
	}
	root := &fresh
	if old := mapping(&f.doc); old != nil {
		merge(old, &fresh)
		root = &f.doc
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// mapping returns the top-level mapping of a parsed document, or nil.
func mapping(doc *yaml.Node) *yaml.Node {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	return n
}

// merge makes old's mapping hold fresh's keys and values, in old's order
// (new keys appended), keeping old key nodes and old scalar values' comments.
func merge(old, fresh *yaml.Node) {
	var content []*yaml.Node
	kept := map[string]bool{}
	for i := 0; i+1 < len(old.Content); i += 2 {
		k, v := old.Content[i], old.Content[i+1]
		nv := lookup(fresh, k.Value)
		if nv == nil {
			continue // removed
		}
		if nv.Kind == yaml.ScalarNode && v.Kind == yaml.ScalarNode {
			nv.HeadComment, nv.LineComment, nv.FootComment = v.HeadComment, v.LineComment, v.FootComment
		}
		content = append(content, k, nv)
		kept[k.Value] = true
	}
	for i := 0; i+1 < len(fresh.Content); i += 2 {
		if !kept[fresh.Content[i].Value] {
			content = append(content, fresh.Content[i], fresh.Content[i+1])
		}
	}
	old.Content = content
}

func lookup(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	return statedir.WriteFile(path, data, 0o644)
}

// parseEntry checks a history digest: sha256:<hex> or REPO@sha256:<hex>.
func parseEntry(s string) (name.Digest, error) {
	return entryDigest(s, "example.invalid/pin") // any valid repository: only the digest is checked
}

// entryDigest resolves a history digest against repo, the current bundle's
// repository.
func entryDigest(s string, repo string) (name.Digest, error) {
	if strings.Contains(s, "@") {
		d, err := name.NewDigest(s)
		if err != nil {
			return name.Digest{}, fmt.Errorf("digest %q: %w", s, err)
		}
		return d, nil
	}
	if !strings.HasPrefix(s, "sha256:") {
		return name.Digest{}, fmt.Errorf("digest %q: want sha256:<64 hex>", s)
	}
	d, err := name.NewDigest(repo + "@" + s)
	if err != nil {
		return name.Digest{}, fmt.Errorf("digest %q: want sha256:<64 hex>: %w", s, err)
	}
	return d, nil
}

// sameDigest reports whether the history entry s names d's digest.
func sameDigest(s string, d name.Digest) bool {
	e, err := parseEntry(s)
	return err == nil && e.DigestStr() == d.DigestStr()
}
