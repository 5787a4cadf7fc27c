package oci

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/toolgate/toolgate/bundles"
)

// Cache is where [Pull] keeps what it has checked ([WithCache]); the
// bundles/cache package implements it. Get returns an error for anything it
// does not hold intact.
type Cache interface {
	Get(v1.Hash) ([]byte, error)
	Put(v1.Hash, []byte) error
}

// Pull fetches the bundle d names and returns its bytes once all of these
// hold, in this order; the first that does not is the error:
//
//   - the manifest fetched by digest hashes to d (else [ErrDigestMismatch]);
//   - it is an OCI image manifest with the config media type, exactly one
//     layer, of the layer media type ([ErrBadManifest]), and the layer is at
//     most [WithMaxSize] bytes ([ErrTooLarge]) — checked before the download;
//   - the layer downloaded (never more than its size) hashes to the digest
//     in the manifest ([ErrDigestMismatch]);
//   - bundles.ReadBytes accepts it ([ErrBadBundle]: gzip bombs, unsafe tar
//     entries, …).
//
// With [WithCache], Pull first looks in the cache for d and the layer it
// names; a cached pair passes the same checks (the manifest and layer are
// re-hashed) and then needs no registry. Only a pull that passed every check
// is cached. Signatures are not this package's concern: verify them (by
// digest) before Pull when an unsigned bundle must not be cached either.
func Pull(ctx context.Context, d Digest, opts ...Option) ([]byte, error) {
	o := makeOptions(opts)
	if d.IsZero() {
		return nil, fmt.Errorf("pulling: %w: no digest given", ErrBadReference)
	}
	if o.cache != nil {
		if b, _, err := pullFrom(ctx, cacheSource{o.cache}, d.hash, o); err == nil {
			return b, nil
		}
	}
	var src source
	if d.layout != "" {
		src = layoutSource(d.layout)
	} else {
		repo := d.repo.Context()
		if o.insecure {
			r, err := name.NewRepository(repo.Name(), name.Insecure)
			if err != nil {
				return nil, fmt.Errorf("pulling %s: %w: %v", d, ErrBadReference, err)
			}
			repo = r
		}
		rs, err := newRegistrySource(ctx, repo, o)
		if err != nil {
			return nil, fmt.Errorf("pulling %s: %w", d, o.registryError(err))
		}
		src = rs
	}
	b, m, err := pullFrom(ctx, src, d.hash, o)
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", d, err)
	}
	if o.cache != nil {
		// The bundle was pulled and checked; a cache that cannot take it only
		// means the next Pull fetches it again.
		if err := o.cache.Put(m.Layers[0].Digest, b); err == nil {
			_ = o.cache.Put(d.hash, m.raw)
		}
	}
	return b, nil
}

type checkedManifest struct {
	*v1.Manifest
	raw []byte
}

// pullFrom runs the checks of Pull against one source.
func pullFrom(ctx context.Context, src source, h v1.Hash, o *options) ([]byte, checkedManifest, error) {
	raw, err := src.manifest(ctx, h)
	if err != nil {
		return nil, checkedManifest{}, err
	}
	if got := sha256Hash(raw); got != h {
		return nil, checkedManifest{}, fmt.Errorf("%w: the manifest served for %s hashes to %s", ErrDigestMismatch, h, got)
	}
	m, err := checkManifest(raw, o.maxSize)
	if err != nil {
		return nil, checkedManifest{}, err
	}
	layer := m.Layers[0]
	rc, err := src.blob(ctx, layer.Digest, layer.Size)
	if err != nil {
		return nil, checkedManifest{}, fmt.Errorf("fetching layer %s: %w", layer.Digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, layer.Size+1))
	if err != nil {
		return nil, checkedManifest{}, fmt.Errorf("fetching layer %s: %w", layer.Digest, err)
	}
	if int64(len(b)) != layer.Size {
		return nil, checkedManifest{}, fmt.Errorf("%w: layer %s is %d bytes or more, the manifest says %d", ErrDigestMismatch, layer.Digest, len(b), layer.Size)
	}
	if got := sha256Hash(b); got != layer.Digest {
		return nil, checkedManifest{}, fmt.Errorf("%w: layer %s hashes to %s", ErrDigestMismatch, layer.Digest, got)
	}
	if _, err := bundles.ReadBytes(b, bundles.Limits{MaxCompressed: o.maxSize}); err != nil {
		return nil, checkedManifest{}, fmt.Errorf("%w: %w", ErrBadBundle, err)
	}
	return b, checkedManifest{m, raw}, nil
}

