// Package oci publishes policy bundles as OCI artifacts and fetches them back
// by digest: the stage between CI (`toolgate push`, which resolves a tag to a
// digest once) and the proxy (which pulls, re-checks and caches by digest
// only). It is built on go-containerregistry.
//
// # The artifact
//
// One OCI image manifest (architecture.md, "OCI artifact and signature"):
//
//   - config: media type application/vnd.oci.image.config.v1+json, content {};
//   - exactly one layer, application/vnd.oci.image.layer.v1.tar+gzip, holding
//     the bundle's .tar.gz bytes as they are, titled bundle.tar.gz: the layout
//     OPA's OCI bundle downloader, `oras pull` and `crane blob` read;
//   - manifest annotations org.opencontainers.image.revision (the bundle's
//     revision), .source, .created and .title.
//
// Nothing in the artifact depends on when or where it was pushed (.created
// defaults to the Unix epoch), so pushing the same bundle twice gives the same
// digest.
//
// # References
//
// [Push] and [Resolve] take references in the usual registry forms
// (host:port/repo:tag, host/repo@sha256:…, a bare repo meaning its "latest"
// tag) and oci:DIR[:tag] or oci:DIR@sha256:… for an OCI image layout on disk,
// the default that needs no registry. [Pull] takes a [Digest], which never
// holds a tag: [ParseDigest] refuses tags with [ErrTag].
//
// # Registries
//
// Credentials are found the way docker and cosign find them (the
// ~/.docker/config.json of [authn.DefaultKeychain], and credential helpers),
// except that TOOLGATE_REGISTRY_USERNAME and TOOLGATE_REGISTRY_PASSWORD, when
// set, take precedence for every registry. Plain HTTP is used only for a
// loopback host (localhost, 127.0.0.0/8, ::1) or when [WithInsecure] asks for
// it; [WithCACert] adds a CA for TLS; every request has a deadline
// ([WithTimeout]). [RemoteOptions] hands the same transport and credentials to
// other go-containerregistry users, such as the signing package.
//
// Push, Pull and Resolve are safe for concurrent use, except pushes to one
// layout folder; nothing needs closing.
package oci

import "errors"

// Environment variables that, when set, give the registry credentials.
const (
	EnvUsername = "TOOLGATE_REGISTRY_USERNAME"
	EnvPassword = "TOOLGATE_REGISTRY_PASSWORD"
)

// Errors returned by this package; each is wrapped with the detail, so test
// for them with errors.Is.
var (
	// ErrBadReference: the reference cannot be parsed.
	ErrBadReference = errors.New("not a valid reference")
	// ErrTag: a tag was given where only a digest is accepted. Resolve the
	// tag once (toolgate push / pin) and use REPO@sha256:… from then on.
	ErrTag = errors.New("a tag is not accepted here, only a digest (REPO@sha256:…)")
	// ErrDigestMismatch: what the registry or layout served does not hash to
	// the digest asked for (a tampered layer, or a different manifest).
	ErrDigestMismatch = errors.New("content does not match its digest")
	// ErrBadManifest: the manifest is not a bundle artifact: not an OCI image
	// manifest, a config of another media type, not exactly one layer, or a
	// layer of another media type.
	ErrBadManifest = errors.New("manifest is not a toolgate bundle artifact")
	// ErrTooLarge: the manifest or the layer is over the size limit
	// ([WithMaxSize]; the layer size is checked before it is downloaded).
	ErrTooLarge = errors.New("artifact is over the size limit")
	// ErrBadBundle: the layer is not a valid bundle; the bundles package's
	// error (gzip bomb, unsafe tar entry, …) is wrapped as well.
	ErrBadBundle = errors.New("layer is not a valid bundle")
	// ErrNotFound: the registry or layout has no such manifest, blob or tag.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the credentials, or asked for
	// some and none were found.
	ErrUnauthorized = errors.New("registry refused the credentials")
	// ErrTimeout: a request to the registry got no complete answer within
	// the timeout ([WithTimeout]).
	ErrTimeout = errors.New("registry did not answer in time")
	// ErrCertificate: the registry's TLS certificate did not verify. For a
	// private CA, pass its certificate with [WithCACert].
	ErrCertificate = errors.New("registry certificate not trusted (a private CA is added with WithCACert)")
	// ErrInsecure: plain HTTP to a host that is not loopback, without
	// [WithInsecure].
	ErrInsecure = errors.New("plain HTTP refused")
)
