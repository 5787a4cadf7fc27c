package pin_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/toolgate/toolgate/bundles/pin"
)

const repo = "registry.example.com/acme/policies"

func dig(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

func ref(t testing.TB, c byte) name.Digest {
	t.Helper()
	d, err := name.NewDigest(repo + "@" + dig(c))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func write(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pin.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRead(t *testing.T) {
	p := write(t, `bundle: `+repo+`@`+dig('a')+`
publicKey: keys/cosign.pub
history:
  - digest: `+dig('a')+`
    pinnedAt: 2026-11-25T10:00:00Z
  - digest: `+dig('b')+`
`)
	f, err := pin.Read(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []pin.Entry{
		{Digest: dig('a'), PinnedAt: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)},
		{Digest: dig('b')},
	}
	if got := f.History; !reflect.DeepEqual(got, want) {
		t.Errorf("History = %+v, want %+v", got, want)
	}
	if got, want := f.KeyPaths(), []string{filepath.Join(filepath.Dir(p), "keys/cosign.pub")}; !reflect.DeepEqual(got, want) {
		t.Errorf("KeyPaths = %v, want %v", got, want)
	}
	d, err := f.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.String(), repo+"@"+dig('a'); got != want {
		t.Errorf("Digest = %s, want %s", got, want)
	}
}

func TestKeyPathsList(t *testing.T) {
	// publicKeys: [...], and publicKey: holding a list (architecture.md:
	// "relative to the pin file, or a keys list").
	for _, field := range []string{"publicKeys", "publicKey"} {
		p := write(t, "bundle: "+repo+"@"+dig('a')+"\n"+field+": [a.pub, /etc/toolgate/b.pub] # rotation\n")
		f, err := pin.Read(p)
		if err != nil {
			t.Fatalf("%s: %v", field, err)
		}
		want := []string{filepath.Join(filepath.Dir(p), "a.pub"), "/etc/toolgate/b.pub"}
		if got := f.KeyPaths(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: KeyPaths = %v, want %v", field, got, want)
		}
		// Written back, the keys stay (as publicKeys:).
		if err := f.Write(p); err != nil {
			t.Fatal(err)
		}
		g, err := pin.Read(p)
		if err != nil || !reflect.DeepEqual(g.KeyPaths(), want) {
			t.Errorf("%s, written back: %v, %v", field, g, err)
		}
	}
	p := write(t, "bundle: "+repo+"@"+dig('a')+"\npublicKey: [a.pub]\npublicKeys: [b.pub]\n")
	if _, err := pin.Read(p); err == nil {
		t.Error("publicKey: [a.pub] and publicKeys: [b.pub]: read without an error")
	}
}

func TestReadRefuses(t *testing.T) {
	for _, c := range []struct {
		name, content string
		is            error
		contains      []string
	}{
		{"tag", "bundle: " + repo + ":v1\npublicKey: k.pub\n", pin.ErrNotDigest,
			[]string{"is a tag", "write " + repo + "@sha256:<digest> there", "toolgate push prints it"}},
		{"no tag, no digest", "bundle: " + repo + "\npublicKey: k.pub\n", pin.ErrNotDigest, []string{"@sha256:<digest>"}},
		{"bad digest", "bundle: " + repo + "@sha256:abc\npublicKey: k.pub\n", pin.ErrNotDigest, []string{"toolgate pin REF@DIGEST"}},
		{"no bundle", "publicKey: k.pub\n", pin.ErrNotDigest, []string{"bundle: is empty"}},
		{"no key", "bundle: " + repo + "@" + dig('a') + "\n", nil, []string{"no public key"}},
		{"both keys", "bundle: " + repo + "@" + dig('a') + "\npublicKey: a\npublicKeys: [b]\n", nil, []string{"keep one"}},
		{"unknown field", "bundle: " + repo + "@" + dig('a') + "\npublickey: k.pub\n", nil, []string{"publickey"}},
		{"bad history", "bundle: " + repo + "@" + dig('a') + "\npublicKey: k\nhistory: [{digest: v1}]\n", nil, []string{"history[0]"}},
		{"empty", "", nil, []string{"empty"}},
		{"not yaml", "bundle: [", nil, []string{"parsing"}},
		{"every problem", "bundle: acme/policies:v1\nhistory: [{digest: v1}]\n", pin.ErrNotDigest, []string{"is a tag", "no public key", "history[0]"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := write(t, c.content)
			_, err := pin.Read(p)
			if err == nil {
				t.Fatal("Read succeeded, want an error")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("Read = %v, want %v", err, c.is)
			}
			for _, s := range append(c.contains, p) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Read = %q, want it to contain %q", err, s)
				}
			}
		})
	}
}

func TestPin(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	f := &pin.File{PublicKey: "cosign.pub"}
	f.Pin(ref(t, 'a'), t0)
	f.Pin(ref(t, 'b'), t0.Add(time.Hour))
	f.Pin(ref(t, 'b'), t0.Add(2*time.Hour)) // consecutive: no new entry
	f.Pin(ref(t, 'c'), t0.Add(3*time.Hour).In(time.FixedZone("X", 3600)).Add(time.Millisecond))
	want := []pin.Entry{
		{Digest: dig('c'), PinnedAt: t0.Add(3 * time.Hour)},
		{Digest: dig('b'), PinnedAt: t0.Add(time.Hour)},
		{Digest: dig('a'), PinnedAt: t0},
	}
	if got := f.History; !reflect.DeepEqual(got, want) {
		t.Errorf("History = %+v, want %+v", got, want)
	}
	if got, want := f.Bundle, repo+"@"+dig('c'); got != want {
		t.Errorf("Bundle = %s, want %s", got, want)
	}
}

func TestPinHandWritten(t *testing.T) {
	f, err := pin.Parse([]byte("bundle: " + repo + "@" + dig('a') + "\npublicKey: k.pub\n"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Pin(ref(t, 'b'), now)
	want := []pin.Entry{{Digest: dig('b'), PinnedAt: now}, {Digest: dig('a')}}
	if got := f.History; !reflect.DeepEqual(got, want) {
		t.Errorf("History = %+v, want %+v", got, want)
	}
}

func TestPinKeepsMaxHistory(t *testing.T) {
	f := &pin.File{PublicKey: "k"}
	now := time.Now()
	for i := range pin.MaxHistory + 10 {
		d, err := name.NewDigest(fmt.Sprintf("%s@sha256:%064x", repo, i))
		if err != nil {
			t.Fatal(err)
		}
		f.Pin(d, now)
	}
	if got, want := len(f.History), pin.MaxHistory; got != want {
		t.Fatalf("len(History) = %d, want %d", got, want)
	}
	if got, want := f.History[0].Digest, fmt.Sprintf("sha256:%064x", pin.MaxHistory+9); got != want {
		t.Errorf("newest = %s, want %s", got, want)
	}
}

func TestPinOtherRepository(t *testing.T) {
	f := &pin.File{PublicKey: "k"}
	now := time.Now()
	f.Pin(ref(t, 'a'), now)
	moved, err := name.NewDigest("mirror.example.com/policies@" + dig('b'))
	if err != nil {
		t.Fatal(err)
	}
	f.Pin(moved, now)
	got, err := f.Rollback("")
	if err != nil {
		t.Fatal(err)
	}
	if want := repo + "@" + dig('a'); got.String() != want {
		t.Errorf("Rollback = %s, want %s (the old repository)", got, want)
	}
}

func TestRollback(t *testing.T) {
	f := &pin.File{PublicKey: "k"}
	now := time.Now()
	for _, c := range []byte("abc") {
		f.Pin(ref(t, c), now)
	}
	for _, c := range []struct {
		to   string
		want string
		is   error
	}{
		{"", dig('b'), nil},
		{dig('a'), dig('a'), nil},
		{repo + "@" + dig('a'), dig('a'), nil},
		{dig('d'), "", pin.ErrNotInHistory},
		{"latest", "", nil},
	} {
		got, err := f.Rollback(c.to)
		switch {
		case c.want != "" && err != nil:
			t.Errorf("Rollback(%q) = %v", c.to, err)
		case c.want != "" && got.String() != repo+"@"+c.want:
			t.Errorf("Rollback(%q) = %s, want %s", c.to, got, c.want)
		case c.want == "" && err == nil:
			t.Errorf("Rollback(%q) = %s, want an error", c.to, got)
		case c.is != nil && !errors.Is(err, c.is):
			t.Errorf("Rollback(%q) = %v, want %v", c.to, err, c.is)
		}
	}

	// Rolling back, then rolling back again, goes back and forth.
	d, _ := f.Rollback("")
	f.Pin(d, now)
	if d, _ := f.Rollback(""); d.DigestStr() != dig('c') {
		t.Errorf("second Rollback = %s, want %s", d, dig('c'))
	}
}

func TestRollbackEmptyHistory(t *testing.T) {
	for _, content := range []string{
		"bundle: " + repo + "@" + dig('a') + "\npublicKey: k\n",
		"bundle: " + repo + "@" + dig('a') + "\npublicKey: k\nhistory: [{digest: " + dig('a') + "}]\n",
	} {
		f, err := pin.Parse([]byte(content))
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Rollback("")
		if !errors.Is(err, pin.ErrNoHistory) {
			t.Fatalf("Rollback = %v, want ErrNoHistory", err)
		}
		if !strings.Contains(err.Error(), "toolgate pin") {
			t.Errorf("error %q does not say what to do", err)
		}
	}
}

func TestWriteRoundTripKeepsComments(t *testing.T) {
	p := write(t, `# Deployed policy for the acme proxies.
bundle: `+repo+`@`+dig('a')+` # pinned by CI
publicKey: cosign.pub # relative to this file
`)
	f, err := pin.Read(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Pin(ref(t, 'b'), time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
	if err := f.Write(p); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	want := `# Deployed policy for the acme proxies.
bundle: ` + repo + `@` + dig('b') + ` # pinned by CI
publicKey: cosign.pub # relative to this file
history:
  - digest: ` + dig('b') + `
    pinnedAt: 2026-11-25T10:00:00Z
  - digest: ` + dig('a') + `
`
	if got != want {
		t.Errorf("written:\n%s\nwant:\n%s", got, want)
	}
	g, err := pin.Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.History, f.History) || g.Bundle != f.Bundle {
		t.Errorf("read back %+v, want %+v", g, f)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("folder holds %d files after Write, want 1 (temporary file left?)", len(entries))
	}
}

func TestWriteNew(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pin.yaml")
	f := &pin.File{PublicKeys: []string{"a.pub", "b.pub"}}
	if err := f.Write(p); err == nil {
		t.Error("Write of a file with no bundle succeeded")
	}
	f.Pin(ref(t, 'a'), time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC))
	if err := f.Write(p); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	want := `bundle: ` + repo + `@` + dig('a') + `
publicKeys:
  - a.pub
  - b.pub
history:
  - digest: ` + dig('a') + `
    pinnedAt: 2026-11-25T10:00:00Z
`
	if got := string(b); got != want {
		t.Errorf("written:\n%s\nwant:\n%s", got, want)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"bundle: " + repo + "@" + dig('a') + "\npublicKey: k.pub\nhistory:\n  - digest: " + dig('b') + "\n    pinnedAt: 2026-11-25T10:00:00Z\n",
		"bundle: " + repo + ":v1\npublicKey: k.pub\n",
		"bundle: " + repo + "@" + dig('a') + "\npublicKeys: [a, b]\nhistory: [{digest: x@" + dig('c') + "}]\n",
		"# c\nbundle: a@b\n",
		"{}",
		"- 1\n",
		"bundle: &a x\npublicKey: *a\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := pin.Parse(data)
		if err != nil {
			return
		}
		d, err := p.Digest()
		if err != nil {
			t.Fatalf("Parse accepted a bundle that is not a digest: %v", err)
		}
		// What parses must survive a write and a read, unchanged.
		path := filepath.Join(t.TempDir(), "pin.yaml")
		if err := p.Write(path); err != nil {
			t.Fatalf("Write after Parse: %v", err)
		}
		q, err := pin.Read(path)
		if err != nil {
			t.Fatalf("Read after Write: %v", err)
		}
		if q.Bundle != p.Bundle || q.PublicKey != p.PublicKey || !reflect.DeepEqual(q.PublicKeys, p.PublicKeys) || len(q.History) != len(p.History) {
			t.Fatalf("round trip changed the file:\n%+v\n%+v", p, q)
		}
		for i := range p.History {
			if q.History[i].Digest != p.History[i].Digest || !q.History[i].PinnedAt.Equal(p.History[i].PinnedAt) {
				t.Fatalf("round trip changed history[%d]: %+v, %+v", i, p.History[i], q.History[i])
			}
		}
		p.Pin(d, time.Now())
		_, _ = p.Rollback("")
	})
}

func Example() {
	dir, _ := os.MkdirTemp("", "pin")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "pin.yaml")
	d1, _ := name.NewDigest(repo + "@" + dig('1'))
	d2, _ := name.NewDigest(repo + "@" + dig('2'))

	f := &pin.File{PublicKey: "cosign.pub"}
	f.Pin(d1, time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)) // toolgate pin (after verifying)
	f.Pin(d2, time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	if err := f.Write(path); err != nil {
		panic(err)
	}

	f, err := pin.Read(path)
	if err != nil {
		panic(err)
	}
	prev, err := f.Rollback("") // toolgate rollback: verify prev, then pin it
	if err != nil {
		panic(err)
	}
	fmt.Println(prev.DigestStr()[:12])
	fmt.Println(filepath.Base(f.KeyPaths()[0]))
	// Output:
	// sha256:11111
	// cosign.pub
}
