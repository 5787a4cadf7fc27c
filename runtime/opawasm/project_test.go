package opawasm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/bundles"
)

func lookup(v any, path []string) (any, bool) {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func TestProjection(t *testing.T) {
	p := newProjection([][]string{{"amount"}, {"o", "x"}, {"o", "y", "z"}, {"é"}, {"a.b"}, {"list"}})
	for _, tc := range []struct{ in, want string }{
		{`{}`, `{}`},
		{`{"amount":5,"body":"a very long payload the policy never reads"}`, `{"amount":5}`},
		{`{"o":{"x":1,"w":2,"y":{"z":[1,2],"q":3}},"amount":null}`, `{"o":{"x":1,"y":{"z":[1,2]}},"amount":null}`},
		{`{"o":"not an object","list":[{"a":1}]}`, `{"o":null,"list":[{"a":1}]}`},
		{`{"\u00e9":1,"a.b":2,"a":{"b":3}}`, `{"\u00e9":1,"a.b":2}`},
		{` { "amount" : 1 , "amount" : 2 } `, `{"amount":1,"amount":2}`},
	} {
		got := string(p.appendProjected(nil, []byte(tc.in)))
		if got != tc.want {
			t.Errorf("project(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if got := string(newProjection(nil).appendProjected(nil, []byte(`{"a":1}`))); got != `{}` {
		t.Errorf("no paths: got %s, want {}", got)
	}
}

func TestProjectionAllocs(t *testing.T) {
	p := newProjection([][]string{{"amount"}, {"o", "x"}})
	in := []byte(`{"amount":5,"o":{"x":1,"y":2},"body":"` + strings.Repeat("x", 1000) + `"}`)
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = p.appendProjected(buf[:0], in) }); n != 0 {
		t.Fatalf("%v allocations per projection, want 0", n)
	}
}

// FuzzProjection: for any JSON object and paths, every path reads the same
// value from the projection as from the original, and the projection is
// valid JSON.
func FuzzProjection(f *testing.F) {
	f.Add(`{"a":{"b":1,"c":[1,{"d":2}]},"e":"x","\u0061":3}`, "a.b,e,a.c.d,f")
	f.Add(`{"a":1,"a":{"b":2}}`, "a.b,a")
	f.Add(`{"k\"q":{"\ud83d\ude00":true}}`, "k\"q.😀")
	f.Fuzz(func(t *testing.T, raw, pathList string) {
		if checkJSON([]byte(raw), 64) != jsonOK || !isObject([]byte(raw)) {
			return
		}
		var paths [][]string
		for _, p := range strings.Split(pathList, ",") {
			if p != "" {
				paths = append(paths, strings.Split(p, "."))
			}
		}
		out := newProjection(paths).appendProjected(nil, []byte(raw))
		if !json.Valid(out) {
			t.Fatalf("projection of %s by %q is not JSON: %s", raw, pathList, out)
		}
		var orig, proj any
		dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
		dec.UseNumber()
		if dec.Decode(&orig) != nil {
			return
		}
		dec = json.NewDecoder(bytes.NewReader(out))
		dec.UseNumber()
		if err := dec.Decode(&proj); err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			a, okA := lookup(orig, p)
			b, okB := lookup(proj, p)
			if okA != okB || !reflect.DeepEqual(a, b) {
				t.Fatalf("path %q: original %v (%v), projected %v (%v)\nraw:  %s\nproj: %s", p, a, okA, b, okB, raw, out)
			}
		}
	})
}

// TestArgumentLimits: with a projection, a call's raw arguments may exceed
// the Wasm input limit (only the projected part is sent) but not the raw
// argument limit.
func TestArgumentLimits(t *testing.T) {
	m := mustCompile(t, fixture(t, "simple"), WithMaxInputBytes(4096), WithMaxArgumentBytes(64<<10),
		WithArgumentPaths([][]string{{"title"}}))
	big := bundles.Input{Arguments: []byte(`{"title":"t","body":"` + strings.Repeat("x", 32<<10) + `"}`)}
	if _, err := m.Eval(context.Background(), &big); err != nil {
		t.Fatalf("32 KiB of arguments the policy does not read: %v, want a decision", err)
	}
	huge := bundles.Input{Arguments: []byte(`{"title":"t","body":"` + strings.Repeat("x", 65<<10) + `"}`)}
	if _, err := m.Eval(context.Background(), &huge); !errors.Is(err, ErrInputTooLarge) {
		t.Fatalf("65 KiB of arguments: %v, want ErrInputTooLarge", err)
	}
}
