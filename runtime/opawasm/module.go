package opawasm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"

	"github.com/toolgate/toolgate/bundles"
)

// Module is a compiled policy with its pools of instances.
//
// Module is safe for concurrent use: each Eval takes an instance of its own
// from a pool. The caller of [Compile] must call Close once no Eval is in
// flight; Close frees the compiled code and every instance.
type Module struct {
	o          options
	data       []byte
	entrypoint int32
	// fast runs inputs up to the guard threshold with no termination checks;
	// guarded runs larger inputs under a deadline.
	fast, guarded *variant
	// memo remembers recent decisions by encoded input; nil when off.
	memo   *memo
	closed atomic.Bool
}

// variant is the policy compiled by one wazero runtime, and the idle
// instances of that runtime.
type variant struct {
	rt     wazero.Runtime
	policy wazero.CompiledModule
	env    wazero.CompiledModule
	pool   pool
}

// Compile compiles an OPA-produced policy.wasm whose toolgate/decision
// entrypoint decides, with data as its data document (nil means {}). It
// compiles the module twice, with and without termination checks (see
// [WithGuardThreshold]), instantiates it once and checks the ABI version,
// the entrypoint and the builtins the module needs.
//
// Errors wrap [ErrInvalidModule], [ErrABI], [ErrUnsupportedBuiltin],
// [ErrInvalidData] or [ErrMemoryLimit]. The caller must Close the Module.
func Compile(ctx context.Context, wasm, data []byte, opts ...Option) (*Module, error) {
	m := &Module{o: newOptions(opts), data: bytes0(data)}
	m.memo = newMemo(m.o.memoSlots, m.o.memoMaxInput)
	wazeroReady.Do(warmWazero)
	var wg sync.WaitGroup
	var errFast, errGuarded error
	wg.Add(2)
	go func() { defer wg.Done(); m.fast, errFast = compileVariant(ctx, wasm, m.o, false) }()
	go func() { defer wg.Done(); m.guarded, errGuarded = compileVariant(ctx, wasm, m.o, true) }()
	wg.Wait()
	if err := errors.Join(errFast, errGuarded); err != nil {
		m.Close()
		if errFast != nil {
			return nil, errFast // the two say the same
		}
		return nil, err
	}
	if err := m.check(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// wazeroReady makes one runtime before the first pair of parallel
// compilations: wazero v1.12.0 fills a package-level version cache lazily,
// without synchronisation, on a runtime's first use, so two runtimes made
// at once in a fresh process race on it (the race detector reports it).
var wazeroReady sync.Once

func warmWazero() {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	rt.Close(ctx)
}

func bytes0(b []byte) []byte {
	if len(b) == 0 {
		return []byte("{}")
	}
	return b
}

// requiredExports are the functions of the ABI Compile checks for, with
// their parameter and result counts.
var requiredExports = []struct {
	name            string
	params, results int
}{
	{fnEval, 7, 1}, {fnMalloc, 1, 1}, {fnJSONParse, 2, 1}, {fnJSONDump, 1, 1},
	{fnHeapPtrGet, 0, 1}, {fnHeapPtrSet, 1, 0}, {fnBuiltins, 0, 1}, {fnEntrypoint, 0, 1},
}

func compileVariant(ctx context.Context, wasm []byte, o options, guarded bool) (*variant, error) {
	cfg := wazero.NewRuntimeConfigCompiler().
		WithMemoryLimitPages(o.memoryLimitPages).
		WithCloseOnContextDone(guarded)
	if o.cache != nil {
		cfg = cfg.WithCompilationCache(o.cache)
	}
	v := &variant{rt: wazero.NewRuntimeWithConfig(ctx, cfg), pool: newPool(o.maxIdle)}
	fail := func(err error) (*variant, error) {
		_ = v.rt.Close(ctx)
		return nil, err
	}
	var err error
	if v.policy, err = v.rt.CompileModule(ctx, wasm); err != nil {
		return fail(fmt.Errorf("%w: %v", ErrInvalidModule, err))
	}
	exports := v.policy.ExportedFunctions()
	for _, want := range requiredExports {
		def, ok := exports[want.name]
		if !ok {
			if want.name == fnEval {
				return fail(fmt.Errorf("%w: no export %s (ABI 1.2 or later is needed)", ErrABI, want.name))
			}
			return fail(fmt.Errorf("%w: no export %s", ErrABI, want.name))
		}
		if len(def.ParamTypes()) != want.params || len(def.ResultTypes()) != want.results {
			return fail(fmt.Errorf("%w: export %s has the wrong signature", ErrABI, want.name))
		}
	}
	for _, def := range v.policy.ImportedFunctions() {
		mod, name, _ := def.Import()
		if !knownImport(mod, name, len(def.ParamTypes())) {
			return fail(fmt.Errorf("%w: unknown import %s.%s", ErrInvalidModule, mod, name))
		}
	}
	mems := v.policy.ImportedMemories()
	if len(mems) != 1 {
		return fail(fmt.Errorf("%w: the module imports %d memories, want env.memory", ErrInvalidModule, len(mems)))
	}
	if mod, name, _ := mems[0].Import(); mod != "env" || name != "memory" {
		return fail(fmt.Errorf("%w: the module imports memory %s.%s, want env.memory", ErrInvalidModule, mod, name))
	}
	minPages := mems[0].Min()
	end, err := dataEnd(wasm)
	if err != nil {
		return fail(fmt.Errorf("%w: %v", ErrInvalidModule, err))
	}
	if need := uint32((end + pageSize - 1) / pageSize); need > minPages {
		minPages = need
	}
	if minPages > o.memoryLimitPages {
		return fail(fmt.Errorf("%w: the module needs %d pages at start, the limit is %d", ErrMemoryLimit, minPages, o.memoryLimitPages))
	}
	if err := instantiateHost(ctx, v.rt); err != nil {
		return fail(fmt.Errorf("instantiating host functions: %w", err))
	}
	if v.env, err = v.rt.CompileModule(ctx, envWasm(minPages, o.memoryLimitPages)); err != nil {
		return fail(fmt.Errorf("compiling env module: %w", err))
	}
	return v, nil
}

func knownImport(mod, name string, params int) bool {
	if mod != "env" {
		return false
	}
	for _, imp := range envImports {
		if imp.name == name {
			return imp.params == params
		}
	}
	return false
}

// check creates the first instance, checks the ABI version, the builtins
// and the entrypoint, and keeps the instance in the fast pool.
func (m *Module) check(ctx context.Context) error {
	inst, err := newInstance(ctx, m.fast, m.data)
	if err != nil {
		return err
	}
	defer func() {
		if inst != nil {
			inst.close()
		}
	}()
	major, ok1 := inst.global("opa_wasm_abi_version")
	minor, ok2 := inst.global("opa_wasm_abi_minor_version")
	if !ok1 || !ok2 {
		return fmt.Errorf("%w: no ABI version globals", ErrABI)
	}
	if major != 1 || minor < 2 {
		return fmt.Errorf("%w: the module has ABI %d.%d", ErrABI, major, minor)
	}
	raw, err := inst.dumpJSON(ctx, fnBuiltins)
	if err != nil {
		return err
	}
	var builtins map[string]int32
	if err := json.Unmarshal(raw, &builtins); err != nil {
		return fmt.Errorf("%w: builtins: %v", ErrABI, err)
	}
	if len(builtins) > 0 {
		names := make([]string, 0, len(builtins))
		for name := range builtins {
			names = append(names, name)
		}
		sort.Strings(names)
		return fmt.Errorf("%w: %s (toolgate policies may use only builtins the OPA Wasm target compiles in)",
			ErrUnsupportedBuiltin, strings.Join(names, ", "))
	}
	raw, err = inst.dumpJSON(ctx, fnEntrypoint)
	if err != nil {
		return err
	}
	var eps map[string]int32
	if err := json.Unmarshal(raw, &eps); err != nil {
		return fmt.Errorf("%w: entrypoints: %v", ErrABI, err)
	}
	want := bundles.Entrypoint
	if m.o.compact != nil {
		want = m.o.compact.Entrypoint
	}
	id, ok := eps[want]
	if !ok {
		return fmt.Errorf("%w: no entrypoint %s; build the bundle with that entrypoint", ErrABI, want)
	}
	m.entrypoint = id
	if m.fast.pool.give(inst) {
		inst = nil
	}
	return nil
}

// Eval decides one call. It checks the input's raw JSON fields and its size
// and depth before the input enters Wasm, evaluates the toolgate/decision
// entrypoint, and decodes the decision.
//
// An error means the policy could not decide and the caller must deny; it
// wraps one of the package's sentinel errors (or ctx's error). Eval is safe
// for concurrent use.
//
// The decision's slices and pointers (Counters, Approval, Shadow) may be
// shared with other calls' decisions (see [WithDecisionMemo]): callers read
// them and never modify them.
func (m *Module) Eval(ctx context.Context, in *bundles.Input) (bundles.Decision, error) {
	var d bundles.Decision
	if err := m.checkInput(in); err != nil {
		return d, err
	}
	if err := ctx.Err(); err != nil {
		return d, err
	}
	v := m.fast
	inst, err := m.take(ctx, v)
	if err != nil {
		return d, err
	}
	if m.o.projection != nil && len(in.Arguments) > 0 {
		inst.args = m.o.projection.appendProjected(inst.args[:0], in.Arguments)
		projected := *in
		projected.Arguments = inst.args
		inst.buf = projected.AppendJSON(inst.buf[:0])
	} else {
		inst.buf = in.AppendJSON(inst.buf[:0])
	}
	if len(inst.buf) > m.o.maxInputBytes {
		m.give(v, inst)
		return d, fmt.Errorf("%w: %d bytes, the limit is %d", ErrInputTooLarge, len(inst.buf), m.o.maxInputBytes)
	}
	if len(inst.buf) > m.o.guardThreshold {
		return m.evalGuarded(ctx, inst)
	}
	var hash uint64
	if m.memo != nil {
		var hit bool
		if d, hash, hit = m.memo.lookup(inst.buf); hit {
			inst.memoHits++
			m.give(v, inst)
			return d, nil
		}
	}
	res, err := inst.run(ctx, m.entrypoint)
	if err != nil {
		inst.close()
		return d, err
	}
	if err = decodeResultInterned(res, &d, inst.intern, m.o.compact); err == nil && m.memo != nil {
		m.memo.store(inst.buf, hash, d)
	}
	m.give(v, inst)
	return d, err
}

// evalGuarded moves the encoded input from fast (which goes back to its
// pool) to a guarded instance and evaluates it under the deadline.
func (m *Module) evalGuarded(ctx context.Context, fast *instance) (bundles.Decision, error) {
	var d bundles.Decision
	g, err := m.take(ctx, m.guarded)
	if err != nil {
		m.give(m.fast, fast)
		return d, err
	}
	g.buf, fast.buf = fast.buf, g.buf
	m.give(m.fast, fast)
	ctx, cancel := context.WithTimeout(ctx, m.o.timeout)
	defer cancel()
	res, err := g.run(ctx, m.entrypoint)
	if err != nil {
		g.close()
		return d, err
	}
	err = decodeResultInterned(res, &d, g.intern, m.o.compact)
	m.give(m.guarded, g)
	return d, err
}

func (m *Module) take(ctx context.Context, v *variant) (*instance, error) {
	if m.closed.Load() {
		return nil, ErrClosed
	}
	if inst := v.pool.take(); inst != nil {
		return inst, nil
	}
	inst, err := newInstance(ctx, v, m.data)
	if err != nil {
		return nil, fmt.Errorf("creating instance: %w", err)
	}
	return inst, nil
}

func (m *Module) give(v *variant, inst *instance) {
	if m.closed.Load() || !v.pool.give(inst) {
		inst.close()
	}
}

// checkInput checks the raw JSON fields of in: each must be empty or one JSON
// object, within the depth left at its place in the input.
func (m *Module) checkInput(in *bundles.Input) error {
	if n := len(in.Arguments); n > m.o.maxArgumentBytes {
		return fmt.Errorf("%w: arguments of %d bytes, the limit is %d", ErrInputTooLarge, n, m.o.maxArgumentBytes)
	}
	if m.o.projection == nil {
		if n := len(in.Arguments) + len(in.Tool) + len(in.Annotations) + len(in.Identity.Claims); n > m.o.maxInputBytes {
			return fmt.Errorf("%w: over %d bytes, the limit is %d", ErrInputTooLarge, n, m.o.maxInputBytes)
		}
	}
	for _, f := range []struct {
		name  string
		raw   []byte
		depth int // how deep the field sits: {"arguments": …} is 1
	}{
		{"arguments", in.Arguments, 1},
		{"tool annotations", in.Annotations, 2},
		{"identity claims", in.Identity.Claims, 2},
	} {
		if len(f.raw) == 0 {
			continue
		}
		switch checkJSON(f.raw, m.o.maxDepth-f.depth) {
		case jsonSyntax:
			return fmt.Errorf("%w: %s", ErrInvalidInput, f.name)
		case jsonTooDeep:
			return fmt.Errorf("%w: %s nest over %d levels", ErrInputTooDeep, f.name, m.o.maxDepth)
		}
		if !isObject(f.raw) {
			return fmt.Errorf("%w: %s is not a JSON object", ErrInvalidInput, f.name)
		}
	}
	return nil
}

// Close frees the compiled module and all its instances. It must be called
// once no Eval is in flight; Evals after Close fail with [ErrClosed]. Close
// is idempotent.
func (m *Module) Close() {
	if m.closed.Swap(true) {
		return
	}
	ctx := context.Background()
	for _, v := range []*variant{m.fast, m.guarded} {
		if v != nil {
			v.pool.drain()
			_ = v.rt.Close(ctx)
		}
	}
}
