package oci

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types of the artifact (architecture.md, "OCI artifact and signature").
const (
	ManifestMediaType = types.OCIManifestSchema1 // application/vnd.oci.image.manifest.v1+json
	ConfigMediaType   = types.OCIConfigJSON      // application/vnd.oci.image.config.v1+json
	LayerMediaType    = types.OCILayer           // application/vnd.oci.image.layer.v1.tar+gzip
)

// Annotation keys Push writes.
const (
	AnnotationRevision = "org.opencontainers.image.revision"
	AnnotationSource   = "org.opencontainers.image.source"
	AnnotationCreated  = "org.opencontainers.image.created"
	AnnotationTitle    = "org.opencontainers.image.title"
	// AnnotationRefName carries the tag in an OCI image layout's index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

// LayerTitle is the layer's org.opencontainers.image.title: the file name
// `oras pull` writes the bundle to.
const LayerTitle = "bundle.tar.gz"

// config is the content of the config blob.
var config = []byte("{}")

// artifact is a bundle as an OCI image: the manifest bytes are built once,
// so its digest is known before anything is written.
type artifact struct {
	manifest []byte
	layer    v1.Layer
	config   v1.Layer
}

var _ partial.CompressedImageCore = (*artifact)(nil)

// newArtifact lays out bundle (already read and checked) as the artifact.
func newArtifact(bundle []byte, revision string, o *options) (v1.Image, error) {
	a := &artifact{
		layer:  static.NewLayer(bundle, LayerMediaType),
		config: static.NewLayer(config, ConfigMediaType),
	}
	ann := map[string]string{
		AnnotationRevision: revision,
		AnnotationCreated:  o.created.Format(time.RFC3339),
		AnnotationTitle:    o.title,
	}
	if o.source != "" {
		ann[AnnotationSource] = o.source
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     ManifestMediaType,
		Config:        v1.Descriptor{MediaType: ConfigMediaType, Size: int64(len(config)), Digest: sha256Hash(config)},
		Layers: []v1.Descriptor{{
			MediaType:   LayerMediaType,
			Size:        int64(len(bundle)),
			Digest:      sha256Hash(bundle),
			Annotations: map[string]string{AnnotationTitle: LayerTitle},
		}},
		Annotations: ann,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding the manifest: %w", err)
	}
	a.manifest = raw
	return partial.CompressedToImage(a)
}

func (a *artifact) RawManifest() ([]byte, error)        { return a.manifest, nil }
func (a *artifact) RawConfigFile() ([]byte, error)      { return config, nil }
func (a *artifact) MediaType() (types.MediaType, error) { return ManifestMediaType, nil }
func (a *artifact) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range []v1.Layer{a.layer, a.config} {
		if d, _ := l.Digest(); d == h {
			return l, nil
		}
	}
	return nil, fmt.Errorf("the artifact has no blob %s", h)
}

// checkManifest parses raw and checks that it describes a bundle artifact
// whose layer is at most maxSize bytes.
func checkManifest(raw []byte, maxSize int64) (*v1.Manifest, error) {
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: schemaVersion %d, want 2", ErrBadManifest, m.SchemaVersion)
	}
	if m.MediaType != ManifestMediaType {
		return nil, fmt.Errorf("%w: media type %q, want %q", ErrBadManifest, m.MediaType, ManifestMediaType)
	}
	if m.Config.MediaType != ConfigMediaType {
		return nil, fmt.Errorf("%w: config media type %q, want %q", ErrBadManifest, m.Config.MediaType, ConfigMediaType)
	}
	if len(m.Layers) != 1 {
		return nil, fmt.Errorf("%w: %d layers, want exactly 1", ErrBadManifest, len(m.Layers))
	}
	l := m.Layers[0]
	if l.MediaType != LayerMediaType {
		return nil, fmt.Errorf("%w: layer media type %q, want %q", ErrBadManifest, l.MediaType, LayerMediaType)
	}
	if l.Digest.Algorithm != "sha256" {
		return nil, fmt.Errorf("%w: layer digest %q is not sha256", ErrBadManifest, l.Digest)
	}
	if l.Size <= 0 {
		return nil, fmt.Errorf("%w: layer size %d", ErrBadManifest, l.Size)
	}
	if l.Size > maxSize {
		return nil, fmt.Errorf("%w: the layer is %d bytes, the limit is %d (oci.WithMaxSize raises it)", ErrTooLarge, l.Size, maxSize)
	}
	return m, nil
}

func sha256Hash(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}
