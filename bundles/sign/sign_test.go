package sign_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/toolgate/toolgate/bundles/sign"
)

// testRegistry starts go-containerregistry's in-memory registry and returns
// its repository base, host:port/test.
func testRegistry(t *testing.T) name.Repository {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := name.NewRepository(u.Host + "/test/policies")
	if err != nil {
		t.Fatal(err)
	}
	return repo
}

// pushRandom pushes a small random OCI image to repo and returns its digest.
func pushRandom(t *testing.T, repo name.Repository) name.Digest {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d := repo.Digest(h.String())
	if err := remote.Write(d, img); err != nil {
		t.Fatal(err)
	}
	return d
}

func keys(t *testing.T, password string) (priv, pub []byte) {
	t.Helper()
	priv, pub, err := sign.GenerateKeys([]byte(password))
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func TestGenerateKeysFormat(t *testing.T) {
	priv, pub := keys(t, "pw")
	for _, c := range []struct {
		pem  []byte
		want string
	}{
		{priv, "ENCRYPTED SIGSTORE PRIVATE KEY"},
		{pub, "PUBLIC KEY"},
	} {
		b, rest := pem.Decode(c.pem)
		if b == nil {
			t.Fatalf("not PEM: %q", c.pem)
		}
		if got := b.Type; got != c.want {
			t.Errorf("PEM type = %q, want %q", got, c.want)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			t.Errorf("trailing data after %s block", c.want)
		}
	}
}

func TestSignVerify(t *testing.T) {
	ctx := context.Background()
	repo := testRegistry(t)
	d := pushRandom(t, repo)
	other := pushRandom(t, repo)
	priv, pub := keys(t, "pw")
	_, otherPub := keys(t, "")

	if err := sign.Verify(ctx, d, [][]byte{pub}); !errors.Is(err, sign.ErrNoSignature) {
		t.Fatalf("Verify(unsigned) = %v, want ErrNoSignature", err)
	}
	if err := sign.Sign(ctx, d, priv, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		d    name.Digest
		keys [][]byte
		want error
	}{
		{"signed", d, [][]byte{pub}, nil},
		{"rotation: any listed key", d, [][]byte{otherPub, pub}, nil},
		{"unlisted key", d, [][]byte{otherPub}, sign.ErrUntrusted},
		{"other digest unsigned", other, [][]byte{pub}, sign.ErrNoSignature},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := sign.Verify(ctx, c.d, c.keys)
			if c.want == nil && err != nil {
				t.Fatalf("Verify = %v, want nil", err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}

func TestSignTwiceAddsOnce(t *testing.T) {
	ctx := context.Background()
	repo := testRegistry(t)
	d := pushRandom(t, repo)
	priv, pub := keys(t, "pw")
	priv2, pub2 := keys(t, "pw2")
	for range 2 {
		if err := sign.Sign(ctx, d, priv, []byte("pw")); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := sigLayers(t, d), 1; got != want {
		t.Fatalf("after signing twice with one key: %d signatures, want %d", got, want)
	}
	if err := sign.Sign(ctx, d, priv2, []byte("pw2")); err != nil {
		t.Fatal(err)
	}
	if got, want := sigLayers(t, d), 2; got != want {
		t.Fatalf("after a second key: %d signatures, want %d", got, want)
	}
	for _, k := range [][]byte{pub, pub2} {
		if err := sign.Verify(ctx, d, [][]byte{k}); err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
}

// sigLayers counts the signatures in d's .sig image.
func sigLayers(t *testing.T, d name.Digest) int {
	t.Helper()
	img, err := remote.Image(sigTag(t, d))
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return len(m.Layers)
}

func sigTag(t *testing.T, d name.Digest) name.Tag {
	t.Helper()
	h, err := v1.NewHash(d.DigestStr())
	if err != nil {
		t.Fatal(err)
	}
	return d.Repository.Tag(h.Algorithm + "-" + h.Hex + ".sig")
}

// A signature copied from another digest's .sig tag names that digest in its
// payload: the key is right, the claim is not.
func TestVerifyCopiedSignature(t *testing.T) {
	ctx := context.Background()
	repo := testRegistry(t)
	signed := pushRandom(t, repo)
	target := pushRandom(t, repo)
	priv, pub := keys(t, "pw")
	if err := sign.Sign(ctx, signed, priv, []byte("pw")); err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(sigTag(t, signed))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(sigTag(t, target), img); err != nil {
		t.Fatal(err)
	}
	err = sign.Verify(ctx, target, [][]byte{pub})
	if !errors.Is(err, sign.ErrWrongDigest) {
		t.Fatalf("Verify(copied signature) = %v, want ErrWrongDigest", err)
	}
	if !strings.Contains(err.Error(), signed.DigestStr()) {
		t.Errorf("error %q does not name the digest the signature is for", err)
	}
}

// rawManifest is a manifest to put as is.
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error) { return m, nil }

// A signature whose bytes do not match its payload (here: another digest's
// signature over this digest's payload) is not trusted.
func TestVerifyTamperedSignature(t *testing.T) {
	ctx := context.Background()
	repo := testRegistry(t)
	a, b := pushRandom(t, repo), pushRandom(t, repo)
	priv, pub := keys(t, "pw")
	for _, d := range []name.Digest{a, b} {
		if err := sign.Sign(ctx, d, priv, []byte("pw")); err != nil {
			t.Fatal(err)
		}
	}
	sigOf := func(d name.Digest) (raw []byte, sig string) {
		desc, err := remote.Get(sigTag(t, d))
		if err != nil {
			t.Fatal(err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			t.Fatal(err)
		}
		return desc.Manifest, m.Layers[0].Annotations["dev.cosignproject.cosign/signature"]
	}
	rawA, sigA := sigOf(a)
	_, sigB := sigOf(b)
	tampered := bytes.Replace(rawA, []byte(sigA), []byte(sigB), 1)
	if bytes.Equal(tampered, rawA) {
		t.Fatal("signature annotation not found")
	}
	if err := remote.Put(sigTag(t, a), rawManifest(tampered)); err != nil {
		t.Fatal(err)
	}
	if err := sign.Verify(ctx, a, [][]byte{pub}); !errors.Is(err, sign.ErrUntrusted) {
		t.Fatalf("Verify(tampered) = %v, want ErrUntrusted", err)
	}
}

func TestSignErrors(t *testing.T) {
	ctx := context.Background()
	repo := testRegistry(t)
	d := pushRandom(t, repo)
	priv, _ := keys(t, "right")
	missing := repo.Digest("sha256:" + strings.Repeat("ab", 32))

	for _, c := range []struct {
		name     string
		d        name.Digest
		priv     []byte
		password string
		is       error
		contains string
	}{
		{"wrong password", d, priv, "wrong", sign.ErrWrongPassword, "COSIGN_PASSWORD"},
		{"not PEM", d, []byte("hello"), "", nil, "not a PEM file"},
		{"public key as private", d, []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), "", nil, "not a cosign private key"},
		{"manifest missing", missing, priv, "right", nil, "push it first"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := sign.Sign(ctx, c.d, c.priv, []byte(c.password))
			if err == nil {
				t.Fatal("Sign succeeded, want an error")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("Sign = %v, want %v", err, c.is)
			}
			if !strings.Contains(err.Error(), c.contains) {
				t.Errorf("Sign = %q, want it to contain %q", err, c.contains)
			}
		})
	}
	if _, err := remote.Image(sigTag(t, d)); err == nil {
		t.Error("a failed Sign wrote a signature")
	}
}

func TestVerifyBadKeys(t *testing.T) {
	ctx := context.Background()
	repo := testRegistry(t)
	d := pushRandom(t, repo)
	if err := sign.Verify(ctx, d, nil); err == nil {
		t.Error("Verify with no keys succeeded")
	}
	if err := sign.Verify(ctx, d, [][]byte{[]byte("junk")}); err == nil {
		t.Error("Verify with a junk key succeeded")
	}
}

func Example() {
	ctx := context.Background()
	priv, pub, err := sign.GenerateKeys([]byte("password"))
	if err != nil {
		panic(err)
	}
	d, err := name.NewDigest("registry.example.com/acme/policies@sha256:" + strings.Repeat("0", 64))
	if err != nil {
		panic(err)
	}
	// CI, after pushing the bundle:
	if err := sign.Sign(ctx, d, priv, []byte("password")); err != nil {
		return // no registry in this example
	}
	// The proxy, before loading it:
	if err := sign.Verify(ctx, d, [][]byte{pub}); err != nil {
		return
	}
}
