package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeLog(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	for round := 0; round < 2; round++ { // reopening continues the chain
		l, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			err := l.Write(&Record{Time: time.Unix(int64(i), 0), DecisionID: "d", Tool: "echo", Decision: "allow",
				Message: "quote \" and <html>", ArgsSHA256: ArgsSHA256([]byte(`{"a":1}`))})
			if err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
	}
	return path
}

func TestVerify(t *testing.T) {
	path := writeLog(t, 3)
	data, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(data), "\n")
	lines = lines[:len(lines)-1] // the empty tail after the last newline
	if n, err := Verify(bytes.NewReader(data)); err != nil || n != 6 {
		t.Fatalf("intact log: got %d, %v; want 6, nil", n, err)
	}
	if !strings.HasPrefix(lines[0], `{"time":"1970-01-01T00:00:00Z","decision_id":"d"`) || !strings.Contains(lines[0], `"prev":"`+Genesis+`"`) {
		t.Fatalf("first line: %s", lines[0])
	}
	tests := []struct {
		name     string
		change   func([]string) []string
		wantLine int
	}{
		{"edit", func(l []string) []string { l[2] = strings.Replace(l[2], "allow", "deny!", 1); return l }, 4},
		{"delete", func(l []string) []string { return append(l[:1], l[2:]...) }, 2},
		{"reorder", func(l []string) []string { l[3], l[4] = l[4], l[3]; return l }, 4},
		{"first prev", func(l []string) []string { return l[1:] }, 1},
		{"garbage", func(l []string) []string { l[1] = "not json\n"; return l }, 2},
		{"cut", func(l []string) []string { l[5] = l[5][:10]; return l }, 6},
	}
	for _, tt := range tests {
		l := tt.change(append([]string(nil), lines...))
		_, err := Verify(strings.NewReader(strings.Join(l, "")))
		var ce *ChainError
		if !errors.As(err, &ce) || ce.Line != tt.wantLine {
			t.Errorf("%s: got %v, want a break at line %d", tt.name, err, tt.wantLine)
		}
	}
}

func TestArgsSHA256Canonical(t *testing.T) {
	a := ArgsSHA256([]byte(`{"b": [1, 2.50], "a": {"y": "<", "x": null}}`))
	b := ArgsSHA256([]byte(`{"a":{"x":null,"y":"<"},"b":[1,2.50]}`))
	if a != b {
		t.Fatalf("same arguments hash differently: %s %s", a, b)
	}
	if ArgsSHA256(nil) != ArgsSHA256([]byte(`{}`)) || ArgsSHA256([]byte("null")) != ArgsSHA256(nil) {
		t.Fatal("absent and null arguments must hash as {}")
	}
	if a == ArgsSHA256([]byte(`{"a":{"x":null,"y":"<"},"b":[1,2.5]}`)) {
		t.Fatal("numbers are hashed as written")
	}
}

func TestWriteAfterClose(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "a.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := l.Write(&Record{}); err == nil {
		t.Fatal("write after close succeeded")
	}
}

func TestOpenIncompleteLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.jsonl")
	os.WriteFile(path, []byte(`{"prev":"x"`), 0o600)
	if _, err := Open(path); err == nil {
		t.Fatal("opened a log whose last line is cut short")
	}
}
