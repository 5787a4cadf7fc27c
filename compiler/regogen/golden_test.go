package regogen_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestGolden checks the Rego generated for each policy set under testdata
// against its golden file, and that it compiles to Wasm.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/policies")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no testdata policy sets: %v", err)
	}
	for _, dir := range dirs {
		name := filepath.Base(filepath.Dir(dir))
		t.Run(name, func(t *testing.T) {
			wd, _ := os.Getwd()
			defer os.Chdir(wd)
			if err := os.Chdir(filepath.Dir(dir)); err != nil {
				t.Fatal(err)
			}
			sources, err := policy.ReadSources(nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := build.Rego(sources)
			if err != nil {
				t.Fatal(err)
			}
			again, _, _ := build.Rego(sources)
			if string(again) != string(got) {
				t.Fatal("Generate is not deterministic: two runs differ")
			}
			golden := "policy.rego.golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if string(got) != string(want) {
				t.Errorf("generated Rego differs from %s/%s; run `go test ./compiler/regogen -update` and review the diff", filepath.Dir(dir), golden)
			}
			if _, err := build.CompileWasm(context.Background(), got); err != nil {
				t.Fatalf("generated Rego does not compile to Wasm: %v", err)
			}
		})
	}
}
