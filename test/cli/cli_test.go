// Package cli runs the toolgate binary as a user would: the whole path from
// policy files to a signed, pinned bundle in a real registry, and back by
// rollback, checking outputs and exit codes.
package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/test/registry"
)

var toolgate string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "toolgate-cli")
	if err != nil {
		panic(err)
	}
	toolgate = filepath.Join(dir, "toolgate")
	build := exec.Command("go", "build", "-o", toolgate, "github.com/toolgate/toolgate/cmd/toolgate")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("building toolgate: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(toolgate, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func must(t *testing.T, r result, what string) string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, r.code, r.stdout, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

var digestRef = regexp.MustCompile(`^[^\s@]+@sha256:[0-9a-f]{64}$`)

func writePolicy(t *testing.T, dir, limit string) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir, "policies"), 0o755)
	os.WriteFile(filepath.Join(dir, "policies", "github.yaml"), []byte(`version: "1"
tools:
  create_issue:
    rules:
      - name: hourly issue limit
        rate_limit: `+limit+`
`), 0o644)
}

func TestBuildPushSignPinRollback(t *testing.T) {
	reg := registry.Start(t, registry.Options{})
	dir := t.TempDir()
	env := []string{"COSIGN_PASSWORD=correct horse", "HOME=" + dir, "DOCKER_CONFIG=" + dir}
	repo := reg.Repo("acme/policies")

	must(t, run(t, dir, env, "keygen"), "keygen")
	if st, err := os.Stat(filepath.Join(dir, "cosign.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("cosign.key: %v, mode %v; want 0600", err, st.Mode())
	}
	if r := run(t, dir, env, "keygen"); r.code != 1 || !strings.Contains(r.stderr, "exists") {
		t.Fatalf("keygen over existing keys: exit %d, %q; want 1 and a refusal", r.code, r.stderr)
	}

	writePolicy(t, dir, "5/hour")
	must(t, run(t, dir, env, "build", "-o", "v1.tar.gz", "--revision", "c1"), "build v1")
	v1 := must(t, run(t, dir, env, "push", "v1.tar.gz", repo+":latest", "--key", "cosign.key"), "push v1")
	if !digestRef.MatchString(v1) {
		t.Fatalf("push printed %q, want only REPO@sha256:…", v1)
	}
	if again := must(t, run(t, dir, env, "push", "v1.tar.gz", repo+":latest"), "push v1 again"); again != v1 {
		t.Fatalf("pushing the same bundle twice: %s then %s", v1, again)
	}
	must(t, run(t, dir, env, "verify", v1, "--key", "cosign.pub"), "verify v1")

	// Another key did not sign it: exit 1.
	must(t, run(t, dir, env, "keygen", "--output-key-prefix", "other"), "keygen other")
	if r := run(t, dir, env, "verify", v1, "--key", "other.pub"); r.code != 1 {
		t.Fatalf("verify with a key that did not sign: exit %d (%s), want 1", r.code, r.stderr)
	}
	// Key rotation: any listed key may have signed.
	must(t, run(t, dir, env, "verify", v1, "--key", "other.pub", "--key", "cosign.pub"), "verify with two keys")

	// Pull verifies, then writes the very bytes that were pushed.
	must(t, run(t, dir, env, "pull", v1, "--key", "cosign.pub", "-o", "pulled.tar.gz"), "pull")
	a, _ := os.ReadFile(filepath.Join(dir, "v1.tar.gz"))
	b, _ := os.ReadFile(filepath.Join(dir, "pulled.tar.gz"))
	if !bytes.Equal(a, b) {
		t.Fatal("pulled bundle differs from the pushed one")
	}
	if r := run(t, dir, env, "pull", repo+":latest", "--key", "cosign.pub", "-o", "x.tar.gz"); r.code == 0 {
		t.Fatal("pull by tag succeeded; only digests may be pulled")
	}

	// An unsigned bundle can be pushed but neither verified nor pinned.
	writePolicy(t, dir, "7/hour")
	must(t, run(t, dir, env, "build", "-o", "unsigned.tar.gz"), "build unsigned")
	unsigned := must(t, run(t, dir, env, "push", "unsigned.tar.gz", repo+":unsigned"), "push unsigned")
	if r := run(t, dir, env, "pin", unsigned, "--pin-file", "pin.yaml", "--key", "cosign.pub"); r.code != 1 {
		t.Fatalf("pinning an unsigned bundle: exit %d, want 1", r.code)
	}
	if _, err := os.Stat(filepath.Join(dir, "pin.yaml")); err == nil {
		t.Fatal("a refused pin wrote the pin file")
	}

	must(t, run(t, dir, env, "pin", v1, "--pin-file", "pin.yaml", "--key", "cosign.pub"), "pin v1")
	writePolicy(t, dir, "10/hour")
	must(t, run(t, dir, env, "build", "-o", "v2.tar.gz", "--revision", "c2"), "build v2")
	v2 := must(t, run(t, dir, env, "push", "v2.tar.gz", repo+":latest", "--key", "cosign.key"), "push v2")
	must(t, run(t, dir, env, "pin", v2, "--pin-file", "pin.yaml"), "pin v2 with the pin file's key")
	// The proxy trusts the pin file's keys: --key cannot vouch for a pin
	// with another key.
	must(t, run(t, dir, env, "sign", v2, "--key", "other.key"), "sign v2 with the other key")
	if r := run(t, dir, env, "pin", v2, "--pin-file", "pin.yaml", "--key", "other.pub"); r.code != 2 || !strings.Contains(r.stderr, "not one of the pin file's keys") {
		t.Fatalf("pin with a key the pin file does not hold: exit %d, %q; want 2", r.code, r.stderr)
	}
	pinned, _ := os.ReadFile(filepath.Join(dir, "pin.yaml"))
	if !strings.Contains(string(pinned), "bundle: "+v2) || !strings.Contains(string(pinned), "publicKey: cosign.pub") {
		t.Fatalf("pin file after pinning v2:\n%s", pinned)
	}

	back := must(t, run(t, dir, env, "rollback", "--pin-file", "pin.yaml"), "rollback")
	if back != v1 {
		t.Fatalf("rollback re-pinned %s, want %s", back, v1)
	}
	pinned, _ = os.ReadFile(filepath.Join(dir, "pin.yaml"))
	if !strings.Contains(string(pinned), "bundle: "+v1) {
		t.Fatalf("pin file after rollback:\n%s", pinned)
	}

	// A new pin file in another folder: --key is a path from here, the
	// file records it from its own folder (and the proxy reads it so);
	// an absolute key inside the folder is recorded relative too, one
	// outside stays absolute.
	os.MkdirAll(filepath.Join(dir, "deploy", "keys"), 0o755)
	pub, _ := os.ReadFile(filepath.Join(dir, "cosign.pub"))
	os.WriteFile(filepath.Join(dir, "deploy", "keys", "cosign.pub"), pub, 0o644)
	for _, tc := range []struct{ key, recorded string }{
		{"cosign.pub", "publicKey: ../cosign.pub"},
		{"deploy/keys/cosign.pub", "publicKey: keys/cosign.pub"},
		{filepath.Join(dir, "deploy", "keys", "cosign.pub"), "publicKey: keys/cosign.pub"},
		{filepath.Join(dir, "cosign.pub"), "publicKey: " + filepath.Join(dir, "cosign.pub")},
	} {
		os.Remove(filepath.Join(dir, "deploy", "pin.yaml"))
		must(t, run(t, dir, env, "pin", v1, "--pin-file", "deploy/pin.yaml", "--key", tc.key), "pin into deploy/ with --key "+tc.key)
		pinned, _ = os.ReadFile(filepath.Join(dir, "deploy", "pin.yaml"))
		if !strings.Contains(string(pinned), tc.recorded+"\n") {
			t.Errorf("--key %s: pin file records\n%s\nwant %q", tc.key, pinned, tc.recorded)
		}
		must(t, run(t, dir, env, "pin", v2, "--pin-file", "deploy/pin.yaml"), "pin v2 with deploy/pin.yaml's key")
	}

	// A pin file that names a tag is refused.
	os.WriteFile(filepath.Join(dir, "tag.yaml"), []byte("bundle: "+repo+":latest\npublicKey: cosign.pub\n"), 0o644)
	if r := run(t, dir, env, "rollback", "--pin-file", "tag.yaml"); r.code != 1 || !strings.Contains(r.stderr, "digest") {
		t.Fatalf("pin file naming a tag: exit %d, %q", r.code, r.stderr)
	}
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"nonsense"}, 2},
		{[]string{"lint", "--bogus-flag"}, 2},
		{[]string{"push", "only-one-arg"}, 2},
		{[]string{"sign", "localhost:1/x@sha256:" + strings.Repeat("a", 64)}, 2}, // no --key
		{[]string{"--help"}, 0},
		{[]string{"lint", "no-such-dir"}, 1},
		{[]string{"audit", "bogus"}, 2}, {[]string{"grants", "bogus"}, 2}, {[]string{"approvals", "bogus"}, 2}, {[]string{"audit"}, 0},
	} {
		if r := run(t, dir, nil, tc.args...); r.code != tc.code {
			t.Errorf("toolgate %v: exit %d, want %d (stderr %q)", tc.args, r.code, tc.code, r.stderr)
		}
	}
	// --listen without --upstream says what is missing (it asked for a
	// server command after --).
	if r := run(t, dir, nil, "proxy", "--policy", "policies", "--listen", "127.0.0.1:0"); r.code != 2 || !strings.Contains(r.stderr, "--listen needs --upstream") {
		t.Errorf("proxy --listen without --upstream: exit %d, %q", r.code, r.stderr)
	}
	// A warning is printed at its place and does not fail the lint.
	wdir := t.TempDir()
	os.MkdirAll(filepath.Join(wdir, "policies"), 0o755)
	os.WriteFile(filepath.Join(wdir, "policies", "bank.yaml"), []byte("version: \"1\"\ntools:\n  close_account:\n    rules:\n      - name: protected\n        conditions:\n          - {path: args.id, op: not_in, value: [\"12345678\"]}\n"), 0o644)
	if r := run(t, wdir, nil, "lint"); r.code != 0 || !strings.Contains(r.stdout, "policies/bank.yaml:7:13: warning: args.id not_in \"12345678\"") || !strings.Contains(r.stderr, "1 warning(s)") {
		t.Errorf("lint with a warning: exit %d, stdout %q, stderr %q; want 0 and the warning", r.code, r.stdout, r.stderr)
	}
	writePolicy(t, dir, "0/hour") // a lint error
	r := run(t, dir, nil, "lint")
	if r.code != 1 || !strings.Contains(r.stdout, "policies/github.yaml:6:21: ") {
		t.Errorf("lint of a bad policy: exit %d, stdout %q; want 1 and file:line:col", r.code, r.stdout)
	}
}

