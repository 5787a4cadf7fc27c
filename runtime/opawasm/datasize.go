package opawasm

import (
	"errors"
	"math"
)

// errBadBinary is what dataEnd reports for a binary it cannot read; the
// module is then refused as invalid.
var errBadBinary = errors.New("malformed data section")

// pageSize is the size of a Wasm memory page.
const pageSize = 65536

// dataEnd returns the end address of the highest active data segment of a
// Wasm binary. OPA's compiler declares the memory import's minimum without
// counting its data segments, so the memory a module starts with must be
// sized from them, or instantiation traps. It reads only the section
// headers and the data section, and never panics.
func dataEnd(wasm []byte) (uint64, error) {
	if len(wasm) < 8 {
		return 0, errBadBinary
	}
	i := 8
	for i < len(wasm) {
		id := wasm[i]
		i++
		size, n := readULEB(wasm[i:])
		if n == 0 || size > uint64(len(wasm)-i-n) {
			return 0, errBadBinary
		}
		i += n
		if id != 11 {
			i += int(size)
			continue
		}
		return dataSectionEnd(wasm[i : i+int(size)])
	}
	return 0, nil
}

func dataSectionEnd(sec []byte) (uint64, error) {
	count, n := readULEB(sec)
	if n == 0 {
		return 0, errBadBinary
	}
	j := n
	var end uint64
	for k := uint64(0); k < count; k++ {
		flags, n := readULEB(sec[j:])
		if n == 0 {
			return 0, errBadBinary
		}
		j += n
		var offset uint64
		active := flags == 0 || flags == 2
		if flags == 2 {
			if _, n = readULEB(sec[j:]); n == 0 { // memory index
				return 0, errBadBinary
			}
			j += n
		} else if flags != 0 && flags != 1 {
			return 0, errBadBinary
		}
		if active {
			// The offset is a constant expression: i32.const N, end.
			if j >= len(sec) || sec[j] != 0x41 {
				return 0, errBadBinary
			}
			v, n := readSLEB32(sec[j+1:])
			if n == 0 || j+1+n >= len(sec) || sec[j+1+n] != 0x0b {
				return 0, errBadBinary
			}
			offset = uint64(uint32(v))
			j += 1 + n + 1
		}
		size, n := readULEB(sec[j:])
		if n == 0 || size > uint64(len(sec)-j-n) {
			return 0, errBadBinary
		}
		j += n + int(size)
		if active && offset+size > end {
			end = offset + size
		}
	}
	return end, nil
}

// readULEB reads an unsigned LEB128 of at most 32 bits; n is 0 when b does
// not start with one.
func readULEB(b []byte) (v uint64, n int) {
	var shift uint
	for n < len(b) && n < 5 {
		c := b[n]
		n++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			if v > math.MaxUint32 {
				return 0, 0
			}
			return v, n
		}
		shift += 7
	}
	return 0, 0
}

// readSLEB32 reads a signed LEB128 of at most 32 bits.
func readSLEB32(b []byte) (v int64, n int) {
	var shift uint
	for n < len(b) && n < 5 {
		c := b[n]
		n++
		v |= int64(c&0x7f) << shift
		shift += 7
		if c < 0x80 {
			if c&0x40 != 0 && shift < 64 {
				v |= -1 << shift
			}
			return v, n
		}
	}
	return 0, 0
}
