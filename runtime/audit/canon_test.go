package audit

import (
	"bytes"
	"testing"
)

// canonCases are arguments in the shapes the direct scan writes and in
// those it leaves to encoding/json.
var canonCases = []string{
	`{}`, `{ }`, `[]`, `{"path":"/srv/a","text":"hello"}`,
	`{"b":1,"a":{"d":[1,2,{"z":true,"y":null}],"c":"x"}}`,
	` {"n": -0.5e+10, "m": 0, "k": 1E3, "j": 12.50} `,
	`{"html":"<a href=\"x\">&</a>"}`, `{"u":"caf\u00e9"}`, `{"raw":"café ☕"}`,
	`{"sep":"a` + "\u2028" + `b"}`, `{"a":1,"a":2}`, `{"a":1,"\u0061":2}`,
	`{"bad":"` + "\xff" + `"}`, `{"ctl":"a` + "\x01" + `"}`, `{"a":1} trailing`,
	`{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":tru}`, `{"a":truex}`, `{"a":[1,]}`, `{"a":1,}`,
	`"just a string"`, `42`, `[1,"two",{"three":3}]`, `{"deep":` + deep(70) + `}`,
	`{"big":123456789012345678901234567890}`, `{"e":"\/"}`, `{"t":"tab	in"}`,
}

func deep(n int) string {
	return string(bytes.Repeat([]byte("["), n)) + string(bytes.Repeat([]byte("]"), n))
}

// TestCanonicalMatchesEncodingJSON: wherever the direct scan writes a
// canonical form, it is encoding/json's; and ArgsSHA256 hashes
// encoding/json's form whether the scan wrote it or not.
func TestCanonicalMatchesEncodingJSON(t *testing.T) {
	direct := 0
	for _, in := range canonCases {
		checkCanonical(t, []byte(in))
		var c canonicalizer
		if _, ok := c.canonical([]byte(in)); ok {
			direct++
		}
		if got, want := ArgsSHA256([]byte(in)), hashHex(canonicalSlow([]byte(in))); got != want {
			t.Errorf("ArgsSHA256(%q) = %s, want %s", in, got, want)
		}
	}
	if direct < 8 {
		t.Errorf("only %d cases took the direct scan", direct)
	}
	if got := ArgsSHA256([]byte(`{"b":2,"a":1}`)); got != hashHex([]byte(`{"a":1,"b":2}`)) {
		t.Errorf("keys not sorted: %s", got)
	}
	if ArgsSHA256(nil) != hashHex([]byte("{}")) || ArgsSHA256([]byte(" null ")) != hashHex([]byte("{}")) {
		t.Error("absent or null arguments do not hash as {}")
	}
}

// checkCanonical fails t when the direct scan writes something other than
// encoding/json's canonical form of in.
func checkCanonical(t *testing.T, in []byte) {
	t.Helper()
	var c canonicalizer
	got, ok := c.canonical(in)
	if !ok {
		return
	}
	if want := canonicalSlow(in); !bytes.Equal(got, want) {
		t.Fatalf("canonical(%q) = %q, encoding/json: %q", in, got, want)
	}
}

func FuzzCanonical(f *testing.F) {
	for _, in := range canonCases {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		checkCanonical(t, in)
		// The pooled canonicalizer gives the same hash on reuse.
		if a, b := ArgsSHA256(in), ArgsSHA256(in); a != b {
			t.Fatalf("ArgsSHA256(%q) differs on reuse", in)
		}
	})
}

func BenchmarkArgsSHA256(b *testing.B) {
	args := []byte(`{"path":"/srv/a","text":"hello","opts":{"recursive":true,"depth":3}}`)
	b.Run("impl=direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ArgsSHA256(args)
		}
	})
	b.Run("impl=encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			hashHex(canonicalSlow(args))
		}
	})
}

// TestCanonicalPoolDropsLargeBuffers: a large argument's buffer does not
// stay in the pool.
func TestCanonicalPoolDropsLargeBuffers(t *testing.T) {
	big := []byte(`{"blob":"` + string(bytes.Repeat([]byte("a"), 1<<20)) + `"}`)
	c := &canonicalizer{}
	if _, ok := c.canonical(big); !ok || cap(c.out) < 1<<20 {
		t.Fatalf("the direct scan did not write the large argument (cap %d)", cap(c.out))
	}
	c.free()
	if cap(c.out) != 0 {
		t.Errorf("a pooled canonicalizer keeps a %d-byte buffer", cap(c.out))
	}
}
