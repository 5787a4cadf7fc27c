package opawasm

import "unicode/utf8"

// Results of checkJSON.
const (
	jsonOK = iota
	jsonSyntax
	jsonTooDeep
)

// checkJSON reports whether b holds exactly one JSON value (with optional
// surrounding white space) that nests at most maxDepth containers deep
// (a scalar is depth 0, "{}" depth 1). It accepts what encoding/json's Valid
// accepts, less two things OPA's Wasm JSON parser aborts on: invalid UTF-8
// and \u escapes of UTF-16 surrogates that do not form a pair. It does not
// allocate and never panics; maxDepth must be at most maxDepthCap.
func checkJSON(b []byte, maxDepth int) int {
	s := jsonScanner{b: b}
	s.ws()
	if r := s.value(maxDepth); r != jsonOK {
		return r
	}
	s.ws()
	if s.i != len(s.b) {
		return jsonSyntax
	}
	return jsonOK
}

// isObject reports whether the JSON value in b, checked by checkJSON, is an
// object.
func isObject(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c == '{'
	}
	return false
}

type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value scans one value; left is how many more containers may open.
func (s *jsonScanner) value(left int) int {
	if s.i >= len(s.b) {
		return jsonSyntax
	}
	switch c := s.b[s.i]; {
	case c == '{':
		if left <= 0 {
			return jsonTooDeep
		}
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '}' {
			s.i++
			return jsonOK
		}
		for {
			if s.i >= len(s.b) || s.b[s.i] != '"' {
				return jsonSyntax
			}
			if !s.str() {
				return jsonSyntax
			}
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] != ':' {
				return jsonSyntax
			}
			s.i++
			s.ws()
			if r := s.value(left - 1); r != jsonOK {
				return r
			}
			s.ws()
			if s.i >= len(s.b) {
				return jsonSyntax
			}
			switch s.b[s.i] {
			case ',':
				s.i++
				s.ws()
			case '}':
				s.i++
				return jsonOK
			default:
				return jsonSyntax
			}
		}
	case c == '[':
		if left <= 0 {
			return jsonTooDeep
		}
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return jsonOK
		}
		for {
			if r := s.value(left - 1); r != jsonOK {
				return r
			}
			s.ws()
			if s.i >= len(s.b) {
				return jsonSyntax
			}
			switch s.b[s.i] {
			case ',':
				s.i++
				s.ws()
			case ']':
				s.i++
				return jsonOK
			default:
				return jsonSyntax
			}
		}
	case c == '"':
		if s.str() {
			return jsonOK
		}
	case c == '-' || (c >= '0' && c <= '9'):
		if s.num() {
			return jsonOK
		}
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	}
	return jsonSyntax
}

func (s *jsonScanner) lit(want string) int {
	if len(s.b)-s.i < len(want) || string(s.b[s.i:s.i+len(want)]) != want {
		return jsonSyntax
	}
	s.i += len(want)
	return jsonOK
}

func (s *jsonScanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

func (s *jsonScanner) num() bool {
	if s.b[s.i] == '-' {
		s.i++
	}
	if s.i >= len(s.b) {
		return false
	}
	if s.b[s.i] == '0' {
		s.i++
	} else if !s.digits() {
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if !s.digits() {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// str scans a string starting at its opening quote.
func (s *jsonScanner) str() bool {
	s.i++
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				u, ok := s.hex4(s.i + 2)
				if !ok {
					return false
				}
				s.i += 6
				switch {
				case u >= 0xdc00 && u <= 0xdfff:
					return false // a low surrogate alone
				case u >= 0xd800 && u <= 0xdbff:
					if s.i+1 >= len(s.b) || s.b[s.i] != '\\' || s.b[s.i+1] != 'u' {
						return false
					}
					v, ok := s.hex4(s.i + 2)
					if !ok || v < 0xdc00 || v > 0xdfff {
						return false
					}
					s.i += 6
				}
			default:
				return false
			}
		case c < utf8.RuneSelf:
			s.i++
		default:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				return false
			}
			s.i += n
		}
	}
	return false
}

func (s *jsonScanner) hex4(at int) (rune, bool) {
	if at+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
