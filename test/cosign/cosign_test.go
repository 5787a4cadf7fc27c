// Package cosign_test checks, as a user would, that toolgate's signatures and
// the cosign CLI (v2.6.5, built from the Go module proxy on first use) are
// interchangeable: keys, signatures and verification, in both directions, on
// a real registry (Debian's docker-registry, through test/registry).
package cosign_test

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/bundles/sign"
	"github.com/toolgate/toolgate/test/registry"
)

// cosignVersion is the cosign CLI the tests build and run.
const cosignVersion = "v2.6.5"

var (
	cosignOnce sync.Once
	cosignPath string
	cosignErr  error
)

// cosignBin returns the cosign CLI, building it once per machine into the user
// cache folder (toolgate-test/bin): a cold build takes minutes.
func cosignBin(t testing.TB) string {
	t.Helper()
	cosignOnce.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "toolgate-test", "bin")
		bin := filepath.Join(dir, "cosign")
		if bi, err := buildinfo.ReadFile(bin); err == nil && bi.Main.Version == cosignVersion {
			cosignPath = bin
			return
		}
		t.Logf("building cosign %s into %s with go install (once per machine; a cold build takes about 3 minutes)", cosignVersion, dir)
		start := time.Now()
		cmd := exec.Command("go", "install", "github.com/sigstore/cosign/v2/cmd/cosign@"+cosignVersion)
		cmd.Dir = os.TempDir() // outside this module
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			cosignErr = fmt.Errorf("building cosign %s: %v\n%s", cosignVersion, err, out)
			return
		}
		t.Logf("built cosign in %s", time.Since(start).Round(time.Second))
		cosignPath = bin
	})
	if cosignErr != nil {
		t.Fatal(cosignErr)
	}
	return cosignPath
}

// env is one test's world: a registry, and an isolated home for cosign.
type env struct {
	t    *testing.T
	reg  *registry.Registry
	home string
	ro   []remote.Option
	n    int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cosignBin(t)
	home := t.TempDir()
	t.Setenv("DOCKER_CONFIG", filepath.Join(home, ".docker"))
	t.Setenv(oci.EnvUsername, "")
	t.Setenv(oci.EnvPassword, "")
	ro, err := oci.RemoteOptions()
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, reg: registry.Start(t, registry.Options{}), home: home, ro: ro}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// push publishes a fresh bundle (its own revision, so its own digest).
func (e *env) push() name.Digest {
	e.t.Helper()
	e.n++
	b := &bundles.Bundle{
		Manifest: bundles.Manifest{
			Revision: fmt.Sprintf("rev-%d", e.n),
			Roots:    []string{"toolgate"},
			Wasm:     []bundles.WasmResolver{{Entrypoint: bundles.Entrypoint, Module: bundles.WasmFile}},
			Metadata: bundles.Metadata{Compiler: "toolgate test"},
		},
		Wasm: []byte("\x00asm\x01\x00\x00\x00"),
		Rego: []byte("package toolgate\n"),
	}
	var buf bytes.Buffer
	if err := bundles.Write(&buf, b); err != nil {
		e.t.Fatal(err)
	}
	d, err := oci.Push(ctx(e.t), buf.Bytes(), e.reg.Repo("acme/policies:latest"))
	if err != nil {
		e.t.Fatal(err)
	}
	nd, ok := d.Name()
	if !ok {
		e.t.Fatalf("pushed to %s, not a registry", d)
	}
	return nd
}

