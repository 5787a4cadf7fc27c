package bench

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/build"
	"github.com/toolgate/toolgate/compiler/policy"
)

var updateFixtures = flag.Bool("update-fixtures", false, "rewrite runtime/opawasm/testdata/bench*.tar.gz")

// TestRuntimeFixtures keeps the bundles runtime/opawasm benchmarks against
// (it cannot import the compiler) identical to what the compiler builds
// today: a changed digest means the generated code changed; rerun with
// -update-fixtures and the benchmarks follow.
func TestRuntimeFixtures(t *testing.T) {
	for _, tc := range []struct {
		file    string
		sources []policy.Source
	}{{"bench10.tar.gz", Small()}, {"bench500.tar.gz", Large()}} {
		b, _, err := build.Build(context.Background(), tc.sources, build.Options{Revision: "bench"})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := bundles.Write(&buf, b); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("..", "..", "runtime", "opawasm", "testdata", tc.file)
		if *updateFixtures {
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		have, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./test/bench -run TestRuntimeFixtures -update-fixtures)", err)
		}
		if got, want := bundles.Digest(buf.Bytes()), bundles.Digest(have); got != want {
			t.Errorf("%s is stale: built %s, file is %s; run go test ./test/bench -run TestRuntimeFixtures -update-fixtures", tc.file, got, want)
		}
	}
}
