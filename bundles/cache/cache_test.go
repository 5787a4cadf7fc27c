package cache_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/toolgate/toolgate/bundles/cache"
)

func hashOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

func open(t testing.TB) *cache.Cache {
	t.Helper()
	c, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPutGet(t *testing.T) {
	c := open(t)
	b := []byte("bundle bytes")
	d := hashOf(b)
	if _, err := c.Get(d); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get before Put: got %v, want ErrMiss", err)
	}
	if err := c.Put(d, b); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(d)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, b) {
		t.Fatalf("Get: got %q, want %q", got, b)
	}
	if _, err := os.Stat(filepath.Join(c.Dir(), "sha256", d.Hex)); err != nil {
		t.Fatalf("entry is not at DIR/sha256/<hex>: %v", err)
	}
}

func TestPutRefusesWrongDigest(t *testing.T) {
	c := open(t)
	d := hashOf([]byte("what was asked for"))
	err := c.Put(d, []byte("something else"))
	if !errors.Is(err, cache.ErrDigestMismatch) {
		t.Fatalf("got %v, want ErrDigestMismatch", err)
	}
	entries, _ := os.ReadDir(filepath.Join(c.Dir(), "sha256"))
	if len(entries) != 0 {
		t.Fatalf("Put wrote %d files for a mismatched digest", len(entries))
	}
}

func TestBadDigest(t *testing.T) {
	c := open(t)
	tests := []v1.Hash{
		{Algorithm: "sha256", Hex: "../../../etc/passwd"},
		{Algorithm: "sha512", Hex: hashOf(nil).Hex},
		{Algorithm: "sha256", Hex: "ABCDEF" + hashOf(nil).Hex[6:]},
		{},
	}
	for _, d := range tests {
		if err := c.Put(d, nil); !errors.Is(err, cache.ErrBadDigest) {
			t.Errorf("Put(%q): got %v, want ErrBadDigest", d, err)
		}
		if _, err := c.Get(d); !errors.Is(err, cache.ErrBadDigest) {
			t.Errorf("Get(%q): got %v, want ErrBadDigest", d, err)
		}
	}
}

func TestCorruptEntryIsDiscarded(t *testing.T) {
	c := open(t)
	b := []byte("the bundle")
	d := hashOf(b)
	if err := c.Put(d, b); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(c.Dir(), "sha256", d.Hex)
	if err := os.WriteFile(file, []byte("the bundlf"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := c.Get(d)
	if !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("Get of a corrupt entry: got %v, want ErrMiss", err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("corrupt entry was not deleted (stat: %v)", err)
	}
	// Fetched again, it is served again.
	if err := c.Put(d, b); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(d); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("after re-Put: got %q, %v", got, err)
	}
}

func TestConcurrentPutGet(t *testing.T) {
	c := open(t)
	var blobs [][]byte
	for i := range 8 {
		blobs = append(blobs, bytes.Repeat([]byte{byte(i)}, 64<<10+i))
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				b := blobs[(g+i)%len(blobs)]
				d := hashOf(b)
				if g%2 == 0 {
					if err := c.Put(d, b); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				got, err := c.Get(d)
				if errors.Is(err, cache.ErrMiss) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, b) {
					t.Errorf("Get(%s) returned other bytes", d)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, b := range blobs {
		if _, err := c.Get(hashOf(b)); err != nil {
			t.Errorf("after the writers: %v", err)
		}
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Join(c.Dir(), "sha256"))
	if len(entries) != len(blobs) {
		t.Errorf("got %d files, want %d", len(entries), len(blobs))
	}
}

// A 1 MiB bundle (larger than the 500-rule bundle) read back and re-hashed.
func BenchmarkGet(b *testing.B) {
	c := open(b)
	blob := bytes.Repeat([]byte("toolgate"), 128<<10)
	d := hashOf(blob)
	if err := c.Put(d, blob); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(blob)))
	for b.Loop() {
		if _, err := c.Get(d); err != nil {
			b.Fatal(err)
		}
	}
}

func Example() {
	dir, _ := os.MkdirTemp("", "toolgate-cache")
	defer os.RemoveAll(dir)
	c, err := cache.Open(dir)
	if err != nil {
		panic(err)
	}
	b := []byte("bundle bytes")
	d := hashOf(b)
	if err := c.Put(d, b); err != nil {
		panic(err)
	}
	got, err := c.Get(d)
	fmt.Println(string(got), err)
	// Output: bundle bytes <nil>
}