// cosign runs the CLI in dir with env vars; it returns the combined output.
func (e *env) cosign(dir string, vars []string, args ...string) (string, error) {
	e.t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(c, cosignBin(e.t), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"HOME="+e.home,
		"DOCKER_CONFIG="+filepath.Join(e.home, ".docker"),
		"TUF_ROOT="+filepath.Join(e.home, ".sigstore"),
		"COSIGN_REPOSITORY=",
		"COSIGN_EXPERIMENTAL=",
	)
	cmd.Env = append(cmd.Env, vars...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// keyPair is a key pair on disk, with its password.
type keyPair struct {
	priv, pub string
	password  string
}

func (k keyPair) read(t testing.TB) (priv, pub []byte) {
	t.Helper()
	priv, err := os.ReadFile(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, err = os.ReadFile(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// ourKeys makes a key pair with sign.GenerateKeys.
func (e *env) ourKeys(password string) keyPair {
	e.t.Helper()
	priv, pub, err := sign.GenerateKeys([]byte(password))
	if err != nil {
		e.t.Fatal(err)
	}
	dir := e.t.TempDir()
	k := keyPair{filepath.Join(dir, "toolgate.key"), filepath.Join(dir, "toolgate.pub"), password}
	if err := os.WriteFile(k.priv, priv, 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(k.pub, pub, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return k
}

// cosignKeys makes a key pair with `cosign generate-key-pair`.
func (e *env) cosignKeys(password string) keyPair {
	e.t.Helper()
	dir := e.t.TempDir()
	if out, err := e.cosign(dir, []string{"COSIGN_PASSWORD=" + password}, "generate-key-pair"); err != nil {
		e.t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	return keyPair{filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub"), password}
}

func (e *env) ourSign(d name.Digest, k keyPair) error {
	e.t.Helper()
	priv, _ := k.read(e.t)
	return sign.Sign(ctx(e.t), d, priv, []byte(k.password), e.ro...)
}

func (e *env) cosignSign(d name.Digest, k keyPair) error {
	e.t.Helper()
	out, err := e.cosign(e.t.TempDir(), []string{"COSIGN_PASSWORD=" + k.password},
		"sign", "--key", k.priv, "--tlog-upload=false", "-y", d.String())
	if err != nil {
		return fmt.Errorf("cosign sign: %v\n%s", err, out)
	}
	return nil
}

func (e *env) ourVerify(d name.Digest, keys ...keyPair) error {
	e.t.Helper()
	var pubs [][]byte
	for _, k := range keys {
		_, pub := k.read(e.t)
		pubs = append(pubs, pub)
	}
	return sign.Verify(ctx(e.t), d, pubs, e.ro...)
}

func (e *env) cosignVerify(d name.Digest, k keyPair) error {
	e.t.Helper()
	out, err := e.cosign(e.t.TempDir(), nil,
		"verify", "--key", k.pub, "--insecure-ignore-tlog=true", d.String())
	if err != nil {
		return fmt.Errorf("cosign verify: %v\n%s", err, out)
	}
	return nil
}

// TestInterop signs and verifies with every mix of key maker, signer and
// verifier: toolgate's packages and the cosign CLI.
func TestInterop(t *testing.T) {
	e := newEnv(t)
	makers := map[string]func(string) keyPair{"toolgate keys": e.ourKeys, "cosign keys": e.cosignKeys}
	signers := map[string]func(name.Digest, keyPair) error{"toolgate sign": e.ourSign, "cosign sign": e.cosignSign}
	verifiers := map[string]func(name.Digest, keyPair) error{
		"toolgate verify": func(d name.Digest, k keyPair) error { return e.ourVerify(d, k) },
		"cosign verify":   e.cosignVerify,
	}
	for mk, makeKeys := range makers {
		k := makeKeys("s3cret " + mk)
		for sn, signWith := range signers {
			d := e.push()
			if err := signWith(d, k); err != nil {
				t.Fatalf("%s, %s: %v", mk, sn, err)
			}
			for vn, verify := range verifiers {
				if err := verify(d, k); err != nil {
					t.Errorf("%s, %s, %s: %v", mk, sn, vn, err)
				}
			}
		}
	}
}

// TestRefused: what must not verify, does not, for cosign nor for us.
func TestRefused(t *testing.T) {
	e := newEnv(t)
	trusted, other := e.cosignKeys("a"), e.ourKeys("b")

	unsigned := e.push()
	if err := e.ourVerify(unsigned, trusted); !errors.Is(err, sign.ErrNoSignature) {
		t.Errorf("unsigned: Verify = %v, want ErrNoSignature", err)
	}
	if err := e.cosignVerify(unsigned, trusted); err == nil {
		t.Error("unsigned: cosign verify succeeded")
	}

	byOther := e.push()
	if err := e.cosignSign(byOther, other); err != nil {
		t.Fatal(err)
	}
	if err := e.ourVerify(byOther, trusted); !errors.Is(err, sign.ErrUntrusted) {
		t.Errorf("unlisted key: Verify = %v, want ErrUntrusted", err)
	}
	if err := e.ourVerify(byOther, trusted, other); err != nil {
		t.Errorf("rotation (either key listed): Verify = %v, want nil", err)
	}

	// cosign signs A; the .sig image of A is copied to B's .sig tag.
	a, b := e.push(), e.push()
	if err := e.cosignSign(a, trusted); err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(sigTag(t, a), e.ro...)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(sigTag(t, b), img, e.ro...); err != nil {
		t.Fatal(err)
	}
	if err := e.ourVerify(b, trusted); !errors.Is(err, sign.ErrWrongDigest) {
		t.Errorf("copied signature: Verify = %v, want ErrWrongDigest", err)
	}
	if err := e.cosignVerify(b, trusted); err == nil {
		t.Error("copied signature: cosign verify succeeded")
	}

	// A cosign key with the wrong password.
	priv, _ := trusted.read(t)
	err = sign.Sign(ctx(t), a, priv, []byte("not a"), e.ro...)
	if !errors.Is(err, sign.ErrWrongPassword) || !strings.Contains(err.Error(), "COSIGN_PASSWORD") {
		t.Errorf("wrong password: Sign = %v, want ErrWrongPassword naming COSIGN_PASSWORD", err)
	}
}

func sigTag(t testing.TB, d name.Digest) name.Tag {
	t.Helper()
	h, err := v1.NewHash(d.DigestStr())
	if err != nil {
		t.Fatal(err)
	}
	return d.Repository.Tag(h.Algorithm + "-" + h.Hex + ".sig")
}

// TestTimings logs sign (with the push before it) and verify on the local
// registry, the figures of BENCHMARKS.md.
func TestTimings(t *testing.T) {
	e := newEnv(t)
	k := e.ourKeys("pw")
	priv, pub := k.read(t)
	const n = 5
	var push, signT, verify time.Duration
	for range n {
		start := time.Now()
		d := e.push()
		push += time.Since(start)
		start = time.Now()
		if err := sign.Sign(ctx(t), d, priv, []byte(k.password), e.ro...); err != nil {
			t.Fatal(err)
		}
		signT += time.Since(start)
		start = time.Now()
		if err := sign.Verify(ctx(t), d, [][]byte{pub}, e.ro...); err != nil {
			t.Fatal(err)
		}
		verify += time.Since(start)
	}
	t.Logf("mean of %d on a local registry: push %s, sign %s (key decryption included), verify %s",
		n, push/n, signT/n, verify/n)
}
