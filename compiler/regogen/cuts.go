package regogen

import (
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
)

// StateCuts returns, for each counter of table (by index), the numbers the
// conditions of set compare that counter's value with, sorted and without
// duplicates (see [bundles.Compact.Cuts]). Every rule counts, in any mode
// (shadow rules decide the shadow outcomes), and every condition (when:
// too). A comparison that can never hold for a number (regex, contains,
// a number against a string that is not one, a list or a boolean) cuts
// nothing; a string that reads as a number cuts at that number, which is
// only ever finer than needed.
func StateCuts(set *policy.Set, table []bundles.Reservation) [][]float64 {
	byKey := map[string][]float64{}
	for _, s := range set.Servers {
		for _, f := range s.Files {
			for _, t := range f.Tools {
				for _, r := range t.Rules {
					for _, c := range append(append([]policy.Condition(nil), r.Conditions...), r.When...) {
						if !strings.HasPrefix(c.Path, "state.") {
							continue
						}
						scope, counter, err := policy.SplitStatePath(c.Path)
						if err != nil {
							continue
						}
						key := scope + "." + counter
						byKey[key] = append(byKey[key], cutsOf(c)...)
					}
				}
			}
		}
	}
	out := make([][]float64, len(table))
	for i, r := range table {
		cuts := slices.Clone(byKey[r.Key])
		slices.Sort(cuts)
		out[i] = slices.Compact(cuts)
		if out[i] == nil {
			out[i] = []float64{}
		}
	}
	return out
}

// cutsOf returns the numbers at which condition c, on a number, may change
// from holding to not.
func cutsOf(c policy.Condition) []float64 {
	switch c.Op {
	case "lt", "lte", "gt", "gte":
		if f, ok := number(c.Value, false); ok {
			return []float64{f}
		}
	case "eq", "neq":
		if f, ok := number(c.Value, true); ok {
			return []float64{f}
		}
	case "in", "not_in":
		var out []float64
		if list, ok := c.Value.([]any); ok {
			for _, v := range list {
				if f, ok := number(v, true); ok {
					out = append(out, f)
				}
			}
		}
		return out
	}
	return nil // exists, regex, contains: the same for every number
}

// number reads v as a number; with text, a string that parses as one too
// (eq compares a number with a string by their text).
func number(v any, text bool) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float64:
		return x, !math.IsNaN(x) && !math.IsInf(x, 0)
	case string:
		if text {
			f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
			return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
		}
	}
	return 0, false
}
