package opawasm

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestNativeBuiltins records which builtins the OPA Wasm target compiles in
// (a module using them compiles here) and which it leaves to the host (the
// module is refused with ErrUnsupportedBuiltin). The compiler may emit only
// the native ones.
func TestNativeBuiltins(t *testing.T) {
	tests := []struct {
		call   string
		native bool
	}{
		{`regex.match("^a", input.tool.name)`, true},
		{`startswith(input.tool.name, "a")`, true},
		{`endswith(input.tool.name, "a")`, true},
		{`contains(input.tool.name, "a")`, true},
		{`is_number(input.arguments.x)`, true},
		{`is_string(input.arguments.x)`, true},
		{`object.get(input.arguments, "x", 0) == 1`, true},
		{`glob.match("a*", [], input.tool.name)`, true},
		{`sprintf("%v", [input.tool.name]) == "a"`, false},
		{`to_number(input.arguments.x) == 1`, true},
		{`format_int(input.arguments.x, 10) == "1"`, true},
		{`concat(",", [input.tool.name]) == "a"`, true},
		{`lower(input.tool.name) == "a"`, true},
		{`json.marshal(input.arguments) == "{}"`, true},
		{`count(object.keys(input.arguments)) == 1`, true},
		{`split(input.tool.name, ".")[0] == "a"`, true},
		{`regex.find_n("a", input.tool.name, 1) == ["a"]`, false},
		{`time.now_ns() > 0`, false},
		{`units.parse("1K") > 0`, false},
	}
	for _, tt := range tests {
		t.Run(tt.call, func(t *testing.T) {
			rego := fmt.Sprintf(`package toolgate

decision := {"decision": "deny", "rule": "r", "message": "m", "counters": [], "approval": null, "shadow": []} if {
	%s
}
`, tt.call)
			wasm := compileRego(t, rego)
			m, err := Compile(context.Background(), wasm, nil)
			if m != nil {
				m.Close()
			}
			gotNative := err == nil
			t.Logf("%s: native=%v err=%v", tt.call, gotNative, err)
			if err != nil && !errors.Is(err, ErrUnsupportedBuiltin) {
				t.Fatalf("Compile: %v", err)
			}
			if gotNative != tt.native {
				t.Errorf("native = %v, want %v (%v)", gotNative, tt.native, err)
			}
		})
	}
}
