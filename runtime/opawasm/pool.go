package opawasm

import "sync/atomic"

// pool keeps idle instances in a fixed set of slots, taken and returned with
// compare-and-swap: no lock, and no allocation once the pool is warm.
type pool struct {
	slots []atomic.Pointer[instance]
}

func newPool(n int) pool { return pool{slots: make([]atomic.Pointer[instance], n)} }

// take returns an idle instance, or nil when there is none.
func (p *pool) take() *instance {
	for i := range p.slots {
		s := &p.slots[i]
		if inst := s.Load(); inst != nil && s.CompareAndSwap(inst, nil) {
			return inst
		}
	}
	return nil
}

// give keeps inst for reuse, or reports false when every slot is full.
func (p *pool) give(inst *instance) bool {
	for i := range p.slots {
		s := &p.slots[i]
		if s.Load() == nil && s.CompareAndSwap(nil, inst) {
			return true
		}
	}
	return false
}

// drain takes every idle instance out and closes it.
func (p *pool) drain() {
	for i := range p.slots {
		if inst := p.slots[i].Swap(nil); inst != nil {
			inst.close()
		}
	}
}
