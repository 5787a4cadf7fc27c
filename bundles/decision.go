package bundles

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Entrypoint is the one Wasm entrypoint every bundle exposes.
const Entrypoint = "toolgate/decision"

// Outcome is what a decision says to do with a call.
type Outcome string

// The three outcomes a decision can have.
const (
	Allow           Outcome = "allow"
	Deny            Outcome = "deny"
	RequireApproval Outcome = "require_approval"
)

// Input is the decision input of policy.md §6. The zero value is a call of
// the empty tool name on the empty server with no arguments, no identity and
// all counters at zero.
type Input struct {
	// Server is the MCP server the call goes to.
	Server string
	// Tool is the called tool's name.
	Tool string
	// Annotations is the tool's MCP annotations object as the server announced
	// it in tools/list, as raw JSON; nil means none.
	Annotations json.RawMessage
	// Arguments is the call's arguments object as raw JSON; nil means {}.
	// Raw fields (Annotations, Arguments, Identity.Claims) must each be one
	// JSON object: the runtime checks that, with size and depth limits,
	// before the input enters Wasm.
	Arguments json.RawMessage
	// Identity is who is calling.
	Identity Identity
	// State holds the counter values the policy may read, keyed
	// "<scope>.<counter>"; a counter not listed reads as 0.
	State []CounterValue
}

// Identity is the caller as the host established it.
type Identity struct {
	Subject string
	Groups  []string
	// Claims is a JSON object of further claims; nil means {}.
	Claims json.RawMessage
}

// CounterValue is one counter's value in the current window.
type CounterValue struct {
	Key   string
	Value int64
}

// AppendJSON appends the input's JSON encoding (policy.md §6) to dst: the
// input as the policy reads it. Raw fields are copied, each number in them
// as the float64 nearest to it (see appendNumbersAsFloat64; most numbers
// are copied unchanged), and so are counter values beyond 2^53: the raw
// fields must already be valid JSON. It allocates only
// when dst must grow.
func (in *Input) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"server":`...)
	dst = AppendString(dst, in.Server)
	dst = append(dst, `,"tool":{"name":`...)
	dst = AppendString(dst, in.Tool)
	dst = append(dst, `,"annotations":`...)
	dst = appendRawObject(dst, in.Annotations)
	dst = append(dst, `},"arguments":`...)
	dst = appendRawObject(dst, in.Arguments)
	dst = append(dst, `,"identity":{"subject":`...)
	dst = AppendString(dst, in.Identity.Subject)
	dst = append(dst, `,"groups":[`...)
	for i, g := range in.Identity.Groups {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, g)
	}
	dst = append(dst, `],"claims":`...)
	dst = appendRawObject(dst, in.Identity.Claims)
	dst = append(dst, `},"state":{`...)
	for i, c := range in.State {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, c.Key)
		dst = append(dst, ':')
		if -1<<53 <= c.Value && c.Value <= 1<<53 {
			dst = strconv.AppendInt(dst, c.Value, 10)
		} else { // a float64, as the policy reads every number
			dst = strconv.AppendFloat(dst, float64(c.Value), 'g', -1, 64)
		}
	}
	return append(dst, "}}"...)
}

func appendRawObject(dst []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(dst, "{}"...)
	}
	return appendNumbersAsFloat64(dst, raw)
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 is replaced by
// U+FFFD, as encoding/json does.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Decision is the result of policy.md §6. A decision is read-only: the
// runtime shares its strings and Limit pointers between decisions.
type Decision struct {
	Decision Outcome `json:"decision"`
	// Rule names the deciding rule as "FILE#KEY/NAME" ("FILE#hide" and
	// "FILE#default" for steps 1 and 2); empty when the call is allowed.
	Rule string `json:"rule"`
	// Message is what the agent is told; empty when the call is allowed.
	Message string `json:"message"`
	// Counters lists, in order, what the host must reserve before it forwards
	// an allowed (or approved) call.
	Counters []Reservation `json:"counters"`
	// Approval is set when Decision is RequireApproval.
	Approval *Approval `json:"approval"`
	// Shadow lists what rules in shadow mode would have done.
	Shadow []ShadowOutcome `json:"shadow"`
}

// Reservation is one counter the host must reserve for a call.
type Reservation struct {
	Key    string `json:"key"`
	Amount int64  `json:"amount"`
	// Invalid marks a counter whose increment_from argument is missing or
	// not a number in the int64 range (JSON "amount": null): the host,
	// reserving in order, denies the call when it reaches it, with
	// "Internal policy error" (policy.md §3: counters are reserved in turn).
	Invalid bool `json:"-"`
	// Limit is the most the counter may reach in its window; nil means the
	// counter only counts and never refuses.
	Limit   *int64 `json:"limit"`
	Window  string `json:"window"`
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

// Approval says which rule asks for a person's approval, and for how long
// the request stays open.
type Approval struct {
	Rule           string `json:"rule"`
	TimeoutSeconds int64  `json:"timeout_seconds"`
}

// ShadowOutcome is what a rule in shadow mode would have decided.
type ShadowOutcome struct {
	// Would is "deny" or "require_approval".
	Would   string `json:"would"`
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

// MsgNoAmount is what a call is told when reservation reaches a counter
// marked Invalid (docs/semantics-choices.md, choice 8), as PolicyLayer
// answers a missing or non-numeric increment_from argument.
const MsgNoAmount = "Internal policy error"

// reservationJSON is a Reservation as JSON: amount null when Invalid.
type reservationJSON struct {
	Key     string `json:"key"`
	Amount  *int64 `json:"amount"`
	Limit   *int64 `json:"limit"`
	Window  string `json:"window"`
	Rule    string `json:"rule"`
	Message string `json:"message"`
}

// MarshalJSON writes r with "amount": null when it is Invalid. Its strings
// are not HTML-escaped: an encoder that escapes does so over the result.
func (r Reservation) MarshalJSON() ([]byte, error) {
	j := reservationJSON{Key: r.Key, Limit: r.Limit, Window: r.Window, Rule: r.Rule, Message: r.Message}
	if !r.Invalid {
		j.Amount = &r.Amount
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(j); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// UnmarshalJSON reads r; "amount": null makes it Invalid (no amount at
// all reads as 0, as before there were invalid counters).
func (r *Reservation) UnmarshalJSON(b []byte) error {
	var j struct {
		reservationJSON
		Amount json.RawMessage `json:"amount"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Reservation{Key: j.Key, Limit: j.Limit, Window: j.Window, Rule: j.Rule, Message: j.Message}
	switch {
	case string(j.Amount) == "null":
		r.Invalid = true
	case j.Amount != nil:
		if err := json.Unmarshal(j.Amount, &r.Amount); err != nil {
			return err
		}
	}
	return nil
}
