package opawasm

import (
	"encoding/json"
	"fmt"
	"math/big"

	"github.com/toolgate/toolgate/bundles"
)

// decodeResult decodes OPA's JSON result set, [{"result": DECISION}], into
// d. A fast decoder handles the shape toolgate's generated policy produces
// (known keys, ASCII strings without escapes, integers) without allocating
// beyond the decision's own strings, slices and pointers; anything else is
// decoded by encoding/json, which has the last word.
func decodeResult(b []byte, d *bundles.Decision) error {
	return decodeResultInterned(b, d, nil, nil)
}

// decodeResultInterned is decodeResult with the strings and limits of the
// decision taken from (and added to) in, so that the rule ids, messages and
// counter keys a policy returns call after call are allocated once per
// instance, not once per call.
func decodeResultInterned(b []byte, d *bundles.Decision, in *interner, compact *bundles.Compact) error {
	*d = bundles.Decision{}
	p := resultParser{b: b, in: in, compact: compact}
	if p.resultSet(d) && p.end() {
		return checkDecision(d)
	}
	// The slow paths hand their decision to encoding/json, which moves it to
	// the heap: decode into a variable of their own so that d stays where
	// the caller keeps it (no allocation per call on the fast path).
	slow := new(bundles.Decision)
	var err error
	if compact != nil {
		err = decodeCompactSlow(b, slow, compact)
	} else {
		err = decodeResultSlow(b, slow)
	}
	*d = *slow
	return err
}

