package differential

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/test/model"
)

// TestNumbersAsPolicyLayerReadsThem: conditions compare a call's numbers
// as float64s, as PolicyLayer decodes them (docs/semantics-choices.md,
// choice 12), in the Wasm bundle and in the model alike.
func TestNumbersAsPolicyLayerReadsThem(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		cond, arg string
		allow     bool
	}{
		{`{path: args.n, op: lte, value: 100}`, `100.000000000000001`, true},
		{`{path: args.n, op: lt, value: 100}`, `99.9999999999999999`, false}, // its float64 is 100
		{`{path: args.n, op: gte, value: 9007199254740993}`, `9007199254740992`, true},
		{`{path: args.n, op: eq, value: 9007199254740992}`, `9007199254740993`, true},
		{`{path: args.n, op: eq, value: "9007199254740993"}`, `9007199254740993`, false}, // prints 9.007199254740992e+15
		{`{path: args.n, op: eq, value: "9.007199254740992e+15"}`, `9007199254740993`, true},
		{`{path: args.n, op: eq, value: "1e+21"}`, `1000000000000000000001`, true},
		{`{path: args.n, op: in, value: [0.3]}`, `0.30000000000000004`, false},
		{`{path: args.n, op: in, value: [0.3]}`, `0.299999999999999999999`, true},
		{`{path: args.l, op: contains, value: 5}`, `5.0000000000000001`, true},
		{`{path: args.n, op: gt, value: 1e308}`, `1e400`, true}, // beyond float64: exact
		{`{path: args.n, op: neq, value: 5}`, `5`, false},
	} {
		set, m := oneCondition(t, tt.cond)
		args := `{"n":` + tt.arg + `,"l":[` + tt.arg + `]}`
		d, err := m.Eval(ctx, &bundles.Input{Server: "srv", Tool: "t", Arguments: json.RawMessage(args)})
		if err != nil {
			t.Fatalf("%s with %s: %v", tt.cond, tt.arg, err)
		}
		doc := `{"server":"srv","tool":{"name":"t"},"arguments":` + args + `}`
		in, err := model.ParseInput([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		md := model.Decide(set, in)
		if got := d.Decision == bundles.Allow; got != tt.allow {
			t.Errorf("%s with %s: Wasm allows=%v, want %v", tt.cond, tt.arg, got, tt.allow)
		}
		if got := md.Decision == bundles.Allow; got != tt.allow {
			t.Errorf("%s with %s: the model allows=%v, want %v", tt.cond, tt.arg, got, tt.allow)
		}
	}
}
