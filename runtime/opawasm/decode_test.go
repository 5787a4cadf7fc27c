package opawasm

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/toolgate/toolgate/bundles"
)

func TestDecodeResult(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bundles.Decision
		err  error
	}{
		{"allow", `[{"result":{"decision":"allow","rule":"","message":"","counters":[],"approval":null,"shadow":[]}}]`,
			bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{}, Shadow: []bundles.ShadowOutcome{}}, nil},
		{"escapes fall back", `[{"result":{"decision":"deny","message":"a \"b\" \u00e9"}}]`,
			bundles.Decision{Decision: bundles.Deny, Message: `a "b" é`}, nil},
		{"unknown key falls back", `[{"result":{"decision":"deny","extra":[1,{"x":2}]}}]`,
			bundles.Decision{Decision: bundles.Deny}, nil},
		{"counters", `[{"result":{"decision":"allow","counters":[{"key":"k","amount":2,"limit":null,"window":"day","rule":"r","message":"m"},{"key":"k2","amount":1,"limit":-3}]}}]`,
			bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{
				{Key: "k", Amount: 2, Window: "day", Rule: "r", Message: "m"}, {Key: "k2", Amount: 1, Limit: i64(-3)},
			}}, nil},
		{"undefined", `[]`, bundles.Decision{}, ErrNoDecision},
		{"no result", `[{}]`, bundles.Decision{}, ErrNoDecision},
		{"two results", `[{"result":{"decision":"allow"}},{"result":{"decision":"allow"}}]`, bundles.Decision{}, ErrNoDecision},
		{"bad outcome", `[{"result":{"decision":"maybe"}}]`, bundles.Decision{}, ErrNoDecision},
		{"not an object", `[{"result":"allow"}]`, bundles.Decision{}, ErrNoDecision},
		{"float amount", `[{"result":{"decision":"allow","counters":[{"amount":1.5}]}}]`, bundles.Decision{}, ErrNoDecision},
		{"no amount", `[{"result":{"decision":"allow","counters":[{"key":"k","amount":null}]}}]`,
			bundles.Decision{Decision: bundles.Allow, Counters: []bundles.Reservation{{Key: "k", Invalid: true}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got bundles.Decision
			err := decodeResult([]byte(tt.in), &got)
			if !errors.Is(err, tt.err) {
				t.Fatalf("decodeResult: %v, want %v", err, tt.err)
			}
			if err == nil && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeResultAllocs(t *testing.T) {
	b := []byte(`[{"result":{"decision":"allow","rule":"","message":"","counters":[],"approval":null,"shadow":[]}}]`)
	var d bundles.Decision
	if n := testing.AllocsPerRun(100, func() { _ = decodeResult(b, &d) }); n != 0 {
		t.Errorf("decoding an allow decision allocates %v times", n)
	}
}

// FuzzDecodeResult checks that the fast decoder agrees with encoding/json.
func FuzzDecodeResult(f *testing.F) {
	for _, s := range []string{
		`[{"result":{"decision":"allow","rule":"","message":"","counters":[],"approval":null,"shadow":[]}}]`,
		`[{"result":{"decision":"require_approval","rule":"r","approval":{"rule":"r","timeout_seconds":1800},"shadow":[{"would":"deny","rule":"x","message":"y"}]}}]`,
		`[{"result":{"decision":"allow","counters":[{"key":"k","amount":2,"limit":5,"window":"hour","rule":"r","message":"m"}]}}]`,
		`[{"result":{"decision":"allow","counters":[{"key":"k","amount":null,"limit":5,"window":"hour","rule":"r","message":"m"},{"key":"j","limit":null}]}}]`,
		`[]`, `[{"result":null}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got bundles.Decision
		err := decodeResult(b, &got)
		var want bundles.Decision
		wantErr := decodeResultSlow(b, &want)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("decodeResult(%q): %v; encoding/json: %v", b, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			t.Fatalf("decodeResult(%q):\n got  %s\n want %s", b, g, w)
		}
	})
}

// TestDecodeCompactExponentAmount: OPA's Wasm prints the floor of a large
// float64 amount in exponent form; it is read exactly, as a whole number
// within int64, and anything else is still refused.
func TestDecodeCompactExponentAmount(t *testing.T) {
	compact := &bundles.Compact{Counters: []bundles.Reservation{{Key: "t.spent", Window: "day", Rule: "r", Message: "m", Limit: i64(1000)}}}
	for _, tt := range []struct {
		amount string
		want   int64
		ok     bool
	}{
		{"9.223372036854775e+18", 9223372036854775000, true},
		{"1e+18", 1000000000000000000, true},
		{"-2.5e1", -25, true}, {"1.5", 0, false}, {"9.3e+18", 0, false}, {`"5"`, 0, false},
		{"null", 0, true}, // no amount: Invalid, checked below
		{"1e999999999999999999999999999999999999999", 0, false},
	} {
		var d bundles.Decision
		err := decodeResultInterned([]byte(`[{"result":{"decision":"allow","counters":[[0,`+tt.amount+`]]}}]`), &d, nil, compact)
		if tt.ok != (err == nil) || tt.ok && (len(d.Counters) != 1 || d.Counters[0].Amount != tt.want || d.Counters[0].Key != "t.spent" || d.Counters[0].Invalid != (tt.amount == "null")) {
			t.Errorf("amount %s: got %+v, %v; want %d (ok %v)", tt.amount, d.Counters, err, tt.want, tt.ok)
		}
	}
}
