package opawasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// The exports of the OPA ABI the runtime uses.
const (
	fnEval       = "opa_eval"
	fnMalloc     = "opa_malloc"
	fnJSONParse  = "opa_json_parse"
	fnJSONDump   = "opa_json_dump"
	fnHeapPtrGet = "opa_heap_ptr_get"
	fnHeapPtrSet = "opa_heap_ptr_set"
	fnBuiltins   = "builtins"
	fnEntrypoint = "entrypoints"
)

// instance is one instantiation of the policy with its own memory. It is not
// safe for concurrent use; the pool hands it to one caller at a time.
type instance struct {
	env, mod api.Module
	mem      api.Memory

	eval, malloc, jsonParse, jsonDump, heapPtrGet, heapPtrSet api.Function

	dataAddr uint32 // the parsed data document
	base     uint32 // heap pointer after the data: where each input is written
	stack    [7]uint64
	buf      []byte    // the encoded input
	args     []byte    // the projected arguments
	intern   *interner // strings and limits of this instance's decisions
	memoHits uint64    // decisions this instance took from the module's memo
}

// newInstance instantiates the policy of v and parses data into it.
func newInstance(ctx context.Context, v *variant, data []byte) (*instance, error) {
	env, err := v.rt.InstantiateModule(ctx, v.env, wazero.NewModuleConfig().WithName(""))
	if err != nil {
		return nil, fmt.Errorf("instantiating env module: %w", err)
	}
	rctx := experimental.WithImportResolver(ctx, func(name string) api.Module {
		if name == "env" {
			return env
		}
		return nil
	})
	mod, err := v.rt.InstantiateModule(rctx, v.policy, wazero.NewModuleConfig().WithName("").WithStartFunctions())
	if err != nil {
		_ = env.Close(ctx)
		return nil, fmt.Errorf("instantiating policy: %w", classify(err, nil))
	}
	i := &instance{env: env, mod: mod, mem: env.Memory(), intern: newInterner()}
	for _, f := range []struct {
		name string
		fn   *api.Function
	}{
		{fnEval, &i.eval}, {fnMalloc, &i.malloc}, {fnJSONParse, &i.jsonParse}, {fnJSONDump, &i.jsonDump},
		{fnHeapPtrGet, &i.heapPtrGet}, {fnHeapPtrSet, &i.heapPtrSet},
	} {
		if *f.fn = mod.ExportedFunction(f.name); *f.fn == nil {
			i.close()
			return nil, fmt.Errorf("%w: no export %s", ErrABI, f.name)
		}
	}
	if err := i.setData(ctx, data); err != nil {
		i.close()
		return nil, err
	}
	return i, nil
}

func (i *instance) setData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		data = []byte("{}")
	}
	addr, err := i.call(ctx, i.malloc, uint64(len(data)))
	if err != nil {
		return fmt.Errorf("allocating data: %w", err)
	}
	if !i.mem.Write(addr, data) {
		return fmt.Errorf("writing data: %w", ErrMemoryLimit)
	}
	if i.dataAddr, err = i.call(ctx, i.jsonParse, uint64(addr), uint64(len(data))); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidData, err)
	}
	if i.dataAddr == 0 {
		return ErrInvalidData
	}
	if i.base, err = i.call(ctx, i.heapPtrGet); err != nil {
		return err
	}
	return nil
}

// call calls fn outside the hot path and returns its i32 result, if any.
func (i *instance) call(ctx context.Context, fn api.Function, params ...uint64) (uint32, error) {
	res, err := fn.Call(ctx, params...)
	if err != nil {
		return 0, classify(err, i)
	}
	if len(res) == 0 {
		return 0, nil
	}
	return api.DecodeU32(res[0]), nil
}

// dumpJSON calls an export that returns an OPA value and returns the value
// as JSON.
func (i *instance) dumpJSON(ctx context.Context, export string) ([]byte, error) {
	fn := i.mod.ExportedFunction(export)
	if fn == nil {
		return nil, fmt.Errorf("%w: no export %s", ErrABI, export)
	}
	v, err := i.call(ctx, fn)
	if err != nil {
		return nil, fmt.Errorf("calling %s: %w", export, err)
	}
	s, err := i.call(ctx, i.jsonDump, uint64(v))
	if err != nil {
		return nil, fmt.Errorf("dumping %s: %w", export, err)
	}
	b, ok := i.cString(s, i.mem.Size())
	if !ok {
		return nil, fmt.Errorf("%w: %s gave no string", ErrABI, export)
	}
	return bytes.Clone(b), nil
}