// TestTestFileByName: a *_test.yaml named as a path is a policy test, not a
// policy (policy.md §1): toolgate test runs its cases against the
// policies, each case once even when its folder is named too, and lint
// and build do not read it as a policy.
func TestTestFileByName(t *testing.T) {
	const file = "policies/payments/stripe_test.yaml"
	data, err := os.ReadFile("../../" + file)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d passed, 0 failed", strings.Count(string(data), "\n  - name:"))
	if got := must(t, run(t, "../..", nil, "test", file), "toolgate test "+file); got != want {
		t.Errorf("toolgate test %s: %q, want %q", file, got, want)
	}
	all := must(t, run(t, "../..", nil, "test"), "toolgate test")
	if all == want {
		t.Fatalf("toolgate test ran %q, as many cases as %s alone: the test wants a policy folder with other tests", all, file)
	}
	if got := must(t, run(t, "../..", nil, "test", file, "policies"), "toolgate test FILE policies"); got != all {
		t.Errorf("toolgate test %s policies: %q, want %q (each case once)", file, got, all)
	}
	if r := run(t, "../..", nil, "lint", file, "policies/payments/stripe.yaml"); r.code != 0 {
		t.Errorf("lint of a policy and its test file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestBuildFromGit: in a git work tree, a build records the commit as the
// bundle's revision (-dirty while the policies hold uncommitted changes),
// and names its sources from the top of the tree, so the bundle is the same
// however the folder is spelled; the push records the origin remote as
// the artifact's source and the commit's time as its created time.
func TestBuildFromGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is needed (the build reads the revision from it)")
	}
	dir := t.TempDir()
	gitIn := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_COMMITTER_DATE=2026-03-04T05:06:07Z", "GIT_AUTHOR_DATE=2026-03-04T05:06:07Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gitIn("init", "-q")
	writePolicy(t, dir, "5/hour")
	gitIn("add", ".")
	gitIn("commit", "-q", "-m", "policies")
	gitIn("remote", "add", "origin", "https://user:secret@git.example.com/acme/policies.git")
	head := gitIn("rev-parse", "HEAD")

	var digests []string
	for _, c := range []struct{ dir, path string }{{dir, "policies"}, {dir, "./policies/"}, {"/", dir + "/policies"}, {dir + "/policies", "."}} {
		out := filepath.Join(t.TempDir(), "b.tgz")
		digests = append(digests, must(t, run(t, c.dir, nil, "build", c.path, "-o", out), "build "+c.path))
		b := readBundle(t, out)
		if b.Manifest.Revision != head || len(b.Sources) != 1 || b.Sources[0].Path != "policies/github.yaml" {
			t.Errorf("build %s in %s: revision %q, sources %v; want %s and policies/github.yaml", c.path, c.dir, b.Manifest.Revision, b.Sources, head)
		}
	}
	if digests[0] != digests[1] || digests[0] != digests[2] || digests[0] != digests[3] {
		t.Errorf("one commit, four spellings of its folder, digests %v: want one", digests)
	}

	writePolicy(t, dir, "6/hour")
	out := filepath.Join(dir, "b.tgz")
	must(t, run(t, dir, nil, "build", "-o", out), "build with changes")
	if got := readBundle(t, out).Manifest.Revision; got != head+"-dirty" {
		t.Errorf("revision with uncommitted changes: %q, want %s-dirty", got, head)
	}
	must(t, run(t, dir, nil, "build", "-o", out, "--revision", "v1"), "build --revision")
	if got := readBundle(t, out).Manifest.Revision; got != "v1" {
		t.Errorf("revision with --revision v1: %q", got)
	}

	// The push: the origin (without its credentials) and the commit's time.
	gitIn("checkout", "-q", "--", ".")
	must(t, run(t, dir, nil, "build", "-o", out), "build")
	reg := registry.Start(t, registry.Options{})
	ref := must(t, run(t, dir, nil, "push", out, reg.Repo("acme/policies")+":v1"), "push")
	ann := manifestAnnotations(t, ref)
	if ann["org.opencontainers.image.source"] != "https://git.example.com/acme/policies.git" ||
		ann["org.opencontainers.image.created"] != "2026-03-04T05:06:07Z" || ann["org.opencontainers.image.revision"] != head {
		t.Errorf("annotations %v: want the origin without credentials, the commit time and %s", ann, head)
	}

	// A link keeps its own name (it names the server it governs).
	if err := os.Symlink("github.yaml", filepath.Join(dir, "policies", "gitlab.yaml")); err != nil {
		t.Fatal(err)
	}
	gitIn("add", ".")
	gitIn("commit", "-q", "-m", "gitlab too")
	must(t, run(t, dir, nil, "build", "-o", out), "build with a link")
	b := readBundle(t, out)
	if len(b.Sources) != 2 || b.Sources[0].Path != "policies/github.yaml" || b.Sources[1].Path != "policies/gitlab.yaml" {
		t.Errorf("sources with a link: %v, want policies/github.yaml and policies/gitlab.yaml", b.Sources)
	}
	if !strings.HasSuffix(b.Manifest.Revision, gitIn("rev-parse", "HEAD")) {
		t.Errorf("revision %q after the second commit", b.Manifest.Revision)
	}
	// A file git ignores, and a link out of the work tree: git cannot
	// vouch for either.
	os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("policies/ignored.yaml\n"), 0o644)
	gitIn("add", ".gitignore")
	gitIn("commit", "-q", "-m", "ignore")
	os.WriteFile(filepath.Join(dir, "policies", "ignored.yaml"), []byte("version: \"1\"\n"), 0o644)
	must(t, run(t, dir, nil, "build", "-o", out), "build with an ignored file")
	if got := readBundle(t, out).Manifest.Revision; !strings.HasSuffix(got, "-dirty") {
		t.Errorf("revision with an ignored policy file read: %q, want -dirty", got)
	}
	os.Remove(filepath.Join(dir, "policies", "ignored.yaml"))
	must(t, run(t, dir, nil, "build", "-o", out), "build, clean again")
	if got := readBundle(t, out).Manifest.Revision; strings.HasSuffix(got, "-dirty") {
		t.Errorf("revision of a clean tree: %q", got)
	}
	// A policy from outside the work tree: git cannot vouch for it.
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "other.yaml"), []byte("version: \"1\"\n"), 0o644)
	must(t, run(t, dir, nil, "build", "policies", filepath.Join(outside, "other.yaml"), "-o", out), "build with a file outside")
	if got := readBundle(t, out).Manifest.Revision; !strings.HasSuffix(got, "-dirty") {
		t.Errorf("revision with a policy from outside the work tree: %q, want -dirty", got)
	}
}

