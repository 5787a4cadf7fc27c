package opawasm

import (
	"context"
	"errors"
	"testing"
)

// withABIVersion returns a copy of an OPA module whose exported global
// opa_wasm_abi_version (a one-byte i32.const) is set to v.
func withABIVersion(t *testing.T, wasm []byte, v byte) []byte {
	t.Helper()
	out := append([]byte(nil), wasm...)
	sections := map[byte][2]int{} // id → [start, end) of the contents
	for i := 8; i < len(out); {
		id := out[i]
		size, n := readULEB(out[i+1:])
		start := i + 1 + n
		sections[id] = [2]int{start, start + int(size)}
		i = start + int(size)
	}
	// The export section (7) names the global's index.
	exp := sections[7]
	global := -1
	j := exp[0]
	count, n := readULEB(out[j:])
	j += n
	for k := uint64(0); k < count; k++ {
		l, n := readULEB(out[j:])
		j += n
		name := string(out[j : j+int(l)])
		j += int(l)
		kind := out[j]
		j++
		idx, n := readULEB(out[j:])
		j += n
		if kind == 3 && name == "opa_wasm_abi_version" {
			global = int(idx)
		}
	}
	if global < 0 {
		t.Fatal("no opa_wasm_abi_version export")
	}
	// The global section (6): type, mutability, then i32.const N, end.
	g := sections[6]
	j = g[0]
	count, n = readULEB(out[j:])
	j += n
	for k := 0; k < int(count); k++ {
		j += 2 // value type, mutability
		if out[j] != 0x41 {
			t.Fatalf("global %d: init is not i32.const", k)
		}
		_, n := readSLEB32(out[j+1:])
		if k == global {
			if n != 1 {
				t.Fatalf("global %d: init is %d bytes long, want 1", k, n)
			}
			out[j+1] = v
			return out
		}
		j += 1 + n + 1
	}
	t.Fatal("global not found")
	return nil
}

func TestWrongABIVersion(t *testing.T) {
	simple := fixture(t, "simple")
	if _, err := Compile(context.Background(), withABIVersion(t, simple, 1), nil); err != nil {
		t.Fatalf("the patch itself broke the module: %v", err)
	}
	_, err := Compile(context.Background(), withABIVersion(t, simple, 2), nil)
	if !errors.Is(err, ErrABI) {
		t.Fatalf("ABI version 2: got %v, want ErrABI", err)
	}
}
