package opawasm

import (
	"context"
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// hostModule is the name of the host module that implements the functions
// the policy imports from "env". Each instance gets its own "env" module (a
// tiny Wasm module, envWasm) that defines the instance's memory and
// re-exports these functions, because one Wasm module must provide both.
const hostModule = "toolgate_opa"

// envImports are the functions the OPA ABI has a policy import from "env",
// with their parameter counts (every parameter is an i32); the opa_builtinN
// return an i32, the others nothing.
var envImports = []struct {
	name   string
	params int
}{
	{"opa_abort", 1},
	{"opa_println", 1},
	{"opa_builtin0", 2},
	{"opa_builtin1", 3},
	{"opa_builtin2", 4},
	{"opa_builtin3", 5},
	{"opa_builtin4", 6},
}

// abortError is how opa_abort leaves the Wasm call: the host function panics
// with it, wazero recovers the panic and returns it wrapped. The message is
// read from memory afterwards, by the instance that owns that memory.
type abortError struct{ addr uint32 }

func (e *abortError) Error() string { return fmt.Sprintf("opa_abort(%#x)", e.addr) }

// builtinError is how a call of opa_builtinN leaves the Wasm call. It cannot
// happen with a module Compile accepted, which needs no builtins.
type builtinError struct{ id uint32 }

func (e *builtinError) Error() string {
	return fmt.Sprintf("%v: call of builtin #%d", ErrUnsupportedBuiltin, e.id)
}

func (e *builtinError) Unwrap() error { return ErrUnsupportedBuiltin }

// instantiateHost instantiates the host module in r.
func instantiateHost(ctx context.Context, r wazero.Runtime) error {
	i32 := api.ValueTypeI32
	b := r.NewHostModuleBuilder(hostModule)
	for _, imp := range envImports {
		params := make([]api.ValueType, imp.params)
		for i := range params {
			params[i] = i32
		}
		var results []api.ValueType
		var fn api.GoModuleFunc
		switch imp.name {
		case "opa_abort":
			fn = func(_ context.Context, _ api.Module, stack []uint64) {
				panic(&abortError{addr: api.DecodeU32(stack[0])})
			}
		case "opa_println":
			// toolgate's policies do not print; the output is dropped.
			fn = func(context.Context, api.Module, []uint64) {}
		default:
			results = []api.ValueType{i32}
			fn = func(_ context.Context, _ api.Module, stack []uint64) {
				panic(&builtinError{id: api.DecodeU32(stack[0])})
			}
		}
		b.NewFunctionBuilder().WithGoModuleFunction(fn, params, results).Export(imp.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// envWasm assembles the "env" module: it imports envImports from the host
// module, re-exports them, and defines and exports "memory" with the given
// minimum and maximum pages.
func envWasm(minPages, maxPages uint32) []byte {
	const (
		secType   = 1
		secImport = 2
		secMemory = 5
		secExport = 7
		funcType  = 0x60
		i32       = 0x7f
		kindFunc  = 0
		kindMem   = 2
	)
	var types, imports, exports []byte
	// One type per parameter count, 1…6; type index = params-1.
	types = uleb(types, 6)
	for n := 1; n <= 6; n++ {
		types = append(types, funcType)
		types = uleb(types, uint32(n))
		for range n {
			types = append(types, i32)
		}
		if n == 1 {
			types = append(types, 0)
		} else {
			types = append(types, 1, i32)
		}
	}
	imports = uleb(imports, uint32(len(envImports)))
	exports = uleb(exports, uint32(len(envImports)+1))
	for i, imp := range envImports {
		imports = name(imports, hostModule)
		imports = name(imports, imp.name)
		imports = append(imports, kindFunc)
		imports = uleb(imports, uint32(imp.params-1))
		exports = name(exports, imp.name)
		exports = append(exports, kindFunc)
		exports = uleb(exports, uint32(i))
	}
	exports = name(exports, "memory")
	exports = append(exports, kindMem, 0)
	mem := []byte{1, 1} // one memory; limits with a maximum
	mem = uleb(mem, minPages)
	mem = uleb(mem, maxPages)

	out := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	for _, sec := range []struct {
		id   byte
		body []byte
	}{{secType, types}, {secImport, imports}, {secMemory, mem}, {secExport, exports}} {
		out = append(out, sec.id)
		out = uleb(out, uint32(len(sec.body)))
		out = append(out, sec.body...)
	}
	return out
}

func uleb(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func name(b []byte, s string) []byte {
	b = uleb(b, uint32(len(s)))
	return append(b, s...)
}
