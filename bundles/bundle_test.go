package bundles

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func sample() *Bundle {
	return &Bundle{
		Manifest: Manifest{
			Revision: "abc",
			Roots:    []string{"toolgate"},
			Wasm:     []WasmResolver{{Entrypoint: Entrypoint, Module: WasmFile}},
			Metadata: Metadata{Compiler: "toolgate test", Servers: []string{"github"}},
		},
		Wasm:    []byte("\x00asm\x01\x00\x00\x00"),
		Data:    []byte(`{}`),
		Rego:    []byte("package toolgate\n"),
		Sources: []File{{"policies/b.yaml", []byte("b")}, {"policies/a.yaml", []byte("a")}},
	}
}

func write(t testing.TB, b *Bundle) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteReadRoundTrip(t *testing.T) {
	raw := write(t, sample())
	if again := write(t, sample()); !bytes.Equal(raw, again) {
		t.Fatal("Write is not deterministic")
	}
	got, err := ReadBytes(raw, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Manifest.Revision != "abc" || string(got.Wasm) != string(sample().Wasm) || string(got.Rego) != "package toolgate\n" {
		t.Fatalf("round trip lost data: %+v", got)
	}
	if len(got.Sources) != 2 || got.Sources[0].Path != "policies/a.yaml" || string(got.Sources[1].Data) != "b" {
		t.Fatalf("sources: got %+v, want a.yaml then b.yaml", got.Sources)
	}
}

type entry struct {
	name     string
	body     string
	typeflag byte
	linkname string
}

// archive writes a .tar.gz with exactly the given entries.
func archive(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		tf := e.typeflag
		if tf == 0 {
			tf = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: tf, Size: int64(len(e.body)), Mode: 0o644, Linkname: e.linkname}
		if tf != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if tf == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

const goodManifest = `{"revision":"r","roots":["toolgate"],"wasm":[{"entrypoint":"toolgate/decision","module":"/policy.wasm"}]}`

func TestReadRefusesBadBundles(t *testing.T) {
	good := write(t, sample())
	bomb := func() []byte {
		// 200 MiB of zeros compress to about 200 KiB.
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		tw := tar.NewWriter(gz)
		tw.WriteHeader(&tar.Header{Name: "/policy.wasm", Typeflag: tar.TypeReg, Size: 200 << 20, Mode: 0o644})
		zeros := make([]byte, 1<<20)
		for i := 0; i < 200; i++ {
			tw.Write(zeros)
		}
		tw.Close()
		gz.Close()
		return buf.Bytes()
	}()
	for _, tc := range []struct {
		name string
		raw  []byte
		lim  Limits
		want error
		msg  string
	}{
		{"not gzip", []byte("plain text"), Limits{}, ErrCorrupt, "gzip"},
		{"truncated gzip", good[:len(good)/2], Limits{}, ErrCorrupt, ""},
		{"corrupt tar", func() []byte {
			var buf bytes.Buffer
			gz := gzip.NewWriter(&buf)
			gz.Write(bytes.Repeat([]byte("x"), 1024))
			gz.Close()
			return buf.Bytes()
		}(), Limits{}, ErrCorrupt, ""},
		{"missing policy.wasm", archive(t, entry{name: "/.manifest", body: goodManifest}), Limits{}, ErrInvalid, "policy.wasm"},
		{"missing manifest", archive(t, entry{name: "/policy.wasm", body: "x"}), Limits{}, ErrInvalid, ".manifest"},
		{"wrong entrypoint", archive(t,
			entry{name: "/.manifest", body: `{"wasm":[{"entrypoint":"other/rule","module":"/policy.wasm"}]}`},
			entry{name: "/policy.wasm", body: "x"}), Limits{}, ErrInvalid, "toolgate/decision"},
		{"manifest not JSON", archive(t, entry{name: "/.manifest", body: "{"}, entry{name: "/policy.wasm", body: "x"}), Limits{}, ErrInvalid, "manifest"},
		{"dot-dot entry", archive(t, entry{name: "../../etc/passwd", body: "x"}), Limits{}, ErrUnsafeEntry, ".."},
		{"nested dot-dot", archive(t, entry{name: "/sources/../../x", body: "x"}), Limits{}, ErrUnsafeEntry, ".."},
		{"absolute path outside", archive(t, entry{name: "//etc/passwd", body: "x"}), Limits{}, ErrUnsafeEntry, ""},
		{"symlink", archive(t, entry{name: "/policy.wasm", typeflag: tar.TypeSymlink, linkname: "/etc/passwd"}), Limits{}, ErrUnsafeEntry, "regular"},
		{"hard link", archive(t, entry{name: "/policy.wasm", typeflag: tar.TypeLink, linkname: "/x"}), Limits{}, ErrUnsafeEntry, "regular"},
		{"duplicate entry", archive(t,
			entry{name: "/.manifest", body: goodManifest},
			entry{name: "/policy.wasm", body: "a"},
			entry{name: "policy.wasm", body: "b"}), Limits{}, ErrUnsafeEntry, "twice"},
		{"gzip bomb", bomb, Limits{}, ErrTooLarge, "uncompressed"},
		{"archive over limit", good, Limits{MaxCompressed: 100}, ErrTooLarge, "archive"},
		{"too many entries", archive(t, entry{name: "/a", body: "1"}, entry{name: "/b", body: "2"}, entry{name: "/c", body: "3"}), Limits{MaxFiles: 2}, ErrTooLarge, "entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ReadBytes(tc.raw, tc.lim)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got (%v, %v), want error %v", b, err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	f.Add(write(f, sample()))
	f.Add(archive(f, entry{name: "/.manifest", body: goodManifest}, entry{name: "/policy.wasm", body: "x"}))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := ReadBytes(raw, Limits{MaxUncompressed: 1 << 20})
		if err == nil && (b == nil || b.Wasm == nil) {
			t.Fatal("Read accepted a bundle without policy.wasm")
		}
		if err != nil && !(errors.Is(err, ErrCorrupt) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnsafeEntry) || errors.Is(err, ErrTooLarge)) {
			t.Fatalf("error not wrapping a documented sentinel: %v", err)
		}
	})
}

func TestAppendJSONIsValidJSON(t *testing.T) {
	in := &Input{Server: "s\"x", Tool: "t\n\x01<>&\xff", Arguments: []byte(`{"a":1}`),
		Identity: Identity{Subject: "é", Groups: []string{"a", "b"}}, State: []CounterValue{{"t.c", 3}, {"_global.x", -1}}}
	got := string(in.AppendJSON(nil))
	want := `{"server":"s\"x","tool":{"name":"t\n\u0001<>&\ufffd","annotations":{}},"arguments":{"a":1},"identity":{"subject":"é","groups":["a","b"],"claims":{}},"state":{"t.c":3,"_global.x":-1}}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestParseInput(t *testing.T) {
	in, err := ParseInput([]byte(`{"server":"github","tool":{"name":"x","annotations":{"readOnlyHint":true}},"arguments":{"a":[1]},"identity":{"subject":"alice","groups":["eng"]},"state":{"x.c":3}}`))
	if err != nil {
		t.Fatal(err)
	}
	if in.Server != "github" || in.Tool != "x" || string(in.Arguments) != `{"a":[1]}` || in.State[0] != (CounterValue{"x.c", 3}) || in.Identity.Groups[0] != "eng" {
		t.Fatalf("got %+v", in)
	}
	for _, bad := range []string{`{"state":{"a":1.5}}`, `{"arguments":[1]}`, `{"bogus":1}`, `{`} {
		if _, err := ParseInput([]byte(bad)); err == nil {
			t.Errorf("ParseInput(%s): want an error", bad)
		}
	}
	// A value of the wrong type is named by its place and the shape it
	// should have (it was a Go struct type).
	for bad, want := range map[string]string{
		`{"tool":"create_refund"}`:      `tool must be an object {"name": …, "annotations": {…}}, not a JSON string`,
		`{"identity":{"groups":"eng"}}`: "identity.groups must be a list of strings, not a JSON string",
		`{"server":5}`:                  "server must be a string, not a JSON number",
	} {
		if _, err := ParseInput([]byte(bad)); err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "struct") {
			t.Errorf("ParseInput(%s): %v, want %q", bad, err, want)
		}
	}
}

// TestSourcesOutsideTheFolder: a build from "../policies" or an absolute
// path stores its sources inside the bundle, and the bundle loads.
func TestSourcesOutsideTheFolder(t *testing.T) {
	for path, want := range map[string]string{
		"../../policies/a.yaml": "policies/a.yaml",
		"/work/main/p/b.yaml":   "work/main/p/b.yaml",
		"policies/./c.yaml":     "policies/c.yaml",
		"x/../../d.yaml":        "d.yaml",
	} {
		if got := SourceEntry(path); got != want {
			t.Errorf("SourceEntry(%q) = %q, want %q", path, got, want)
		}
	}
	b := sample()
	b.Sources = []File{{Path: "../../policies/a.yaml", Data: []byte("version: \"1\"\n")}}
	var buf bytes.Buffer
	if err := Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	got, err := ReadBytes(buf.Bytes(), Limits{})
	if err != nil {
		t.Fatalf("a bundle built from ../ does not load: %v", err)
	}
	if len(got.Sources) != 1 || got.Sources[0].Path != "policies/a.yaml" {
		t.Fatalf("sources %+v", got.Sources)
	}
}

func TestCanonicalValue(t *testing.T) {
	cuts := []float64{-1e300, 2.5, 3, 10, 1e300}
	for _, tt := range []struct{ v, want int64 }{
		{-5, -(1 << 53) + 1}, {0, -(1 << 53) + 1}, {2, -(1 << 53) + 1}, // (-1e300, 2.5): the smallest whole number above -1e300 that is exact
		{3, 3}, {4, 4}, {9, 4}, {10, 10}, {11, 11}, {1 << 40, 11},
		{1 << 53, 1 << 53}, {1 << 62, 1 << 62}, {-(1 << 60), -(1 << 60)}, // too large to compare exactly: as they are
	} {
		if got := canonicalValue(tt.v, cuts); got != tt.want {
			t.Errorf("canonicalValue(%d) = %d, want %d", tt.v, got, tt.want)
		}
	}
	for _, tt := range []struct {
		v    int64
		cuts []float64
		want int64
	}{
		{7, nil, 0}, {7, []float64{}, 0}, // no condition reads it
		{1, []float64{1e300}, 1<<53 - 1}, {1, []float64{5}, 4}, {-9, []float64{-3.5}, -4},
	} {
		if got := canonicalValue(tt.v, tt.cuts); got != tt.want {
			t.Errorf("canonicalValue(%d, %v) = %d, want %d", tt.v, tt.cuts, got, tt.want)
		}
	}
}

// FuzzParseInput: ParseInput never panics, and what it accepts holds JSON
// objects where §6 wants them and counter values sorted by key.
func FuzzParseInput(f *testing.F) {
	f.Add([]byte(`{"server":"github","tool":{"name":"x","annotations":{"readOnlyHint":true}},"arguments":{"a":[1]},"identity":{"subject":"alice","groups":["eng"],"claims":{"k":1}},"state":{"x.c":3,"a.b":-1}}`))
	f.Add([]byte(`{"tool":"x"}`))
	f.Add([]byte(`{"arguments":null,"state":{"a":1e3}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := ParseInput(data)
		if err != nil {
			return
		}
		for name, raw := range map[string]json.RawMessage{"arguments": in.Arguments, "annotations": in.Annotations, "claims": in.Identity.Claims} {
			if raw != nil && (!json.Valid(raw) || raw[0] != '{') {
				t.Errorf("%s accepted as %s", name, raw)
			}
		}
		for i := 1; i < len(in.State); i++ {
			if in.State[i-1].Key >= in.State[i].Key {
				t.Errorf("state not sorted: %v", in.State)
			}
		}
	})
}
