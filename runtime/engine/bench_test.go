package engine

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/opawasm"
)

// BenchmarkSwap swaps between two bundles compiled before, through a file
// compilation cache: the cost of a rollback.
func BenchmarkSwap(b *testing.B) {
	ctx := context.Background()
	digA, a := testBundle(b, policy("A"), bundles.Entrypoint)
	digB, bb := testBundle(b, policy("B"), bundles.Entrypoint)
	cache, err := wazero.NewCompilationCacheWithDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close(ctx)
	e := New(WithModuleOptions(opawasm.WithCompilationCache(cache)))
	defer e.Close()
	i := 0
	for b.Loop() {
		dig, bun := digA, a
		if i%2 == 0 {
			dig, bun = digB, bb
		}
		i++
		if err := e.Swap(ctx, dig, bun); err != nil {
			b.Fatal(err)
		}
	}
}
