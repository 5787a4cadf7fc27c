package audit

import (
	"bytes"
	"encoding/json"
	"slices"
	"sync"
	"unicode/utf8"
)

// ArgsSHA256 returns the sha256 (hex) of the canonical form of a call's
// arguments: object keys sorted, no insignificant whitespace, numbers as
// written, HTML characters unescaped. Absent or null arguments hash as {}.
// Arguments that are not valid JSON hash as their raw bytes.
//
// The canonical form is what encoding/json makes of the arguments decoded
// into interface values (with UseNumber) and encoded again without HTML
// escaping ([canonicalSlow]). Arguments in the common shape (strings
// without escapes, no repeated keys, modest depth) are written by a direct
// scan instead, with the same bytes as the result; anything else takes the
// encoding/json path. FuzzCanonical holds the two to the same output.
func ArgsSHA256(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return hashHex([]byte("{}"))
	}
	c := canonPool.Get().(*canonicalizer)
	defer c.free()
	out, ok := c.canonical(raw)
	if !ok {
		return hashHex(canonicalSlow(raw))
	}
	return hashHex(out)
}

// maxPooledCanon is the largest buffer a pooled canonicalizer keeps: one
// large argument (up to 16 MiB) must not stay pinned in the pool.
const maxPooledCanon = 64 << 10

// free returns c to the pool, without buffers grown by large arguments.
func (c *canonicalizer) free() {
	if cap(c.out) > maxPooledCanon {
		c.out = nil
	}
	if cap(c.members) > maxPooledCanon/32 {
		c.members = nil
	}
	canonPool.Put(c)
}

