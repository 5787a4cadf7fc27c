package opawasm

import (
	"bytes"
	"hash/maphash"
	"sync/atomic"

	"github.com/toolgate/toolgate/bundles"
)

// Defaults of [WithDecisionMemo].
const (
	DefaultMemoSlots    = 1024
	DefaultMemoMaxInput = 1024
)

// memo remembers recent decisions of one module by their encoded input: the
// exact bytes Wasm would read, after the arguments are cut down to the paths
// the policy reads. The policy is a pure function of those bytes (spec §6:
// the host owns counters, identities and the clock, and passes what it knows
// in the input), so a remembered decision is the decision.
//
// The memo is direct-mapped: each input hashes to one slot, a newer entry
// replaces an older one, and a slot is read and written with one atomic
// pointer, so lookups take no lock. Its size is fixed when the module is
// compiled: at most slots entries of at most maxInput bytes each. It lives
// and dies with its module, so a bundle swap starts empty.
type memo struct {
	seed     maphash.Seed
	maxInput int
	mask     uint64
	slots    []atomic.Pointer[memoEntry]
}

// memoEntry is one remembered decision; it is never modified once stored.
type memoEntry struct {
	hash  uint64
	input []byte
	d     bundles.Decision
}

// newMemo returns a memo of slots entries (rounded down to a power of two)
// for inputs of at most maxInput bytes, or nil when either is ≤ 0.
func newMemo(slots, maxInput int) *memo {
	if slots <= 0 || maxInput <= 0 {
		return nil
	}
	n := 1
	for n*2 <= slots {
		n *= 2
	}
	return &memo{seed: maphash.MakeSeed(), maxInput: maxInput, mask: uint64(n - 1), slots: make([]atomic.Pointer[memoEntry], n)}
}

// lookup returns the decision remembered for input and the input's hash
// (for [memo.store]). ok is false when there is none, or when the input is
// too large to be remembered (then hash is 0 and store does nothing).
func (c *memo) lookup(input []byte) (d bundles.Decision, hash uint64, ok bool) {
	if len(input) > c.maxInput {
		return d, 0, false
	}
	hash = maphash.Bytes(c.seed, input) | 1 // never 0, which means "do not store"
	if e := c.slots[hash&c.mask].Load(); e != nil && e.hash == hash && bytes.Equal(e.input, input) {
		return e.d, hash, true
	}
	return d, hash, false
}

// store remembers d for input, whose hash lookup returned.
func (c *memo) store(input []byte, hash uint64, d bundles.Decision) {
	if hash == 0 {
		return
	}
	c.slots[hash&c.mask].Store(&memoEntry{hash: hash, input: bytes.Clone(input), d: d})
}