func readBundle(t *testing.T, path string) *bundles.Bundle {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.ReadBytes(raw, bundles.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// manifestAnnotations reads the annotations of the manifest at ref
// (REPO@sha256:…) from its registry.
func manifestAnnotations(t *testing.T, ref string) map[string]string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Annotations map[string]string }
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	return m.Annotations
}

// TestLayoutSignatures: a bundle in an OCI image layout on disk (oci:DIR,
// no registry) is signed, verified, pulled and loaded by the proxy as one
// in a registry: its signatures live in the layout at the
// sha256-<hex>.sig tag.
func TestLayoutSignatures(t *testing.T) {
	dir := t.TempDir()
	env := []string{"COSIGN_PASSWORD=pw", "HOME=" + dir}
	must(t, run(t, dir, env, "keygen"), "keygen")
	must(t, run(t, dir, env, "keygen", "--output-key-prefix", "other"), "keygen other")
	writePolicy(t, dir, "5/hour")
	must(t, run(t, dir, env, "build", "-o", "b.tgz", "--revision", "r1"), "build")
	layoutDir := filepath.Join(dir, "layout")
	signed := must(t, run(t, dir, env, "push", "b.tgz", "oci:"+layoutDir+":v1", "--key", "cosign.key"), "push --key to a layout")
	if !strings.HasPrefix(signed, "oci:"+layoutDir+"@sha256:") {
		t.Fatalf("push printed %q, want oci:DIR@sha256:…", signed)
	}
	if got := must(t, run(t, dir, env, "verify", signed, "--key", "cosign.pub"), "verify"); got != signed {
		t.Errorf("verify printed %q, want the digest verified, %s (results on stdout)", got, signed)
	}
	must(t, run(t, dir, env, "verify", signed, "--key", "other.pub", "--key", "cosign.pub"), "verify with two keys")
	if r := run(t, dir, env, "verify", signed, "--key", "other.pub"); r.code != 1 || !strings.Contains(r.stderr, "not signed by any trusted key") {
		t.Fatalf("verify with a key that did not sign: exit %d, %q; want 1", r.code, r.stderr)
	}
	must(t, run(t, dir, env, "pull", signed, "--key", "cosign.pub", "-o", "pulled.tgz"), "pull")
	a, _ := os.ReadFile(filepath.Join(dir, "b.tgz"))
	b, _ := os.ReadFile(filepath.Join(dir, "pulled.tgz"))
	if !bytes.Equal(a, b) {
		t.Fatal("the bundle pulled from the layout differs from the one pushed")
	}
	// Signing again with the same key adds nothing; another key adds one.
	must(t, run(t, dir, env, "sign", signed, "--key", "cosign.key"), "sign again")
	must(t, run(t, dir, env, "sign", signed, "--key", "other.key"), "sign with the other key")
	must(t, run(t, dir, env, "verify", signed, "--key", "other.pub"), "verify with the other key")
	idx, _ := os.ReadFile(filepath.Join(layoutDir, "index.json"))
	if n := strings.Count(string(idx), ".sig"); n != 1 {
		t.Errorf("index.json names %d signature manifests, want one:\n%s", n, idx)
	}

	// An unsigned bundle in the layout verifies with no key.
	writePolicy(t, dir, "6/hour")
	must(t, run(t, dir, env, "build", "-o", "u.tgz", "--revision", "r2"), "build unsigned")
	unsigned := must(t, run(t, dir, env, "push", "u.tgz", "oci:"+layoutDir+":v2"), "push unsigned")
	if r := run(t, dir, env, "verify", unsigned, "--key", "cosign.pub"); r.code != 1 || !strings.Contains(r.stderr, "no signature") {
		t.Fatalf("verify an unsigned layout bundle: exit %d, %q; want 1", r.code, r.stderr)
	}
	// The proxy loads a layout bundle its --key signed (and exits 0 when
	// its client, here an empty stdin, ends), and refuses an unsigned one.
	if r := run(t, dir, env, "proxy", "--bundle", signed, "--key", "other.pub", "--state", "memory", "--admin", "", "--server", "github", "--", "true"); r.code != 0 {
		t.Fatalf("proxy with a key that signed: exit %d, %q", r.code, r.stderr)
	}
	if r := run(t, dir, env, "proxy", "--bundle", unsigned, "--key", "cosign.pub", "--state", "memory", "--admin", "", "--server", "github", "--", "true"); r.code != 1 || !strings.Contains(r.stderr, "no signature") {
		t.Fatalf("proxy with an unsigned layout bundle and --key: exit %d, %q; want 1", r.code, r.stderr)
	}
	// An empty --key (an unset variable) is bad usage, never a skipped check.
	if r := run(t, dir, env, "proxy", "--bundle", unsigned, "--key", "", "--state", "memory", "--admin", "", "--server", "github", "--", "true"); r.code != 2 {
		t.Fatalf("proxy with --key \"\": exit %d, %q; want 2", r.code, r.stderr)
	}
	// A pin file names a registry digest.
	if r := run(t, dir, env, "pin", signed, "--pin-file", "pin.yaml", "--key", "cosign.pub"); r.code != 2 || !strings.Contains(r.stderr, "registry digest") {
		t.Fatalf("pin of a layout bundle: exit %d, %q; want 2", r.code, r.stderr)
	}
	// A signature manifest that is no regular file (a link to an endless
	// device) is refused, not read.
	idx, _ = os.ReadFile(filepath.Join(layoutDir, "index.json"))
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	json.Unmarshal(idx, &index)
	for _, m := range index.Manifests {
		if strings.HasSuffix(m.Annotations["org.opencontainers.image.ref.name"], ".sig") {
			blob := filepath.Join(layoutDir, "blobs", "sha256", strings.TrimPrefix(m.Digest, "sha256:"))
			os.Remove(blob)
			if err := os.Symlink("/dev/zero", blob); err != nil {
				t.Fatal(err)
			}
		}
	}
	if r := run(t, dir, env, "verify", signed, "--key", "cosign.pub"); r.code != 1 || !strings.Contains(r.stderr, "not a regular file") {
		t.Fatalf("verify with a signature manifest linked to /dev/zero: exit %d, %q; want 1", r.code, r.stderr)
	}
}

