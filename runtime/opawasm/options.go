package opawasm

import (
	"runtime"

	"github.com/toolgate/toolgate/bundles"
	"time"

	"github.com/tetratelabs/wazero"
)

// Defaults of the options of [Compile].
const (
	DefaultMemoryLimitPages = 1024 // 64 MiB
	DefaultMaxInputBytes    = 1 << 20
	DefaultMaxArgumentBytes = 16 << 20
	DefaultMaxDepth         = 64
	DefaultGuardThreshold   = 64 << 10
	DefaultTimeout          = 100 * time.Millisecond
)

// maxDepthCap bounds [WithMaxDepth]; the JSON checker recurses once per level.
const maxDepthCap = 10000

// Option configures [Compile].
type Option func(*options)

type options struct {
	memoryLimitPages uint32
	maxInputBytes    int
	maxDepth         int
	guardThreshold   int
	timeout          time.Duration
	maxIdle          int
	cache            wazero.CompilationCache
	maxArgumentBytes int
	projection       *projection
	compact          *bundles.Compact
	memoSlots        int
	memoMaxInput     int
}

func newOptions(opts []Option) options {
	o := options{
		memoryLimitPages: DefaultMemoryLimitPages,
		maxInputBytes:    DefaultMaxInputBytes,
		maxDepth:         DefaultMaxDepth,
		guardThreshold:   DefaultGuardThreshold,
		timeout:          DefaultTimeout,
		maxIdle:          max(16, 4*runtime.GOMAXPROCS(0)),
		maxArgumentBytes: DefaultMaxArgumentBytes,
		memoSlots:        DefaultMemoSlots,
		memoMaxInput:     DefaultMemoMaxInput,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithMemoryLimitPages sets the most 64 KiB pages the memory of one instance
// may grow to; default [DefaultMemoryLimitPages] (64 MiB). An evaluation that
// needs more fails with [ErrMemoryLimit]. Values outside 1..65536 are ignored.
func WithMemoryLimitPages(pages uint32) Option {
	return func(o *options) {
		if pages >= 1 && pages <= 65536 {
			o.memoryLimitPages = pages
		}
	}
}

// WithMaxInputBytes sets the most bytes the encoded decision input may have;
// default [DefaultMaxInputBytes] (1 MiB). n ≤ 0 is ignored.
func WithMaxInputBytes(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxInputBytes = n
		}
	}
}

// WithMaxDepth sets how deeply the encoded decision input may nest, counting
// the input object itself as 1; default [DefaultMaxDepth]. Values below 3 (the
// input's own structure) or above 10000 are ignored.
func WithMaxDepth(n int) Option {
	return func(o *options) {
		if n >= 3 && n <= maxDepthCap {
			o.maxDepth = n
		}
	}
}

// WithGuardThreshold sets the encoded input size above which an evaluation
// runs under a deadline (see [WithTimeout]); default [DefaultGuardThreshold]
// (64 KiB). Smaller inputs run on a module compiled without termination
// checks, which costs nothing per call; the work toolgate's generated policy
// does is bounded by the input's size. 0 guards every evaluation; n < 0 is
// ignored.
func WithGuardThreshold(n int) Option {
	return func(o *options) {
		if n >= 0 {
			o.guardThreshold = n
		}
	}
}

// WithTimeout sets the deadline of a guarded evaluation (see
// [WithGuardThreshold]); default [DefaultTimeout] (100 ms). A context
// deadline that comes sooner wins. d ≤ 0 is ignored.
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithMaxIdle sets how many idle instances each of the module's two pools
// keeps; default max(16, 4×GOMAXPROCS), so that callers beyond the cores
// (goroutines blocked in I/O between calls) reuse instances instead of
// creating and closing them. n ≤ 0 is ignored.
func WithMaxIdle(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxIdle = n
		}
	}
}

// WithCompilationCache makes Compile keep and reuse compiled code in c, so
// that compiling a module compiled before (by any Module sharing c, or by an
// earlier process when c has a directory) is fast; default none. The caller
// owns c and closes it after every Module that uses it.
func WithCompilationCache(c wazero.CompilationCache) Option {
	return func(o *options) { o.cache = c }
}

// WithArgumentPaths tells the module which argument paths its policy reads
// (each a list of object keys; the bundle manifest lists them). Each call's
// arguments are then cut down to those paths before they enter Wasm, which
// gives the same decision for less work. Without it the whole arguments
// object is sent.
func WithArgumentPaths(paths [][]string) Option {
	return func(o *options) { o.projection = newProjection(paths) }
}

// WithMaxArgumentBytes sets the most bytes a call's raw arguments may have
// (default [DefaultMaxArgumentBytes]); with [WithArgumentPaths] only the
// projected part counts against [WithMaxInputBytes].
func WithMaxArgumentBytes(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxArgumentBytes = n
		}
	}
}

// BundleOptions returns the options a bundle's manifest implies (the
// argument paths its policy reads), to pass to [Compile] with the bundle's
// Wasm and data.
func BundleOptions(m *bundles.Manifest) []Option {
	var opts []Option
	if m.Metadata.Reads != nil {
		opts = append(opts, WithArgumentPaths(m.Metadata.Reads.Arguments))
	}
	if m.Metadata.Compact != nil {
		opts = append(opts, WithCompact(m.Metadata.Compact))
	}
	return opts
}

// WithCompact makes the module evaluate the bundle's compact entrypoint,
// whose counters are [id, amount] pairs, and write each counter out from
// c.Counters: the same decision, with a fraction of the output for Wasm to
// serialize and for the host to parse. The counters' strings and limits are
// shared by every decision.
func WithCompact(c *bundles.Compact) Option {
	return func(o *options) { o.compact = c }
}

// WithDecisionMemo sets how many recent decisions the module remembers, and
// the largest encoded input (after the argument projection) it remembers
// one for; default [DefaultMemoSlots] decisions of inputs up to
// [DefaultMemoMaxInput] bytes, at most about 1.3 MiB. An input seen again,
// byte for byte, is answered without running Wasm: the policy is a pure
// function of its input. A tool the policy always denies, or a call whose
// arguments the policy does not read, is then decided in a hash lookup.
// slots ≤ 0 turns the memo off.
func WithDecisionMemo(slots, maxInputBytes int) Option {
	return func(o *options) { o.memoSlots, o.memoMaxInput = slots, maxInputBytes }
}