// decodeCompactSlow decodes a compact result with encoding/json.
func decodeCompactSlow(b []byte, d *bundles.Decision, compact *bundles.Compact) error {
	var rs []struct {
		Result *struct {
			Decision bundles.Outcome         `json:"decision"`
			Rule     string                  `json:"rule"`
			Message  string                  `json:"message"`
			Counters [][2]*wholeNumber       `json:"counters"`
			Approval *bundles.Approval       `json:"approval"`
			Shadow   []bundles.ShadowOutcome `json:"shadow"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &rs); err != nil {
		return fmt.Errorf("%w: result is not a compact result set: %v", ErrNoDecision, err)
	}
	if len(rs) != 1 || rs[0].Result == nil {
		return fmt.Errorf("%w: the decision is undefined", ErrNoDecision)
	}
	r := rs[0].Result
	*d = bundles.Decision{Decision: r.Decision, Rule: r.Rule, Message: r.Message, Approval: r.Approval, Shadow: r.Shadow}
	for _, pair := range r.Counters {
		if pair[0] == nil {
			return fmt.Errorf("%w: a counter without an id", ErrNoDecision)
		}
		c, ok := counterByID(compact, int64(*pair[0]), 0)
		if !ok {
			return fmt.Errorf("%w: counter id %d is not in the bundle's table of %d", ErrNoDecision, *pair[0], len(compact.Counters))
		}
		if pair[1] == nil {
			c.Invalid = true // no amount: the host denies when it reaches it
		} else {
			c.Amount = int64(*pair[1])
		}
		d.Counters = append(d.Counters, c)
	}
	if d.Counters == nil && r.Counters != nil {
		d.Counters = []bundles.Reservation{}
	}
	return checkDecision(d)
}

// wholeNumber is a whole number within int64 in a result, which OPA's Wasm
// may print in exponent form: an increment_from amount near 2^63 (the
// floor of the float64 9.223372036854775e+18) comes out so. It is read
// exactly; anything else is an error.
type wholeNumber int64

func (w *wholeNumber) UnmarshalJSON(b []byte) error {
	var r big.Rat
	if len(b) > 40 || b[0] == '"' {
		return fmt.Errorf("%.40s is not a whole number within int64", b)
	}
	if _, ok := r.SetString(string(b)); !ok || !r.IsInt() || !r.Num().IsInt64() {
		return fmt.Errorf("%s is not a whole number within int64", b)
	}
	*w = wholeNumber(r.Num().Int64())
	return nil
}

// counterByID writes out counter id of the compact table with amount.
func counterByID(compact *bundles.Compact, id, amount int64) (bundles.Reservation, bool) {
	if id < 0 || id >= int64(len(compact.Counters)) {
		return bundles.Reservation{}, false
	}
	c := compact.Counters[id]
	c.Amount = amount
	return c, true
}

func decodeResultSlow(b []byte, d *bundles.Decision) error {
	var rs []struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(b, &rs); err != nil {
		return fmt.Errorf("%w: result is not a result set: %v", ErrNoDecision, err)
	}
	switch {
	case len(rs) == 0:
		return fmt.Errorf("%w: the decision is undefined", ErrNoDecision)
	case len(rs) > 1:
		return fmt.Errorf("%w: %d results", ErrNoDecision, len(rs))
	case len(rs[0].Result) == 0 || string(rs[0].Result) == "null":
		return fmt.Errorf("%w: the result set has no result", ErrNoDecision)
	}
	if err := json.Unmarshal(rs[0].Result, d); err != nil {
		return fmt.Errorf("%w: %v", ErrNoDecision, err)
	}
	return checkDecision(d)
}

func checkDecision(d *bundles.Decision) error {
	switch d.Decision {
	case bundles.Allow, bundles.Deny, bundles.RequireApproval:
		return nil
	}
	return fmt.Errorf("%w: decision is %q, want allow, deny or require_approval", ErrNoDecision, d.Decision)
}

// resultParser is the fast decoder. Each method returns false when the input
// is not in the shape it handles, and the caller falls back.
type resultParser struct {
	b  []byte
	i  int
	in *interner // nil: no interning
	// compact, when set, says counters are [id, amount] pairs into its table.
	compact *bundles.Compact
}

// interner holds the strings and limits decisions have returned. It belongs
// to one instance, so it needs no lock; it stops growing at maxInterned
// entries (a policy has a bounded number of distinct strings, but messages
// built from a tool name are not).
type interner struct {
	strs   map[string]string
	limits map[int64]*int64
}

const maxInterned = 4096

func newInterner() *interner {
	return &interner{strs: map[string]string{}, limits: map[int64]*int64{}}
}

func (in *interner) str(b []byte) string {
	if s, ok := in.strs[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in.strs) < maxInterned {
		in.strs[s] = s
	}
	return s
}

// limit returns a pointer to v shared by every decision of the instance:
// decisions are read-only.
func (in *interner) limit(v int64) *int64 {
	if p, ok := in.limits[v]; ok {
		return p
	}
	p := &v
	if len(in.limits) < maxInterned {
		in.limits[v] = p
	}
	return p
}

func (p *resultParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *resultParser) eat(c byte) bool {
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *resultParser) end() bool {
	p.ws()
	return p.i == len(p.b)
}

func (p *resultParser) null() bool {
	p.ws()
	if len(p.b)-p.i >= 4 && string(p.b[p.i:p.i+4]) == "null" {
		p.i += 4
		return true
	}
	return false
}

// raw returns the bytes of a string with no escapes and only printable
// ASCII, without its quotes.
func (p *resultParser) raw() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if c == '"' {
			p.i++
			return p.b[start : p.i-1], true
		}
		if c < 0x20 || c == '\\' || c >= 0x80 {
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// str reads a string; null reads as "". Common values are interned.
func (p *resultParser) str() (string, bool) {
	if p.null() {
		return "", true
	}
	r, ok := p.raw()
	if !ok {
		return "", false
	}
	switch string(r) {
	case "":
		return "", true
	case "allow":
		return "allow", true
	case "deny":
		return "deny", true
	case "require_approval":
		return "require_approval", true
	case "minute":
		return "minute", true
	case "hour":
		return "hour", true
	case "day":
		return "day", true
	}
	if p.in != nil {
		return p.in.str(r), true
	}
	return string(r), true
}

func (p *resultParser) int() (int64, bool) {
	p.ws()
	neg := false
	if p.i < len(p.b) && p.b[p.i] == '-' {
		neg = true
		p.i++
	}
	start := p.i
	var v int64
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		if v > (1<<63-1-9)/10 {
			return 0, false // may overflow: let encoding/json say
		}
		v = v*10 + int64(p.b[p.i]-'0')
		p.i++
	}
	n := p.i - start
	if n == 0 || (n > 1 && p.b[start] == '0') {
		return 0, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	if neg {
		v = -v
	}
	return v, true
}

// object calls field for each key of an object; a repeated key, or one
// field rejects, sends the caller to the fallback.
func (p *resultParser) object(field func(key []byte) (bit uint, ok bool)) bool {
	if !p.eat('{') {
		return false
	}
	if p.eat('}') {
		return true
	}
	var seen uint
	for {
		key, ok := p.raw()
		if !ok || !p.eat(':') {
			return false
		}
		bit, ok := field(key)
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		if p.eat(',') {
			continue
		}
		return p.eat('}')
	}
}

func (p *resultParser) resultSet(d *bundles.Decision) bool {
	if !p.eat('[') {
		return false
	}
	return p.object(func(key []byte) (uint, bool) {
		if string(key) != "result" {
			return 0, false
		}
		return 1, p.decision(d)
	}) && p.eat(']')
}

func (p *resultParser) decision(d *bundles.Decision) bool {
	return p.object(func(key []byte) (uint, bool) {
		var ok bool
		var s string
		switch string(key) {
		case "decision":
			s, ok = p.str()
			d.Decision = bundles.Outcome(s)
			return 1, ok
		case "rule":
			d.Rule, ok = p.str()
			return 2, ok
		case "message":
			d.Message, ok = p.str()
			return 4, ok
		case "counters":
			return 8, p.counters(d)
		case "approval":
			return 16, p.approval(d)
		case "shadow":
			return 32, p.shadow(d)
		}
		return 0, false
	})
}

func (p *resultParser) counters(d *bundles.Decision) bool {
	if p.null() {
		return true
	}
	if !p.eat('[') {
		return false
	}
	d.Counters = []bundles.Reservation{}
	if p.eat(']') {
		return true
	}
	for {
		if p.compact != nil {
			// [id, amount]
			if !p.eat('[') {
				return false
			}
			id, ok := p.int()
			if !ok || !p.eat(',') {
				return false
			}
			var amount int64
			invalid := p.null() // no amount: the host denies when it reaches it
			if !invalid {
				if amount, ok = p.int(); !ok {
					return false
				}
			}
			if !p.eat(']') {
				return false
			}
			c, ok := counterByID(p.compact, id, amount)
			if !ok {
				return false
			}
			c.Invalid = invalid
			d.Counters = append(d.Counters, c)
			if p.eat(',') {
				continue
			}
			return p.eat(']')
		}
		var r bundles.Reservation
		ok := p.object(func(key []byte) (uint, bool) {
			var ok bool
			switch string(key) {
			case "key":
				r.Key, ok = p.str()
				return 1, ok
			case "amount":
				if p.null() {
					r.Invalid = true
					return 2, true
				}
				r.Amount, ok = p.int()
				return 2, ok
			case "limit":
				if p.null() {
					r.Limit = nil
					return 4, true
				}
				v, ok := p.int()
				if p.in != nil {
					r.Limit = p.in.limit(v)
				} else {
					r.Limit = &v
				}
				return 4, ok
			case "window":
				r.Window, ok = p.str()
				return 8, ok
			case "rule":
				r.Rule, ok = p.str()
				return 16, ok
			case "message":
				r.Message, ok = p.str()
				return 32, ok
			}
			return 0, false
		})
		if !ok {
			return false
		}
		d.Counters = append(d.Counters, r)
		if p.eat(',') {
			continue
		}
		return p.eat(']')
	}
}

func (p *resultParser) approval(d *bundles.Decision) bool {
	if p.null() {
		return true
	}
	a := new(bundles.Approval)
	d.Approval = a
	return p.object(func(key []byte) (uint, bool) {
		var ok bool
		switch string(key) {
		case "rule":
			a.Rule, ok = p.str()
			return 1, ok
		case "timeout_seconds":
			if p.null() {
				return 2, true
			}
			a.TimeoutSeconds, ok = p.int()
			return 2, ok
		}
		return 0, false
	})
}

func (p *resultParser) shadow(d *bundles.Decision) bool {
	if p.null() {
		return true
	}
	if !p.eat('[') {
		return false
	}
	d.Shadow = []bundles.ShadowOutcome{}
	if p.eat(']') {
		return true
	}
	for {
		var s bundles.ShadowOutcome
		ok := p.object(func(key []byte) (uint, bool) {
			var ok bool
			switch string(key) {
			case "would":
				s.Would, ok = p.str()
				return 1, ok
			case "rule":
				s.Rule, ok = p.str()
				return 2, ok
			case "message":
				s.Message, ok = p.str()
				return 4, ok
			}
			return 0, false
		})
		if !ok {
			return false
		}
		d.Shadow = append(d.Shadow, s)
		if p.eat(',') {
			continue
		}
		return p.eat(']')
	}
}
