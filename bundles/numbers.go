package bundles

import "strconv"

// appendNumbersAsFloat64 appends the JSON value raw (valid JSON) to dst
// with every number written as the float64 nearest to it, in its shortest
// form (strconv's 'g', -1). PolicyLayer reads a call's numbers as float64
// (encoding/json into any) and compares them so: 9007199254740993 is
// 9007199254740992 to its conditions, 100.000000000000001 is 100, and the
// text form of 1000000000000000000001 is "1e+21". Sending the policy those
// float64 values makes its exact comparisons give PolicyLayer's answers
// (docs/semantics-choices.md, choice 12).
//
// A number that already is such a value — at most 15 significant digits
// and well inside float64's range, the usual case — is copied as it is, as
// is one beyond float64's range (no float64 holds it). It allocates only
// when dst must grow.
func appendNumbersAsFloat64(dst, raw []byte) []byte {
	start := 0
	for i := 0; i < len(raw); {
		switch c := raw[i]; {
		case c == '"':
			for i++; i < len(raw) && raw[i] != '"'; i++ {
				if raw[i] == '\\' {
					i++
				}
			}
			i++
		case c == '-' || '0' <= c && c <= '9':
			j := i + 1
			for j < len(raw) && isNumberByte(raw[j]) {
				j++
			}
			if tok := raw[i:j]; !float64Form(tok) {
				if f, err := strconv.ParseFloat(string(tok), 64); err == nil {
					dst = append(dst, raw[start:i]...)
					dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
					start = j
				}
			}
			i = j
		default:
			i++
		}
	}
	return append(dst, raw[start:]...)
}

func isNumberByte(c byte) bool {
	return '0' <= c && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

// float64Form reports whether the JSON number tok has the value of the
// float64 nearest to it: at most 15 significant digits (any such decimal
// is the shortest form of its float64, as float64 carries 15.9 digits),
// and an exponent far from float64's limits.
func float64Form(tok []byte) bool {
	if len(tok) > 32 {
		return false
	}
	sig, zeros, exp := 0, 0, 0 // significant digits, zeros pending after them
	for k := 0; k < len(tok); k++ {
		c := tok[k]
		switch {
		case c == '0':
			if sig > 0 {
				zeros++
			}
		case '1' <= c && c <= '9':
			sig += zeros + 1
			zeros = 0
		case c == 'e' || c == 'E':
			e := tok[k+1:]
			if len(e) > 0 && (e[0] == '+' || e[0] == '-') {
				e = e[1:]
			}
			if len(e) > 3 {
				return false
			}
			for _, d := range e {
				exp = exp*10 + int(d-'0')
			}
			return sig <= 15 && exp <= 250
		}
	}
	return sig <= 15
}