// canonicalSlow is the reference canonical form: raw decoded with
// encoding/json (numbers kept as written) and encoded again without HTML
// escaping; raw itself when it does not decode.
func canonicalSlow(raw []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return raw
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return raw
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// maxCanonDepth is the deepest nesting the direct scan writes; deeper
// arguments take the encoding/json path.
const maxCanonDepth = 64

// canonicalizer writes the canonical form of JSON values by scanning them.
// It gives up (ok false) on whatever it does not write exactly as
// encoding/json would: escapes in strings, repeated keys, nesting deeper
// than maxCanonDepth, anything malformed, anything after the value.
type canonicalizer struct {
	in      []byte
	out     []byte
	members []member // spans of the members of the objects being written
}

// member is one member of an object: its name (without quotes) in in, its
// canonical value in out.
type member struct {
	nameStart, nameEnd int
	valStart, valEnd   int
}

var canonPool = sync.Pool{New: func() any { return &canonicalizer{} }}

// canonical returns the canonical form of raw (valid until the next use of
// c), or ok false.
func (c *canonicalizer) canonical(raw []byte) (out []byte, ok bool) {
	c.in, c.out, c.members = raw, c.out[:0], c.members[:0]
	defer func() { c.in = nil }()
	i, ok := c.value(0, 0)
	if !ok || skipSpace(raw, i) != len(raw) {
		return nil, false
	}
	return c.out, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// value appends the canonical form of the value at c.in[i:] (after
// whitespace) to c.out and returns the index after it.
func (c *canonicalizer) value(i, depth int) (int, bool) {
	i = skipSpace(c.in, i)
	if i >= len(c.in) {
		return 0, false
	}
	switch b := c.in[i]; {
	case b == '{':
		return c.object(i, depth+1)
	case b == '[':
		return c.array(i, depth+1)
	case b == '"':
		end, ok := plainString(c.in, i)
		if !ok {
			return 0, false
		}
		c.out = append(c.out, c.in[i:end]...)
		return end, true
	case b == '-' || ('0' <= b && b <= '9'):
		end, ok := number(c.in, i)
		if !ok {
			return 0, false
		}
		c.out = append(c.out, c.in[i:end]...)
		return end, true
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if bytes.HasPrefix(c.in[i:], []byte(lit)) {
				c.out = append(c.out, lit...)
				return i + len(lit), true
			}
		}
		return 0, false
	}
}

// object writes the object at c.in[i] with its members sorted by name.
func (c *canonicalizer) object(i, depth int) (int, bool) {
	if depth > maxCanonDepth {
		return 0, false
	}
	base := len(c.members) // this object's members are c.members[base:]
	valuesAt := len(c.out) // its values are written here first, then moved
	i = skipSpace(c.in, i+1)
	if i < len(c.in) && c.in[i] == '}' {
		c.out = append(c.out, "{}"...)
		return i + 1, true
	}
	for {
		if i >= len(c.in) || c.in[i] != '"' {
			return 0, false
		}
		end, ok := plainString(c.in, i)
		if !ok {
			return 0, false
		}
		m := member{nameStart: i + 1, nameEnd: end - 1}
		i = skipSpace(c.in, end)
		if i >= len(c.in) || c.in[i] != ':' {
			return 0, false
		}
		m.valStart = len(c.out)
		if i, ok = c.value(i+1, depth); !ok {
			return 0, false
		}
		m.valEnd = len(c.out)
		c.members = append(c.members, m)
		i = skipSpace(c.in, i)
		if i < len(c.in) && c.in[i] == ',' {
			i = skipSpace(c.in, i+1)
			continue
		}
		if i < len(c.in) && c.in[i] == '}' {
			i++
			break
		}
		return 0, false
	}
	ms := c.members[base:]
	name := func(m member) []byte { return c.in[m.nameStart:m.nameEnd] }
	slices.SortFunc(ms, func(a, b member) int { return bytes.Compare(name(a), name(b)) })
	for k := 1; k < len(ms); k++ {
		if bytes.Equal(name(ms[k-1]), name(ms[k])) {
			return 0, false // repeated: encoding/json keeps the last one
		}
	}
	// The values were written in input order at valuesAt; write the
	// object after them, then move it into their place.
	objAt := len(c.out)
	c.out = append(c.out, '{')
	for k, m := range ms {
		if k > 0 {
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, '"')
		c.out = append(c.out, name(m)...)
		c.out = append(c.out, '"', ':')
		c.out = append(c.out, c.out[m.valStart:m.valEnd]...)
	}
	c.out = append(c.out, '}')
	n := copy(c.out[valuesAt:], c.out[objAt:])
	c.out = c.out[:valuesAt+n]
	c.members = c.members[:base]
	return i, true
}

// array writes the array at c.in[i].
func (c *canonicalizer) array(i, depth int) (int, bool) {
	if depth > maxCanonDepth {
		return 0, false
	}
	c.out = append(c.out, '[')
	i = skipSpace(c.in, i+1)
	if i < len(c.in) && c.in[i] == ']' {
		c.out = append(c.out, ']')
		return i + 1, true
	}
	for {
		var ok bool
		if i, ok = c.value(i, depth); !ok {
			return 0, false
		}
		i = skipSpace(c.in, i)
		if i < len(c.in) && c.in[i] == ',' {
			c.out = append(c.out, ',')
			i++
			continue
		}
		if i < len(c.in) && c.in[i] == ']' {
			c.out = append(c.out, ']')
			return i + 1, true
		}
		return 0, false
	}
}

// plainString returns the index after the string at b[i] (a quote) when
// encoding/json writes it back exactly as it is: no escapes, no control
// characters, valid UTF-8, no U+2028 or U+2029 (which it escapes).
func plainString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); {
		switch c := b[j]; {
		case c == '"':
			return j + 1, true
		case c == '\\' || c < 0x20:
			return 0, false
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(b[j:])
			if r == utf8.RuneError || r == '\u2028' || r == '\u2029' {
				return 0, false
			}
			j += size
		}
	}
	return 0, false
}

// number returns the index after the JSON number at b[i], checking its
// grammar (-? int frac? exp?).
func number(b []byte, i int) (int, bool) {
	digits := func(j int) int {
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		return j
	}
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && '1' <= b[j] && b[j] <= '9':
		j = digits(j)
	default:
		return 0, false
	}
	if j < len(b) && b[j] == '.' {
		k := digits(j + 1)
		if k == j+1 {
			return 0, false
		}
		j = k
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		k := digits(j)
		if k == j {
			return 0, false
		}
		j = k
	}
	if j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
		default:
			return 0, false // e.g. 01, 1x, truex
		}
	}
	return j, true
}
