package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// rec is the i-th test record; its message length varies with i, so lines
// do not all have the same size.
func rec(i int) *Record {
	return &Record{Time: time.Unix(int64(i), 0), DecisionID: fmt.Sprintf("d%d", i), Tool: "echo", Decision: "allow",
		Message: strings.Repeat("m", i%13), ArgsSHA256: ArgsSHA256([]byte(`{"a":1}`))}
}

// write opens the log at path with opts, writes records from..to-1, and
// closes it.
func write(t testing.TB, path string, from, to int, opts ...Option) {
	t.Helper()
	l, err := Open(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < to; i++ {
		if err := l.Write(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// lines reads a file's lines, without their newlines.
func lines(t testing.TB, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func files(t testing.TB, path string) []string {
	t.Helper()
	fs, err := Files(path)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func verifyFiles(t testing.TB, fs []string, wantLines int) {
	t.Helper()
	n, head, err := VerifyFiles(fs)
	if err != nil || n != wantLines {
		t.Fatalf("VerifyFiles: got %d lines, %v; want %d, nil", n, err, wantLines)
	}
	last := lines(t, fs[len(fs)-1])
	if want := hashHex([]byte(last[len(last)-1])); head != want {
		t.Fatalf("head: got %s, want the last line's hash %s", head, want)
	}
}

func TestRotateAtSizeBoundary(t *testing.T) {
	for _, max := range []int64{1000, 1001, 1500, 4096} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			write(t, path, 0, 100, WithMaxBytes(max))
			fs := files(t, path)
			if len(fs) < 5 {
				t.Fatalf("%d files, want at least 5: %v", len(fs), fs)
			}
			for i, f := range fs {
				fi, err := os.Stat(f)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() > max {
					t.Errorf("%s: %d bytes, past the rotation size %d", f, fi.Size(), max)
				}
				if i+1 < len(fs) { // rotated no sooner than it had to be
					next := lines(t, fs[i+1])[0]
					if fi.Size()+int64(len(next))+1 <= max {
						t.Errorf("%s: rotated at %d bytes, but the next line (%d bytes with its newline) fit under %d", f, fi.Size(), len(next)+1, max)
					}
				}
			}
			verifyFiles(t, fs, 100)
		})
	}
}

func TestRotateLongRecordGetsItsOwnFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, WithMaxBytes(1000))
	if err != nil {
		t.Fatal(err)
	}
	long := rec(1)
	long.Message = strings.Repeat("x", 1000)
	for _, r := range []*Record{rec(0), long, rec(2)} {
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	fs := files(t, path)
	if len(fs) != 3 {
		t.Fatalf("got files %v, want 3: one before the long record, the long record alone, one after", fs)
	}
	if got := lines(t, fs[1]); len(got) != 1 || !strings.Contains(got[0], long.Message) {
		t.Fatalf("%s: got %d lines, want the long record alone", fs[1], len(got))
	}
	verifyFiles(t, fs, 3)
}

func TestRotateChainsAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	write(t, path, 0, 100, WithMaxBytes(2000))
	fs := files(t, path)
	if len(fs) < 6 {
		t.Fatalf("%d files, want at least 6", len(fs))
	}
	for i, f := range fs[:len(fs)-1] { // oldest first, numbered from 1, the active file last
		if want := filepath.Join(dir, fmt.Sprintf("audit.log.%06d", i+1)); f != want {
			t.Fatalf("file %d: got %s, want %s", i, f, want)
		}
	}
	if fs[len(fs)-1] != path {
		t.Fatalf("last file: got %s, want the active file %s", fs[len(fs)-1], path)
	}
	prev := Genesis
	total := 0
	for _, f := range fs {
		ls := lines(t, f)
		var first line
		if err := json.Unmarshal([]byte(ls[0]), &first); err != nil {
			t.Fatal(err)
		}
		if first.Prev != prev {
			t.Fatalf("%s:1: prev %s, want the hash of the line before it, in the file before, %s", f, first.Prev, prev)
		}
		prev = hashHex([]byte(ls[len(ls)-1]))
		total += len(ls)
	}
	if total != 100 {
		t.Fatalf("%d lines in all, want 100", total)
	}
	verifyFiles(t, fs, 100)
	// The files in order, named one by one, verify the same way.
	if _, _, err := VerifyFiles(fs[2:]); err == nil {
		t.Fatal("the files without the two oldest verified; want a break at the start")
	}
}

func TestReopenContinuesChain(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	write(t, path, 0, 30, WithMaxBytes(1000))
	before := files(t, path)
	write(t, path, 30, 60, WithMaxBytes(1000)) // from the active file's last line
	write(t, path, 60, 70)                     // without rotation, same chain
	fs := files(t, path)
	if len(fs) <= len(before) {
		t.Fatalf("files: %v then %v, want more after writing more", before, fs)
	}
	verifyFiles(t, fs, 70)

	// A rotation cut short after the rename: no active file. The chain
	// continues from the newest rotated file, whose number is not reused.
	// (With the active file last in fs, len(fs) is the next number.)
	if err := os.Rename(path, siblingPath(path, len(fs))); err != nil {
		t.Fatal(err)
	}
	write(t, path, 70, 75, WithMaxBytes(500))
	// An empty active file counts as none.
	if err := os.Rename(path, siblingPath(path, len(files(t, path)))); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, nil, 0o600)
	write(t, path, 75, 80, WithMaxBytes(500))
	verifyFiles(t, files(t, path), 80)

	// The active file cut short inside a line: Open refuses to continue.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"prev":"x"`)
	f.Close()
	if _, err := Open(path, WithMaxBytes(500)); err == nil {
		t.Fatal("opened a log whose last line is cut short")
	}
}

func TestRotateNeverOverwrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, WithMaxBytes(300))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// A file appears under the name the first rotation would take.
	foreign := siblingPath(path, 1)
	os.WriteFile(foreign, []byte("not ours\n"), 0o600)
	for i := range 10 {
		if err := l.Write(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := os.ReadFile(foreign); string(got) != "not ours\n" {
		t.Fatalf("%s was overwritten: %q", foreign, got)
	}
	if _, err := os.Stat(siblingPath(path, 2)); err != nil {
		t.Fatalf("the first rotation did not skip to the next number: %v", err)
	}
}

func TestOpenBadSize(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "a.log"), WithMaxBytes(-1)); err == nil {
		t.Fatal("opened with a negative rotation size")
	}
}

// TestRotateConcurrent writes from many goroutines while the log rotates;
// run it with -race.
func TestRotateConcurrent(t *testing.T) {
	const writers, each, max = 8, 200, 4096
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path, WithMaxBytes(max))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := l.Write(rec(w*each + i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	l.Close()
	fs := files(t, path)
	if len(fs) < 20 {
		t.Fatalf("%d files, want many rotations", len(fs))
	}
	seen := map[string]bool{}
	for _, f := range fs {
		if fi, _ := os.Stat(f); fi.Size() > max {
			t.Errorf("%s: %d bytes, past %d", f, fi.Size(), max)
		}
		for _, s := range lines(t, f) {
			var r line
			json.Unmarshal([]byte(s), &r)
			if seen[r.DecisionID] {
				t.Fatalf("%s written twice", r.DecisionID)
			}
			seen[r.DecisionID] = true
		}
	}
	if len(seen) != writers*each {
		t.Fatalf("%d distinct records, want %d", len(seen), writers*each)
	}
	verifyFiles(t, fs, writers*each)
}

func TestVerifyFilesTamper(t *testing.T) {
	// Each case gets a fresh log of 6+ files and changes it; the break must
	// be reported at file want (an index into the original files; -1 the
	// active file) and line wantLine.
	tests := []struct {
		name     string
		change   func(t *testing.T, fs []string) []string // returns the files to verify
		want     int
		wantLine int
	}{
		{"intact", func(t *testing.T, fs []string) []string { return fs }, 0, 0},
		{"middle file deleted", func(t *testing.T, fs []string) []string {
			must(t, os.Remove(fs[2]))
			return nil
		}, 3, 1},
		{"oldest file deleted", func(t *testing.T, fs []string) []string {
			must(t, os.Remove(fs[0]))
			return nil
		}, 1, 1},
		{"files swapped", func(t *testing.T, fs []string) []string {
			must(t, os.Rename(fs[2], fs[2]+".tmp"))
			must(t, os.Rename(fs[3], fs[2]))
			must(t, os.Rename(fs[2]+".tmp", fs[3]))
			return nil
		}, 2, 1},
		{"named out of order", func(t *testing.T, fs []string) []string {
			return []string{fs[0], fs[1], fs[3], fs[2], fs[4]}
		}, 3, 1},
		{"file cut at a line", func(t *testing.T, fs []string) []string {
			cut(t, fs[1], 1)
			return nil
		}, 2, 1},
		{"file cut inside a line", func(t *testing.T, fs []string) []string {
			data, _ := os.ReadFile(fs[1])
			must(t, os.WriteFile(fs[1], data[:len(data)-5], 0o600))
			return nil
		}, 1, -1},
		{"line edited", func(t *testing.T, fs []string) []string {
			edit(t, fs[3], 1)
			return nil
		}, 3, 3},
		{"last line of a file edited", func(t *testing.T, fs []string) []string {
			edit(t, fs[3], -1)
			return nil
		}, 4, 1},
		{"first line of a file edited", func(t *testing.T, fs []string) []string {
			edit(t, fs[4], 0)
			return nil
		}, 4, 2},
		{"line deleted in the active file", func(t *testing.T, fs []string) []string {
			ls := lines(t, fs[len(fs)-1])
			ls = append(ls[:1], ls[2:]...)
			must(t, os.WriteFile(fs[len(fs)-1], []byte(strings.Join(ls, "\n")+"\n"), 0o600))
			return nil
		}, -1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			write(t, path, 0, 100, WithMaxBytes(2000))
			fs := files(t, path)
			if len(fs) < 6 {
				t.Fatalf("%d files, want 6 or more", len(fs))
			}
			verify := tt.change(t, fs)
			if verify == nil {
				verify = files(t, path)
			}
			_, _, err := VerifyFiles(verify)
			if tt.wantLine == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			want := fs[(tt.want+len(fs))%len(fs)]
			wantLine := tt.wantLine
			if wantLine < 0 {
				wantLine = len(lines(t, want))
			}
			var ce *ChainError
			if !errors.As(err, &ce) || ce.File != want || ce.Line != wantLine {
				t.Fatalf("got %v, want a break at %s:%d", err, want, wantLine)
			}
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("%s:%d: ", want, wantLine)) {
				t.Fatalf("message %q does not start with FILE:LINE", err)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// cut removes the last n lines of the file.
func cut(t *testing.T, f string, n int) {
	ls := lines(t, f)
	must(t, os.WriteFile(f, []byte(strings.Join(ls[:len(ls)-n], "\n")+"\n"), 0o600))
}

// edit changes line i (from 0; -1 the last) of the file, keeping it valid.
func edit(t *testing.T, f string, i int) {
	ls := lines(t, f)
	if i < 0 {
		i = len(ls) - 1
	}
	ls[i] = strings.Replace(ls[i], `"allow"`, `"deny"`, 1)
	must(t, os.WriteFile(f, []byte(strings.Join(ls, "\n")+"\n"), 0o600))
}

func TestWriteArguments(t *testing.T) {
	tests := []struct {
		name string
		args json.RawMessage
		want string // the "arguments" field as written; "" for none
	}{
		{"none", nil, ""},
		{"object", json.RawMessage("{\n  \"path\": \"/etc/passwd\",\n  \"n\": 1.50, \"s\": \"a\\nb <&>\"\n}\n"), `{"path":"/etc/passwd","n":1.50,"s":"a\nb <&>"}`},
		{"empty", json.RawMessage{}, `null`},
		{"not JSON", json.RawMessage("{\"a\":\n"), `"{\"a\":\n"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.log")
			l, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			r := rec(1)
			r.Arguments = tt.args
			if err := l.Write(r); err != nil {
				t.Fatal(err)
			}
			l.Write(rec(2))
			l.Close()
			ls := lines(t, path)
			if len(ls) != 2 {
				t.Fatalf("got %d lines, want 2: %q", len(ls), ls)
			}
			var got line
			if err := json.Unmarshal([]byte(ls[0]), &got); err != nil {
				t.Fatal(err)
			}
			if string(got.Arguments) != tt.want {
				t.Errorf("arguments: got %s, want %s", got.Arguments, tt.want)
			}
			if tt.want == "" && strings.Contains(ls[0], `"arguments"`) {
				t.Errorf("a record without arguments wrote the field: %s", ls[0])
			}
			if !strings.HasSuffix(ls[0], `,"prev":"`+Genesis+`"}`) {
				t.Errorf("prev is not the last field: %s", ls[0])
			}
			verifyFiles(t, []string{path}, 2)
		})
	}
}

// FuzzWrite checks that any record, arguments included, is written as one
// line that verifies and reads back.
func FuzzWrite(f *testing.F) {
	f.Add("d", "allow", "msg \" <x>", []byte(`{"a": [1, 2]}`), true, "")
	f.Add("d\n", "deny", "line\nbreak\x00\xff", []byte("{\"a\":\n\"\u2028\"}"), true, "eng\n\xff")
	f.Add("", "", "", []byte("not json\n"), false, "ops")
	f.Fuzz(func(t *testing.T, id, decision, message string, args []byte, withArgs bool, group string) {
		r := &Record{Time: time.Unix(1, 0), DecisionID: id, Decision: decision, Message: message}
		if withArgs {
			r.Arguments = args
		}
		if group != "" { // a caller's group, and a shadow outcome
			r.Groups = []string{group, "b"}
			r.Shadow = []Shadow{{Outcome: "would_deny", Rule: group, Message: message}}
		}
		b := appendLine(nil, r, Genesis)
		if bytes.IndexByte(b, '\n') >= 0 {
			t.Fatalf("a newline inside the line: %q", b)
		}
		b = append(b, '\n')
		if n, err := Verify(bytes.NewReader(b)); n != 1 || err != nil {
			t.Fatalf("Verify: %d, %v; line %q", n, err, b)
		}
		var got line
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("line %q: %v", b, err)
		}
		if withArgs != (got.Arguments != nil) {
			t.Fatalf("arguments given %v, read back %q", withArgs, got.Arguments)
		}
		if (group != "") != (len(got.Groups) == 2 && len(got.Shadow) == 1 && got.Shadow[0].Outcome == "would_deny") {
			t.Fatalf("group %q: read back groups %q, shadow %+v", group, got.Groups, got.Shadow)
		}
	})
}

// FuzzVerify checks that Verify's line parser never panics and that what it
// reports is consistent with its input.
func FuzzVerify(f *testing.F) {
	path := filepath.Join(f.TempDir(), "audit.log")
	write(f, path, 0, 4)
	data, _ := os.ReadFile(path)
	f.Add(data)
	f.Add(data[:len(data)-3])
	f.Add([]byte("{\"prev\":\"" + Genesis + "\"}\n"))
	f.Add([]byte("{\"prev\":null}\n[]\n\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		n, err := Verify(bytes.NewReader(in))
		newlines := bytes.Count(in, []byte("\n"))
		if err == nil {
			if len(in) > 0 && in[len(in)-1] != '\n' || n != newlines {
				t.Fatalf("intact with %d lines, but the input has %d newlines (ends %q)", n, newlines, in[max(len(in)-1, 0):])
			}
			return
		}
		var ce *ChainError
		if !errors.As(err, &ce) {
			t.Fatalf("not a *ChainError: %v", err)
		}
		if ce.Line != n || n < 1 || n > newlines+1 || ce.File != "" || ce.Reason == "" {
			t.Fatalf("error %+v after %d lines of an input with %d newlines", ce, n, newlines)
		}
	})
}

func BenchmarkWrite(b *testing.B) {
	for _, max := range []int64{0, 1 << 20} {
		b.Run(fmt.Sprintf("max=%d", max), func(b *testing.B) {
			l, err := Open(filepath.Join(b.TempDir(), "audit.log"), WithMaxBytes(max))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			r := rec(7)
			b.ReportAllocs()
			for b.Loop() {
				if err := l.Write(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestChainOrder: the files of one log, in any order (a shell glob lists
// the live file first), come back in chain order; files of several names
// keep the order given.
func TestChainOrder(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"a.log", "a.log.000001", "a.log.000010", "a.log.000002"}, []string{"a.log.000001", "a.log.000002", "a.log.000010", "a.log"}},
		{[]string{"d/a.log.000003", "d/a.log.000001"}, []string{"d/a.log.000001", "d/a.log.000003"}},
		{[]string{"a.log.1000000", "a.log.999999", "a.log"}, []string{"a.log.999999", "a.log.1000000", "a.log"}},
		{[]string{"b.log", "a.log.000001"}, []string{"b.log", "a.log.000001"}},
		{[]string{"a.log.000002", "a.log.000001", "copy/a.log.000003"}, []string{"a.log.000002", "a.log.000001", "copy/a.log.000003"}},
		{[]string{"x.2026", "x"}, []string{"x.2026", "x"}}, // "x.2026" is x's rotated file
		{[]string{"audit.1", "audit.1.000002", "audit.1.000001"}, []string{"audit.1.000001", "audit.1.000002", "audit.1"}},
		{[]string{"./a.log", "a.log.000001"}, []string{"a.log.000001", "./a.log"}},
		{[]string{"a.log", "a.log.000001", "a.log.old"}, []string{"a.log", "a.log.000001", "a.log.old"}},
		{[]string{"a.log"}, []string{"a.log"}},
	} {
		if got := ChainOrder(slices.Clone(tc.in)); !slices.Equal(got, tc.want) {
			t.Errorf("ChainOrder(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestOpenMakesTheFolder: a log in a folder that does not exist yet gets
// the folder, for its owner only.
func TestOpenMakesTheFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "log", "toolgate")
	write(t, filepath.Join(dir, "audit.log"), 0, 2)
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("folder mode %v; want 0700", st.Mode().Perm())
	}
	if got := lines(t, filepath.Join(dir, "audit.log")); len(got) != 2 {
		t.Fatalf("%d lines, want 2", len(got))
	}
}
