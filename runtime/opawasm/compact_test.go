package opawasm

import (
	"errors"
	"testing"

	"github.com/toolgate/toolgate/bundles"
)

func TestDecodeCompact(t *testing.T) {
	five := int64(5)
	table := &bundles.Compact{Entrypoint: bundles.CompactEntrypoint, Counters: []bundles.Reservation{
		{Key: "a._rate_hour", Amount: 1, Limit: &five, Window: "hour", Rule: "p.yaml#a/r", Message: "m"},
		{Key: "_global.spend", Window: "day", Rule: "p.yaml#*/s", Message: "n"},
	}}
	for _, in := range []string{
		// the fast decoder's shape, and one only encoding/json takes (an escape)
		`[{"result":{"approval":null,"counters":[[0,1],[1,250]],"decision":"allow","message":"","rule":"","shadow":[]}}]`,
		`[{"result":{"approval":null,"counters":[[0,1],[1,250]],"decision":"allow","message":"\u0061","rule":"","shadow":[]}}]`,
	} {
		var d bundles.Decision
		if err := decodeResultInterned([]byte(in), &d, newInterner(), table); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if len(d.Counters) != 2 || d.Counters[0].Key != "a._rate_hour" || d.Counters[0].Amount != 1 || *d.Counters[0].Limit != 5 ||
			d.Counters[1].Amount != 250 || d.Counters[1].Limit != nil || d.Counters[1].Rule != "p.yaml#*/s" {
			t.Fatalf("%s: got %+v", in, d.Counters)
		}
	}
	var d bundles.Decision
	err := decodeResultInterned([]byte(`[{"result":{"approval":null,"counters":[[7,1]],"decision":"allow","message":"","rule":"","shadow":[]}}]`), &d, newInterner(), table)
	if !errors.Is(err, ErrNoDecision) {
		t.Fatalf("counter id out of the table: got %v, want ErrNoDecision", err)
	}
}
