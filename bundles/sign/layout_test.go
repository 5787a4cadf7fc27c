package sign

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// TestLayoutLimits: a layout's index and signature manifest are read up to
// their limits, from regular files, and refused past them.
func TestLayoutLimits(t *testing.T) {
	dir := t.TempDir()
	h, _ := v1.NewHash("sha256:" + strings.Repeat("a", 64))
	big := make([]byte, maxLayoutIndexSize+1)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := layoutSignatures(layout.Path(dir), h); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("index.json of %d bytes: %v, want refused as too large", len(big), err)
	}
	os.Remove(filepath.Join(dir, "index.json"))
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "index.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := layoutSignatures(layout.Path(dir), h); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("index.json linked to /dev/zero: %v, want refused", err)
	}
	// A blob that does not hash to its digest.
	os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", h.Hex), []byte("{}"), 0o644)
	if _, err := readBlob(layout.Path(dir), h, maxLayoutManifestSize); err == nil || !strings.Contains(err.Error(), "does not hash") {
		t.Errorf("a blob that does not hash to its digest: %v", err)
	}
}
