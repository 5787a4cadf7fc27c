package opawasm

import "testing"

func TestDataEnd(t *testing.T) {
	// magic, version, then a data section (id 11) with one active segment
	// at offset 70000 (i32.const 70000 = 0xf0 0xa2 0x04) holding 3 bytes,
	// and one passive segment that does not count.
	wasm := []byte{0, 'a', 's', 'm', 1, 0, 0, 0,
		11, 15, 2,
		0, 0x41, 0xf0, 0xa2, 0x04, 0x0b, 3, 'a', 'b', 'c',
		1, 2, 'x', 'y'}
	got, err := dataEnd(wasm)
	if err != nil || got != 70003 {
		t.Fatalf("dataEnd = %d, %v; want 70003", got, err)
	}
	for _, bad := range [][]byte{
		nil,
		wasm[:len(wasm)-1],
		{0, 'a', 's', 'm', 1, 0, 0, 0, 11, 0xff, 0xff, 0xff, 0xff, 0x7f},
		{0, 'a', 's', 'm', 1, 0, 0, 0, 11, 3, 1, 0, 0x42},
	} {
		if _, err := dataEnd(bad); err == nil {
			t.Errorf("dataEnd(%x): want an error", bad)
		}
	}
}

func FuzzDataEnd(f *testing.F) {
	f.Add([]byte{0, 'a', 's', 'm', 1, 0, 0, 0, 11, 15, 2, 0, 0x41, 0xf0, 0xa2, 0x04, 0x0b, 3, 'a', 'b', 'c', 1, 2, 'x', 'y'})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = dataEnd(b) // must not panic
	})
}
