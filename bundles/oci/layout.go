package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
)

// pushLayout writes img into the layout r names, creating it if needed, and
// points the tag at it.
func pushLayout(r reference, img v1.Image, h v1.Hash) error {
	p, err := openLayout(r.layout, true)
	if err != nil {
		return err
	}
	if r.tag == "" {
		// By digest: add the image once, with no tag.
		return p.ReplaceImage(img, match.Digests(h))
	}
	return p.ReplaceImage(img, match.Annotation(AnnotationRefName, r.tag),
		layout.WithAnnotations(map[string]string{AnnotationRefName: r.tag}))
}

// openLayout opens the OCI image layout in dir. With create, a missing or
// empty folder becomes a new layout; a folder with other files is refused.
func openLayout(dir string, create bool) (layout.Path, error) {
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err == nil {
		return layout.Path(dir), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if !create {
		return "", fmt.Errorf("%w: %s is not an OCI image layout (no index.json)", ErrNotFound, dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if len(entries) > 0 {
		return "", fmt.Errorf("%s is neither empty nor an OCI image layout (no index.json); name a new folder", dir)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", fmt.Errorf("creating an OCI image layout in %s: %w", dir, err)
	}
	return p, nil
}

// resolveLayout finds the manifest the tag names in the layout's index.json
// (the last one, if several do) and checks it is a bundle artifact.
func resolveLayout(r reference, o *options) (Digest, error) {
	p, err := openLayout(r.layout, false)
	if err != nil {
		return Digest{}, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return Digest{}, fmt.Errorf("reading %s: %w", filepath.Join(r.layout, "index.json"), err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return Digest{}, fmt.Errorf("reading %s: %w", filepath.Join(r.layout, "index.json"), err)
	}
	var found *v1.Descriptor
	for i, desc := range im.Manifests {
		if desc.Annotations[AnnotationRefName] == r.tag {
			found = &im.Manifests[i]
		}
	}
	if found == nil {
		return Digest{}, fmt.Errorf("%w: no tag %q in the layout %s", ErrNotFound, r.tag, r.layout)
	}
	raw, err := layoutSource(r.layout).manifest(context.Background(), found.Digest)
	if err != nil {
		return Digest{}, err
	}
	if got := sha256Hash(raw); got != found.Digest {
		return Digest{}, fmt.Errorf("%w: blob %s hashes to %s", ErrDigestMismatch, found.Digest, got)
	}
	if _, err := checkManifest(raw, o.maxSize); err != nil {
		return Digest{}, err
	}
	return Digest{layout: r.layout, hash: found.Digest}, nil
}

// layoutSource reads blobs from an OCI image layout folder.
type layoutSource string

func (s layoutSource) open(h v1.Hash) (io.ReadCloser, error) {
	if _, err := openLayout(string(s), false); err != nil {
		return nil, err
	}
	rc, err := layout.Path(s).Blob(h)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: no blob %s in the layout %s", ErrNotFound, h, string(s))
	}
	if err != nil {
		return nil, err
	}
	return rc, nil
}

func (s layoutSource) manifest(_ context.Context, h v1.Hash) ([]byte, error) {
	rc, err := s.open(h)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return readManifest(rc, -1)
}

func (s layoutSource) blob(_ context.Context, h v1.Hash, _ int64) (io.ReadCloser, error) {
	return s.open(h)
}
