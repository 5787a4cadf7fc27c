package opawasm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// TestExp (temporary): raw opa_eval min-of-rounds for /tmp/exp/*.rego.
func TestExp(t *testing.T) {
	files, _ := filepath.Glob("/tmp/exp/*.rego")
	if len(files) == 0 {
		return
	}
	sort.Strings(files)
	ctx := context.Background()
	type v struct {
		name string
		inst *instance
		m    *Module
		n    uint32
		best time.Duration
	}
	var vs []*v
	for _, f := range files {
		src, _ := os.ReadFile(f)
		m := mustCompile(t, compileRego(t, string(src)))
		inst, err := m.take(ctx, m.fast)
		if err != nil {
			t.Fatal(err)
		}
		inst.buf = floorInput.AppendJSON(inst.buf[:0])
		inst.mem.Write(inst.base, inst.buf)
		res, err := inst.run(ctx, m.entrypoint)
		fmt.Printf("%s: %d bytes out: %.200s %v\n", filepath.Base(f), len(res), res, err)
		vs = append(vs, &v{name: filepath.Base(f), inst: inst, m: m, n: uint32(len(inst.buf)), best: time.Hour})
	}
	for round := 0; round < 40; round++ {
		for _, x := range vs {
			const n = 300
			start := time.Now()
			for i := 0; i < n; i++ {
				s := &x.inst.stack
				*s = [7]uint64{0, uint64(x.m.entrypoint), uint64(x.inst.dataAddr), uint64(x.inst.base), uint64(x.n), uint64(x.inst.base + x.n), 0}
				if err := x.inst.eval.CallWithStack(ctx, s[:]); err != nil {
					t.Fatal(err)
				}
			}
			if d := time.Since(start) / n; d < x.best {
				x.best = d
			}
		}
	}
	for _, x := range vs {
		fmt.Printf("%-12s %8d ns\n", x.name, x.best.Nanoseconds())
	}
}
