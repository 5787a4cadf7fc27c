package bundles

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"strconv"
	"testing"
)

func TestNumbersAsFloat64(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`{"a":1}`, `{"a":1}`},
		{`{"a":9007199254740993}`, `{"a":9.007199254740992e+15}`},
		{`{"a":100.000000000000001,"b":[0.1,0.30000000000000004,-0]}`, `{"a":100,"b":[0.1,0.30000000000000004,-0]}`},
		{`{"a":1000000000000000000001}`, `{"a":1e+21}`},
		{`{"a":123456789012345678901234567890}`, `{"a":1.2345678901234568e+29}`},
		{`{"a":18446744073709551615}`, `{"a":1.8446744073709552e+19}`},
		{`{"a":5000000,"b":1e21,"c":1E21,"d":2.50}`, `{"a":5000000,"b":1e21,"c":1E21,"d":2.50}`},
		{`{"a":1e400,"b":-1e400,"c":1e-400}`, `{"a":1e400,"b":-1e400,"c":0}`},
		{`{"s":"9007199254740993","k\"9007199254740993":[{"9":9007199254740993}]}`, `{"s":"9007199254740993","k\"9007199254740993":[{"9":9.007199254740992e+15}]}`},
		{`{"s":"\\","n":12345678901234567}`, `{"s":"\\","n":1.2345678901234568e+16}`},
	} {
		if got := string(appendNumbersAsFloat64(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.in, got, tt.want)
		}
	}
}

// FuzzNumbersAsFloat64: each number comes out as a JSON number with the
// value of the float64 nearest to it (exactly), or unchanged when no
// float64 holds it; nothing else changes.
func FuzzNumbersAsFloat64(f *testing.F) {
	for _, s := range []string{"1", "-0", "0.1", "9007199254740993", "1e21", "123456789012345.6", "1234567890123456.7",
		"1.5e-250", "4.9e-324", "2.2250738585072014e-308", "1e400", "0.000000000000000000000000000001", "99999999999999999", "1e-7"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, num string) {
		var v json.Number
		if json.Unmarshal([]byte(num), &v) != nil || string(v) != num {
			return // not a JSON number
		}
		out := appendNumbersAsFloat64(nil, []byte(`{"x":[`+num+`,"`+num+`"]}`))
		var got struct{ X []json.RawMessage }
		if err := json.Unmarshal(out, &got); err != nil || len(got.X) != 2 || string(got.X[1]) != `"`+num+`"` {
			t.Fatalf("%s: output %s", num, out)
		}
		fl, err := strconv.ParseFloat(num, 64)
		if math.IsInf(fl, 0) {
			if string(got.X[0]) != num {
				t.Fatalf("%s, beyond float64: written %s, want it unchanged", num, got.X[0])
			}
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", num, err)
		}
		want, _ := new(big.Rat).SetString(strconv.FormatFloat(fl, 'g', -1, 64))
		have, ok := new(big.Rat).SetString(string(got.X[0]))
		if !ok || have.Cmp(want) != 0 {
			t.Fatalf("%s: written %s, whose value is not that of the float64 %s", num, got.X[0], strconv.FormatFloat(fl, 'g', -1, 64))
		}
	})
}

// TestReservationJSON: a reservation reads back as written, "amount": null
// when Invalid, and its strings are not HTML-escaped (toolgate eval prints
// messages as written).
func TestReservationJSON(t *testing.T) {
	five := int64(5)
	for _, r := range []Reservation{
		{Key: "t.a", Amount: 3, Limit: &five, Window: "day", Rule: "p#t/a", Message: "spend <= 1000 & more"},
		{Key: "t.b", Window: "hour", Rule: "p#t/b", Message: "m", Invalid: true},
	} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var enc bytes.Buffer
		e := json.NewEncoder(&enc)
		e.SetEscapeHTML(false)
		e.Encode(r)
		if r.Invalid != bytes.Contains(b, []byte(`"amount":null`)) || bytes.Contains(enc.Bytes(), []byte(`\u003c`)) {
			t.Errorf("%+v: marshalled %s / %s", r, b, enc.Bytes())
		}
		var got Reservation
		if err := json.Unmarshal(b, &got); err != nil || got.Invalid != r.Invalid || got.Amount != r.Amount || got.Message != r.Message || (got.Limit == nil) != (r.Limit == nil) {
			t.Errorf("%+v read back as %+v (%v)", r, got, err)
		}
	}
}
