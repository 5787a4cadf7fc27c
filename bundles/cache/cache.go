// Package cache is the local, digest-addressed store of what the proxy
// pulled: bundle layers and the OCI manifests that name them, each kept under
// its sha256 (DIR/sha256/<hex>). It sits between the registry and the runtime
// in the pipeline: a bundle pinned earlier loads from here when the registry
// is down, which is what makes rollback work offline.
//
// Nothing read from disk is trusted: [Cache.Get] re-checks the sha256 on
// every read, and a corrupt entry is deleted and reported as a miss, so the
// caller fetches it again.
package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Errors returned by this package; each is wrapped with the detail.
var (
	// ErrMiss: the cache holds no intact entry for the digest (it was never
	// put there, or it was corrupt and has been deleted). Fetch it again.
	ErrMiss = errors.New("not in the cache")
	// ErrDigestMismatch: [Cache.Put] was given bytes whose sha256 is not the
	// digest they were put under; nothing was written.
	ErrDigestMismatch = errors.New("content does not match its digest")
	// ErrBadDigest: the digest is not "sha256:" and 64 lowercase hex digits.
	ErrBadDigest = errors.New("not a sha256 digest")
)

// Cache is a folder of blobs addressed by sha256. It is safe for concurrent
// use by many goroutines, and entries are written atomically (temporary file,
// then rename), so several processes may share a folder. There is nothing to
// close.
type Cache struct {
	dir string // DIR/sha256

	// mu makes the delete of a corrupt entry see the latest write: Put holds
	// it shared around its rename, Get holds it exclusively to re-check and
	// delete.
	mu sync.RWMutex
}

// Open returns the cache kept in dir, creating dir/sha256 (mode 0700) if
// needed.
func Open(dir string) (*Cache, error) {
	if dir == "" {
		return nil, errors.New("opening cache: no folder given")
	}
	blobs := filepath.Join(dir, "sha256")
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		return nil, fmt.Errorf("opening cache %s: %w", dir, err)
	}
	return &Cache{dir: blobs}, nil
}

// Dir returns the folder the cache was opened on.
func (c *Cache) Dir() string { return filepath.Dir(c.dir) }

// Put stores b under d after checking that d is b's sha256; otherwise it
// returns ErrDigestMismatch and writes nothing. Putting an entry that is
// already there rewrites it (same bytes).
func (c *Cache) Put(d v1.Hash, b []byte) error {
	file, err := c.path(d)
	if err != nil {
		return fmt.Errorf("caching %s: %w", d, err)
	}
	if got := sha256Hex(b); got != d.Hex {
		return fmt.Errorf("caching %s: %w: the bytes hash to sha256:%s", d, ErrDigestMismatch, got)
	}
	tmp, err := os.CreateTemp(c.dir, ".tmp-"+d.Hex[:12]+"-*")
	if err != nil {
		return fmt.Errorf("caching %s: %w", d, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("caching %s: %w", d, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("caching %s: %w", d, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("caching %s: %w", d, err)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("caching %s: %w", d, err)
	}
	return nil
}

// Get returns the bytes stored under d after checking their sha256. It
// returns an error wrapping ErrMiss when there is no entry, and also when
// the entry is corrupt, in which case the entry is deleted first.
func (c *Cache) Get(d v1.Hash) ([]byte, error) {
	file, err := c.path(d)
	if err != nil {
		return nil, fmt.Errorf("reading %s from the cache: %w", d, err)
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", d, ErrMiss)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s from the cache: %w", d, err)
	}
	if sha256Hex(b) == d.Hex {
		return b, nil
	}
	// Corrupt. Re-read under the lock so that an intact copy a concurrent
	// Put has just renamed into place is kept, not deleted.
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, err := os.ReadFile(file); err == nil && sha256Hex(b) == d.Hex {
		return b, nil
	}
	if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (the entry is corrupt and could not be deleted: %v)", d, ErrMiss, err)
	}
	return nil, fmt.Errorf("%s: %w (a corrupt entry was deleted)", d, ErrMiss)
}

// path returns the entry's file, refusing anything but a sha256 digest so
// that a digest can never name a path outside the cache.
func (c *Cache) path(d v1.Hash) (string, error) {
	if d.Algorithm != "sha256" || len(d.Hex) != 64 {
		return "", fmt.Errorf("%w: %q", ErrBadDigest, d.String())
	}
	for _, r := range d.Hex {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return "", fmt.Errorf("%w: %q", ErrBadDigest, d.String())
		}
	}
	return filepath.Join(c.dir, d.Hex), nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