// global reads an exported i32 global.
func (i *instance) global(name string) (uint32, bool) {
	g := i.mod.ExportedGlobal(name)
	if g == nil {
		return 0, false
	}
	return api.DecodeU32(g.Get()), true
}

// cString returns a view of the NUL-terminated string at addr, of at most
// max bytes; the view is valid until memory next changes.
func (i *instance) cString(addr, max uint32) ([]byte, bool) {
	size := i.mem.Size()
	if addr >= size {
		return nil, false
	}
	n := min(size-addr, max)
	b, ok := i.mem.Read(addr, n)
	if !ok {
		return nil, false
	}
	if end := bytes.IndexByte(b, 0); end >= 0 {
		return b[:end], true
	}
	return nil, false
}

// run evaluates the input in i.buf against the entrypoint and returns a view
// of the JSON result set. The heap is reset to base by opa_eval itself.
func (i *instance) run(ctx context.Context, entrypoint int32) ([]byte, error) {
	n := uint32(len(i.buf))
	end := uint64(i.base) + uint64(n)
	if end > uint64(i.mem.Size()) {
		if err := i.reserve(ctx, n); err != nil {
			return nil, err
		}
	}
	if !i.mem.Write(i.base, i.buf) {
		return nil, fmt.Errorf("writing input: %w", ErrMemoryLimit)
	}
	s := &i.stack
	s[0] = 0 // reserved
	s[1] = uint64(entrypoint)
	s[2] = uint64(i.dataAddr)
	s[3] = uint64(i.base)
	s[4] = uint64(n)
	s[5] = end // the heap starts after the input
	s[6] = 0   // want JSON, not an OPA value
	if err := i.eval.CallWithStack(ctx, s[:]); err != nil {
		return nil, classify(err, i)
	}
	res, ok := i.cString(api.DecodeU32(s[0]), i.mem.Size())
	if !ok {
		return nil, fmt.Errorf("%w: the result is not a string", ErrNoDecision)
	}
	return res, nil
}

// reserve grows memory so that n bytes fit at base. It allocates them with
// opa_malloc rather than growing memory from outside, so that the
// allocator's idea of the heap's top stays right.
func (i *instance) reserve(ctx context.Context, n uint32) error {
	limit := uint64(i.mem.Size())
	if max, ok := i.mem.Definition().Max(); ok {
		limit = uint64(max) * 65536
	}
	// opa_malloc adds a block header and grows by whole pages.
	if uint64(i.base)+uint64(n)+65536+64 > limit {
		return fmt.Errorf("input of %d bytes does not fit in memory: %w", n, ErrMemoryLimit)
	}
	if _, err := i.call(ctx, i.heapPtrSet, uint64(i.base)); err != nil {
		return err
	}
	if _, err := i.call(ctx, i.malloc, uint64(n)); err != nil {
		return err
	}
	if uint64(i.base)+uint64(n) > uint64(i.mem.Size()) {
		return fmt.Errorf("%w: opa_malloc did not grow memory", ErrABI)
	}
	return nil
}

func (i *instance) close() {
	ctx := context.Background()
	_ = i.mod.Close(ctx)
	_ = i.env.Close(ctx)
}

// classify turns an error from a Wasm call into one wrapping the package's
// sentinels. i, if not nil, is the instance whose memory holds an abort
// message.
func classify(err error, i *instance) error {
	var abort *abortError
	var exit *sys.ExitError
	switch {
	case errors.As(err, &abort):
		msg := "(message unreadable)"
		if i != nil {
			if b, ok := i.cString(abort.addr, 1024); ok {
				msg = string(b)
			}
		}
		if strings.HasPrefix(msg, "opa_malloc") {
			return fmt.Errorf("%w: %w: %s", ErrMemoryLimit, ErrAbort, msg)
		}
		return fmt.Errorf("%w: %s", ErrAbort, msg)
	case errors.Is(err, ErrUnsupportedBuiltin):
		return err
	case errors.As(err, &exit):
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return fmt.Errorf("%w: %w", ErrTimeout, context.DeadlineExceeded)
		case sys.ExitCodeContextCanceled:
			return fmt.Errorf("policy evaluation stopped: %w", context.Canceled)
		}
		return fmt.Errorf("%w: %v", ErrClosed, err)
	}
	return fmt.Errorf("%w: %v", ErrTrap, firstLine(err.Error()))
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