// source serves manifests and blobs by digest; nothing it returns is trusted.
type source interface {
	// manifest returns at most maxManifestSize bytes, or ErrTooLarge.
	manifest(ctx context.Context, h v1.Hash) ([]byte, error)
	// blob returns the blob's content; the caller reads at most size+1 bytes.
	blob(ctx context.Context, h v1.Hash, size int64) (io.ReadCloser, error)
}

type cacheSource struct{ c Cache }

func (s cacheSource) manifest(_ context.Context, h v1.Hash) ([]byte, error) { return s.c.Get(h) }

func (s cacheSource) blob(_ context.Context, h v1.Hash, _ int64) (io.ReadCloser, error) {
	b, err := s.c.Get(h)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// registrySource fetches from a registry over go-containerregistry's
// authenticating transport. It makes its own two GETs rather than use
// remote.Get and remote.Layer so that every limit and every refusal is this
// package's, with its sentinel errors.
type registrySource struct {
	client *http.Client
	repo   name.Repository
	o      *options
}

func newRegistrySource(ctx context.Context, repo name.Repository, o *options) (*registrySource, error) {
	rt, err := o.roundTripper()
	if err != nil {
		return nil, err
	}
	auth, err := authn.Resolve(ctx, o.keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("finding credentials for %s: %w", repo.RegistryStr(), err)
	}
	tr, err := transport.NewWithContext(ctx, repo.Registry, auth, rt, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	return &registrySource{client: &http.Client{Transport: tr}, repo: repo, o: o}, nil
}

var manifestAccept = strings.Join([]string{
	string(types.OCIManifestSchema1),
	string(types.OCIImageIndex),
	string(types.DockerManifestSchema2),
	string(types.DockerManifestList),
}, ",")

func (s *registrySource) get(ctx context.Context, kind string, h v1.Hash, accept string) (*http.Response, error) {
	u := url.URL{
		Scheme: s.repo.Scheme(),
		Host:   s.repo.RegistryStr(),
		Path:   fmt.Sprintf("/v2/%s/%s/%s", s.repo.RepositoryStr(), kind, h),
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		resp.Body.Close()
		return nil, s.o.registryError(err)
	}
	return resp, nil
}

func (s *registrySource) manifest(ctx context.Context, h v1.Hash) ([]byte, error) {
	resp, err := s.get(ctx, "manifests", h, manifestAccept)
	if err != nil {
		return nil, fmt.Errorf("fetching the manifest: %w", err)
	}
	defer resp.Body.Close()
	return readManifest(resp.Body, resp.ContentLength)
}

func (s *registrySource) blob(ctx context.Context, h v1.Hash, size int64) (io.ReadCloser, error) {
	resp, err := s.get(ctx, "blobs", h, "")
	if err != nil {
		return nil, err
	}
	if resp.ContentLength >= 0 && resp.ContentLength != size {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: the registry sends %d bytes, the manifest says %d", ErrDigestMismatch, resp.ContentLength, size)
	}
	return resp.Body, nil
}

func readManifest(r io.Reader, length int64) ([]byte, error) {
	if length > maxManifestSize {
		return nil, fmt.Errorf("%w: the manifest is %d bytes, the limit is %d", ErrTooLarge, length, maxManifestSize)
	}
	b, err := io.ReadAll(io.LimitReader(r, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("fetching the manifest: %w", err)
	}
	if len(b) > maxManifestSize {
		return nil, fmt.Errorf("%w: the manifest is over %d bytes", ErrTooLarge, maxManifestSize)
	}
	return b, nil
}

var _ source = (*registrySource)(nil)
var _ source = layoutSource("")
var _ source = cacheSource{}
