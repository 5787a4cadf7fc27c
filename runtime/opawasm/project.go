package opawasm

import (
	"sort"
	"unicode/utf8"
)

// projection keeps, of a call's arguments, only the paths the policy reads.
// OPA's Wasm JSON parser costs about 10 ns a byte, and tool calls carry
// payloads policies never look at (a file's contents, a message body), so
// the runtime sends Wasm only what can change the decision: the same
// decision, for a fraction of the input.
//
// A projection is built once per module from the bundle's list of argument
// paths; projecting a call allocates nothing (it appends to a buffer).
type projection struct {
	children map[string]*projection
	// whole: the path ends here, keep the value as it is.
	whole bool
	keys  []string // children's keys, sorted: the output is deterministic
}

// newProjection builds the trie of paths (each a list of object keys).
// No paths at all means the policy reads no argument.
func newProjection(paths [][]string) *projection {
	root := &projection{children: map[string]*projection{}}
	for _, p := range paths {
		n := root
		for _, k := range p {
			if n.whole {
				break
			}
			c := n.children[k]
			if c == nil {
				c = &projection{children: map[string]*projection{}}
				n.children[k] = c
				n.keys = append(n.keys, k)
			}
			n = c
		}
		if n != root {
			n.whole = true
			n.children, n.keys = nil, nil
		}
	}
	var sortKeys func(*projection)
	sortKeys = func(n *projection) {
		sort.Strings(n.keys)
		for _, c := range n.children {
			sortKeys(c)
		}
	}
	sortKeys(root)
	return root
}

// appendProjected appends to dst the object raw (one JSON object, already
// checked by checkJSON) reduced to the projection's paths. Keys keep their
// order and duplicates, so a parser that takes the last duplicate sees the
// same value; values on a path are copied byte for byte; a path that runs
// into a non-object ends in null, which the policy reads as missing too.
func (p *projection) appendProjected(dst, raw []byte) []byte {
	s := jsonScanner{b: raw}
	s.ws()
	return p.object(dst, &s)
}

// object projects the object at s (s is at its '{') and leaves s after it.
func (p *projection) object(dst []byte, s *jsonScanner) []byte {
	dst = append(dst, '{')
	first := true
	s.i++ // '{'
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return append(dst, '}')
	}
	for {
		s.ws()
		keyStart := s.i
		s.str()
		keyEnd := s.i
		s.ws()
		s.i++ // ':'
		s.ws()
		valStart := s.i
		child := p.child(s.b[keyStart:keyEnd])
		switch {
		case child == nil:
			s.value(maxDepthCap)
		case child.whole:
			s.value(maxDepthCap)
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, s.b[keyStart:keyEnd]...)
			dst = append(dst, ':')
			dst = append(dst, s.b[valStart:s.i]...)
		case s.b[valStart] == '{':
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, s.b[keyStart:keyEnd]...)
			dst = append(dst, ':')
			dst = child.object(dst, s)
		default:
			// A path runs into a non-object here: the policy reads it as
			// missing. The key stays, as null, so that duplicate keys keep
			// their meaning whichever of them a parser takes.
			s.value(maxDepthCap)
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, s.b[keyStart:keyEnd]...)
			dst = append(dst, ":null"...)
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] == '}' {
			s.i++
			return append(dst, '}')
		}
		s.i++ // ','
	}
}

// child returns the projection under the JSON string key (with quotes),
// comparing its decoded text, or nil.
func (p *projection) child(key []byte) *projection {
	if len(p.keys) == 0 {
		return nil
	}
	inner := key[1 : len(key)-1]
	for _, c := range inner {
		if c == '\\' {
			return p.childEscaped(inner)
		}
	}
	return p.children[string(inner)] // no allocation: map lookup by []byte
}

// childEscaped decodes a key with escapes into a small stack buffer.
func (p *projection) childEscaped(inner []byte) *projection {
	var buf [256]byte
	out := buf[:0]
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		switch inner[i] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			s := jsonScanner{b: inner}
			r, ok := s.hex4(i + 1)
			i += 4
			if ok && r >= 0xD800 && r < 0xDC00 && i+6 < len(inner) && inner[i+1] == '\\' && inner[i+2] == 'u' {
				if r2, ok2 := s.hex4(i + 3); ok2 && r2 >= 0xDC00 && r2 < 0xE000 {
					r = (r-0xD800)<<10 + (r2 - 0xDC00) + 0x10000
					i += 6
				}
			}
			out = utf8.AppendRune(out, r)
		default: // '"', '\\', '/'
			out = append(out, inner[i])
		}
	}
	return p.children[string(out)]
}