// TestBrokenTestFile: a test file that cannot be read is one failed case,
// on its own line, and the output still ends with the summary (policy.md
// §7); the other files' cases run.
func TestBrokenTestFile(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "5/hour")
	os.WriteFile(filepath.Join(dir, "policies", "github_test.yaml"), []byte("server: github\ncases:\n  - {name: ok, tool: create_issue, expect: allow}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "policies", "bad_test.yaml"), []byte("server: github\ncases:\n  - {name: x, tol: create_issue}\n"), 0o644)
	r := run(t, dir, nil, "test")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 1 || len(lines) != 2 || !strings.HasPrefix(lines[0], "FAIL policies/bad_test.yaml") || lines[1] != "1 passed, 1 failed" {
		t.Fatalf("exit %d, stdout %q; want a FAIL line for bad_test.yaml and 1 passed, 1 failed", r.code, r.stdout)
	}
}

// TestKeygenPrompts: without COSIGN_PASSWORD, on a terminal, keygen asks
// for the password twice without echoing it, and the key it writes opens
// with that password only; without a terminal it says how to give one.
func TestKeygenPrompts(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed for this test (a pseudo-terminal): make test-deps installs it")
	}
	dir := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COSIGN_PASSWORD=") {
			env = append(env, kv)
		}
	}
	// keygen on a pseudo-terminal, answering its prompts.
	const driver = `
import os, pty, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "keygen"])
seen = b""
def wait_for(s):
    global seen
    while s not in seen:
        chunk = os.read(fd, 1024)
        if not chunk:
            raise SystemExit("the terminal closed before %r; it showed %r" % (s, seen))
        seen += chunk
def type_secret(s):
    # As a person would: once the prompt has turned echo off.
    deadline = time.time() + 10
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        if time.time() > deadline:
            raise SystemExit("echo stayed on at the prompt")
        time.sleep(0.005)
    os.write(fd, s)
wait_for(b"Enter password for private key: ")
type_secret(b"pw-1234\n")
wait_for(b"again: ")
type_secret(b"pw-1234\n")
try:
    while True:
        chunk = os.read(fd, 1024)
        if not chunk:
            break
        seen += chunk
except OSError:
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.decode("utf-8", "replace"))
sys.exit(os.waitstatus_to_exitcode(status))
`
	cmd := exec.Command(python, "-c", driver, toolgate)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("keygen on a terminal: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "pw-1234") {
		t.Errorf("the password was echoed:\n%s", out)
	}
	writePolicy(t, dir, "5/hour")
	must(t, run(t, dir, env, "build", "-o", "b.tar.gz", "--revision", "c1"), "build")
	if r := run(t, dir, append(env, "COSIGN_PASSWORD=wrong"), "push", "b.tar.gz", "oci:layout:v1", "--key", "cosign.key"); r.code == 0 {
		t.Fatal("the key opened with a wrong password")
	}
	must(t, run(t, dir, append(env, "COSIGN_PASSWORD=pw-1234"), "push", "b.tar.gz", "oci:layout:v1", "--key", "cosign.key"), "push signed with the password given at the prompt")
	// No terminal, no COSIGN_PASSWORD: bad usage, saying what to do.
	if r := run(t, dir, env, "keygen", "--output-key-prefix", "other"); r.code != 2 || !strings.Contains(r.stderr, "COSIGN_PASSWORD") {
		t.Fatalf("keygen without a terminal: exit %d, %q", r.code, r.stderr)
	}
}
