package proxy

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// JSON-RPC error codes the proxy answers with.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeInvalidParams  = -32602
	codeUpstreamGone   = -32000
)

// codeMethodNotFound is JSON-RPC's error code for a method the server does
// not have.
const codeMethodNotFound = -32601

// CodeDenied is the JSON-RPC error code of a denied tools/call when denials
// are configured as errors ([Enforcer.DenyAsError]). It is outside the codes
// JSON-RPC, MCP and the official SDKs use (the Go SDK reads -32003 and -32004
// as "the connection is closing").
const CodeDenied = -32030

// CodeApprovalRequired is the JSON-RPC error code of a tools/call that waits
// for a person's approval (async mode); its data carries approval_id,
// expires_at (RFC 3339), rule, decision_id and bundle.
const CodeApprovalRequired = -32031

// kind is what a JSON-RPC message is.
type kind uint8

const (
	kindInvalid      kind = iota // not a JSON-RPC 2.0 message
	kindRequest                  // method and id
	kindNotification             // method, no id
	kindResponse                 // id and exactly one of result, error
)

// message is the envelope of one JSON-RPC message, as classify read it.
//
// ID is a copy and outlives the line. Params, Result and Error are views
// into the line classify was given, not copies: they are valid only as long
// as the line is, and a caller that keeps one past it must copy it. Method
// points to a string shared by every message for well-known method names
// (tools/call, tools/list, …): never write through it.
type message struct {
	JSONRPC string
	ID      json.RawMessage
	Method  *string
	Params  json.RawMessage
	Result  json.RawMessage
	Error   json.RawMessage
	// plainNames: every member of the message is an envelope member,
	// spelled exactly, once (set by classify and classifyView).
	plainNames bool
}

// exactNames is exactNames(line, call) for the message classify read from
// line, without reading the envelope's names again when classify found
// them plain.
func (m *message) exactNames(line []byte, call bool) bool {
	if !m.plainNames {
		return exactNames(line, call)
	}
	return !call || m.Params == nil || distinctNames(m.Params, callNames, nil)
}

// classify reads the envelope of one line (see [message] for what the line
// must outlive). For an invalid message it returns the JSON-RPC error code
// to answer with (-32700: not JSON, -32600: not a JSON-RPC 2.0 message) and,
// when the message has a usable id, that id.
//
// It reads the line in one pass that validates all of it as JSON (as
// encoding/json does: at most 10,000 levels of nesting; invalid UTF-8 inside
// strings accepted; white space is JSON's four characters only) and decodes
// nothing but the method and jsonrpc strings, yet it reads what
// encoding/json read into the message struct it replaces: member names
// matched in any case, the last of repeated members counting. Transports
// refuse such ambiguous messages (exactNames) before they act on them.
func classify(line []byte) (m message, k kind, code int) {
	m, k, code = classifyView(line)
	if m.ID != nil {
		m.ID = bytes.Clone(m.ID)
	}
	return m, k, code
}

// classifyView is classify with ID a view into line too.
func classifyView(line []byte) (m message, k kind, code int) {
	var e envelope
	switch scanEnvelope(line, &e) {
	case scanNotJSON:
		return m, kindInvalid, codeParseError
	case scanNotObject:
		// Batches (arrays) are not part of MCP since 2025-06-18; the
		// proxy refuses them rather than let a tools/call through
		// unchecked.
		return m, kindInvalid, codeInvalidRequest
	}
	id := e.member[memberID]
	if e.typeError {
		// Valid JSON, wrong member types: keep a usable id if there is one.
		if validID(id) {
			m.ID = id
		}
		return m, kindInvalid, codeInvalidRequest
	}
	m.ID, m.Params, m.Result, m.Error = id, e.member[memberParams], e.member[memberResult], e.member[memberError]
	m.plainNames = !e.mixed
	if method := e.member[memberMethod]; len(method) > 0 && method[0] == '"' {
		m.Method = methodName(method)
	}
	if jsonrpc := e.member[memberJSONRPC]; len(jsonrpc) > 0 {
		m.JSONRPC = jsonrpcVersion(jsonrpc)
	}
	k, code = m.kind()
	if k == kindInvalid && m.ID != nil && !validID(m.ID) {
		m.ID = nil // an error answer to it carries id null
	}
	return m, k, code
}

// kind tells what a well-formed envelope is (the checks after decoding).
func (m *message) kind() (kind, int) {
	if m.ID != nil && !validID(m.ID) {
		if string(m.ID) != "null" || m.Method != nil {
			m.ID = nil
			return kindInvalid, codeInvalidRequest
		}
	}
	if m.JSONRPC != "2.0" {
		return kindInvalid, codeInvalidRequest
	}
	switch {
	case m.Method != nil:
		if *m.Method == "" || m.Result != nil || m.Error != nil {
			return kindInvalid, codeInvalidRequest
		}
		if m.Params != nil && m.Params[0] != '{' && m.Params[0] != '[' {
			return kindInvalid, codeInvalidRequest
		}
		if m.ID == nil {
			if *m.Method == "tools/call" {
				// A tools/call must be a request: as a notification it
				// would reach the server undecided.
				return kindInvalid, codeInvalidRequest
			}
			return kindNotification, 0
		}
		return kindRequest, 0
	case m.ID != nil && (m.Result == nil) != (m.Error == nil):
		return kindResponse, 0
	}
	return kindInvalid, codeInvalidRequest
}

// looksLikeNotification reports whether an invalid message has a method
// but no id: JSON-RPC answers no notification, even a bad one. As in
// classify, names match in any case.
func looksLikeNotification(line []byte) bool {
	var e envelope
	return scanEnvelope(line, &e) == scanObject && e.present&(1<<memberMethod) != 0 && e.present&(1<<memberID) == 0
}

// validID says whether id is a JSON-RPC request id: a string or a number.
func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return false
	}
	switch c := id[0]; {
	case c == '"':
		return true
	case c == '-' || (c >= '0' && c <= '9'):
		return true
	}
	return false
}

// idKey returns the key the proxy knows a request id by (id: a valid JSON
// value). A server decodes ids before it echoes them, so ids that decode
// alike must share a key — "a" and "\u0061"; 1, 1.0, 1e0 and
// 1.000000000000000001; 0 and -0 — or one request's answer could be taken
// for another's (a client could have an allowed call's counters rolled
// back by the error answering a bogus request). The key is id itself when
// it is plain (a string of ASCII without escapes, an integer of at most 15
// digits other than -0), else the canonical JSON of its decoded value: a
// string re-encoded with only the escapes JSON requires, a number as
// its float64's shortest decimal (as a server in JavaScript reads it).
// Other values (null, objects in a notification's requestId) are their
// own key.
func idKey(id []byte) []byte {
	if len(id) == 0 {
		return id
	}
	switch c := id[0]; {
	case c == '"':
		inner := id[1 : len(id)-1]
		for _, b := range inner {
			if b == '\\' || b >= utf8.RuneSelf {
				var buf [64]byte
				decoded, _ := appendUnquoted(buf[:0], id)
				return appendCanonicalString(make([]byte, 0, len(decoded)+2), decoded)
			}
		}
		return id
	case c == '-' || (c >= '0' && c <= '9'):
		digits := id
		if c == '-' {
			digits = id[1:]
		}
		plain := len(digits) <= 15 && string(id) != "-0"
		for _, b := range digits {
			plain = plain && b >= '0' && b <= '9'
		}
		if plain {
			return id
		}
		f, err := strconv.ParseFloat(string(id), 64)
		if err != nil { // beyond float64's range: one key per spelling
			return id
		}
		if f == 0 {
			f = 0 // -0 reads as 0
		}
		return strconv.AppendFloat(nil, f, 'f', -1, 64)
	}
	return id
}

// appendCanonicalString appends s (valid UTF-8) as a JSON string literal
// with only the escapes JSON requires: quote, backslash and control
// characters.
func appendCanonicalString(dst, s []byte) []byte {
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

const hexDigits = "0123456789abcdef"

// blankCRs turns every carriage return in line into a space.
func blankCRs(line []byte) {
	for i := bytes.IndexByte(line, '\r'); i >= 0; i = bytes.IndexByte(line, '\r') {
		line[i] = ' '
	}
}

// stringOrNull says whether a member's raw value, if present, is a string
// or null: what encoding/json decodes into a Go string or *string.
func stringOrNull(v []byte) bool {
	return len(v) == 0 || v[0] == '"' || v[0] == 'n'
}

// Well-known method names, shared by every message that carries one.
var methodNames = func() map[string]*string {
	m := map[string]*string{}
	for _, s := range []string{
		"initialize", "ping", "tools/call", "tools/list", "resources/list", "resources/read",
		"resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/list",
		"prompts/get", "completion/complete", "logging/setLevel", "sampling/createMessage",
		"roots/list", "elicitation/create", "notifications/initialized", "notifications/cancelled",
		"notifications/progress", "notifications/message", "notifications/roots/list_changed",
		"notifications/tools/list_changed", "notifications/resources/list_changed",
		"notifications/resources/updated", "notifications/prompts/list_changed",
	} {
		m[s] = &s
	}
	return m
}()

// methodName decodes a method's string literal (quotes included).
func methodName(lit []byte) *string {
	if p, ok := methodNames[string(lit[1:len(lit)-1])]; ok { // no allocation
		return p
	}
	s := decodeString(lit)
	return &s
}

// jsonrpcVersion decodes the jsonrpc member's string literal.
func jsonrpcVersion(lit []byte) string {
	if string(lit) == `"2.0"` {
		return "2.0"
	}
	return decodeString(lit)
}

// decodeString decodes a string literal as encoding/json does (see
// appendUnquoted).
func decodeString(lit []byte) string {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner)
	}
	var buf [64]byte
	b, _ := appendUnquoted(buf[:0], lit)
	return string(b)
}

// appendUnquoted appends the value of the string literal lit (quotes
// included; it must be valid JSON) to dst, decoded as encoding/json decodes
// it: escapes resolved, and each invalid UTF-8 byte and each \u escape of a
// UTF-16 surrogate that is not half of a pair replaced by U+FFFD. exact is
// false when something was replaced: the literal means different strings
// to different JSON parsers.
func appendUnquoted(dst, lit []byte) (_ []byte, exact bool) {
	exact = true
	s := lit[1 : len(lit)-1]
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			e := s[i+1]
			if e != 'u' {
				dst = append(dst, unescape[e])
				i += 2
				continue
			}
			r := rune(hex4(s[i+2:]))
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					if pair := utf16.DecodeRune(r, rune(hex4(s[i+2:]))); pair != utf8.RuneError {
						dst = utf8.AppendRune(dst, pair)
						i += 6
						continue
					}
				}
				r, exact = utf8.RuneError, false
			}
			dst = utf8.AppendRune(dst, r)
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			r, n := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && n == 1 {
				dst, exact = utf8.AppendRune(dst, utf8.RuneError), false
			} else {
				dst = append(dst, s[i:i+n]...)
			}
			i += n
		}
	}
	return dst, exact
}

// unescape maps the letter of a one-letter escape to the byte it stands
// for.
var unescape = [256]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// hex4 decodes the 4 hex digits that start h (already validated).
func hex4(h []byte) uint16 {
	var v uint16
	for _, c := range h[:4] {
		v <<= 4
		switch {
		case c <= '9':
			v |= uint16(c - '0')
		case c >= 'a':
			v |= uint16(c - 'a' + 10)
		default:
			v |= uint16(c - 'A' + 10)
		}
	}
	return v
}

// The members of a JSON-RPC envelope.
const (
	memberJSONRPC = iota
	memberID
	memberMethod
	memberParams
	memberResult
	memberError
	numMembers
)

var envelopeMembers = [numMembers]string{"jsonrpc", "id", "method", "params", "result", "error"}

// envelope is what scanEnvelope finds in a top-level object.
type envelope struct {
	member    [numMembers][]byte // each member's raw value (a view), nil when absent
	present   uint8              // bit i: member i appears
	typeError bool               // jsonrpc or method is neither a string nor null
	// mixed: some member is not an envelope member spelled exactly
	// without escapes, or one repeats. Without it the message's names
	// are known distinct (see [message.exactNames]).
	mixed bool
}

// Results of scanEnvelope.
const (
	scanObject    = iota // a JSON object; the envelope is filled in
	scanNotObject        // valid JSON, but not an object
	scanNotJSON          // not one JSON value
)

// scanEnvelope validates line as one JSON value (white space around it
// allowed) and, when it is an object, records its envelope members in e.
func scanEnvelope(line []byte, e *envelope) int {
	i := lexSpace(line, 0)
	if i == len(line) {
		return scanNotJSON
	}
	if line[i] != '{' {
		if j := lexValue(line, i, 0); j >= 0 && lexSpace(line, j) == len(line) {
			return scanNotObject
		}
		return scanNotJSON
	}
	if !scanMembers(line, i, e.add) {
		return scanNotJSON
	}
	return scanObject
}

// add records one member of the top-level object; key is its name's string
// literal, quotes included. As encoding/json reads the members into a
// struct, a name matches in any case, a later member replaces an earlier
// one, and null leaves a string as it was.
func (e *envelope) add(key, value []byte) {
	i, _ := memberIndex(key)
	if i < 0 {
		e.mixed = true
		return
	}
	if e.present&(1<<i) != 0 || string(key[1:len(key)-1]) != envelopeMembers[i] {
		e.mixed = true // repeated, or spelled otherwise
	}
	e.present |= 1 << i
	if i == memberJSONRPC || i == memberMethod {
		if !stringOrNull(value) {
			e.typeError = true
		}
		if i == memberJSONRPC && value[0] == 'n' {
			return
		}
	}
	e.member[i] = value
}

// memberIndex finds the envelope member a name's string literal names:
// exactly, or (exact false) the way encoding/json matches names, ignoring
// case. It returns -1 for any other name.
func memberIndex(key []byte) (i int, exact bool) {
	switch string(key) {
	case `"jsonrpc"`:
		return memberJSONRPC, true
	case `"id"`:
		return memberID, true
	case `"method"`:
		return memberMethod, true
	case `"params"`:
		return memberParams, true
	case `"result"`:
		return memberResult, true
	case `"error"`:
		return memberError, true
	}
	return foldedIndex(key, envelopeMembers[:])
}

// foldedIndex returns the index of the name in names that the string
// literal key equals when case is ignored (as encoding/json matches a
// member to a struct field), or -1.
func foldedIndex(key []byte, names []string) (int, bool) {
	if len(key) > 96 {
		return -1, false // longer than any name, even spelled with escapes
	}
	var buf [96]byte
	name, _ := appendUnquoted(buf[:0], key)
	for i, n := range names {
		if bytes.EqualFold(name, []byte(n)) {
			return i, string(name) == n
		}
	}
	return -1, false
}

// maxNesting is how deeply values may nest, as in encoding/json.
const maxNesting = 10000

// lexSpace returns the index of the first byte at or after i that is not
// JSON white space.
func lexSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// lexValue validates the JSON value that starts at b[i] and returns the
// index just past it, or -1 when there is no valid value there. depth is
// how many containers already enclose it. It keeps its own stack, so any
// nesting is safe to scan.
func lexValue(b []byte, i, depth int) int {
	if i >= len(b) {
		return -1
	}
	if c := b[i]; c != '{' && c != '[' {
		return lexScalar(b, i)
	}
	var open levels // which open containers are objects
	base := depth
	for {
		// A value starts at i.
		if i >= len(b) {
			return -1
		}
		if c := b[i]; c == '{' || c == '[' {
			if depth >= maxNesting {
				return -1
			}
			open.set(depth-base, c == '{')
			depth++
			i = lexSpace(b, i+1)
			if i < len(b) && b[i] == c+2 { // '}' or ']'
				i++
				depth--
			} else {
				if c == '{' {
					if i = lexMemberName(b, i); i < 0 {
						return -1
					}
				}
				continue
			}
		} else if i = lexScalar(b, i); i < 0 {
			return -1
		}
		// A value ended at i: close containers until one goes on.
		for {
			if depth == base {
				return i
			}
			if i = lexSpace(b, i); i == len(b) {
				return -1
			}
			inObject := open.get(depth - base - 1)
			if b[i] == ',' {
				i = lexSpace(b, i+1)
				if inObject {
					if i = lexMemberName(b, i); i < 0 {
						return -1
					}
				}
				break
			}
			if (inObject && b[i] != '}') || (!inObject && b[i] != ']') {
				return -1
			}
			i++
			depth--
		}
	}
}

// levels is a stack of bits, one per nesting level: the first 64 in a
// word, deeper ones in a slice grown when needed.
type levels struct {
	low  uint64
	high []uint64
}

func (l *levels) set(level int, v bool) {
	w, bit := &l.low, uint64(1)<<(level%64)
	if level >= 64 {
		i := level/64 - 1
		for len(l.high) <= i {
			l.high = append(l.high, 0)
		}
		w = &l.high[i]
	}
	if v {
		*w |= bit
	} else {
		*w &^= bit
	}
}

func (l *levels) get(level int) bool {
	w := l.low
	if level >= 64 {
		w = l.high[level/64-1]
	}
	return w&(uint64(1)<<(level%64)) != 0
}

// lexScalar returns the index just past the string, number, true, false
// or null that starts at b[i], or -1.
func lexScalar(b []byte, i int) int {
	switch b[i] {
	case '"':
		return lexString(b, i)
	case 't':
		return lexLiteral(b, i, "true")
	case 'f':
		return lexLiteral(b, i, "false")
	case 'n':
		return lexLiteral(b, i, "null")
	}
	return lexNumber(b, i)
}

// lexMemberName skips a member name, the colon after it and the white
// space around, returning the index where the member's value starts.
func lexMemberName(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	if i = lexString(b, i); i < 0 {
		return -1
	}
	if i = lexSpace(b, i); i == len(b) || b[i] != ':' {
		return -1
	}
	return lexSpace(b, i+1)
}

// lexString returns the index just past the string literal that starts
// at b[i] (a quote), or -1. Like encoding/json it accepts any byte but a
// control character inside, valid UTF-8 or not.
func lexString(b []byte, i int) int {
	for i++; i < len(b); {
		c := b[i]
		if lexPlain[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			return i + 1
		case c < 0x20:
			return -1
		}
		// A backslash.
		if i+1 >= len(b) {
			return -1
		}
		switch b[i+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			i += 2
		case 'u':
			if i+6 > len(b) || !lexHex(b[i+2]) || !lexHex(b[i+3]) || !lexHex(b[i+4]) || !lexHex(b[i+5]) {
				return -1
			}
			i += 6
		default:
			return -1
		}
	}
	return -1
}

// lexPlain marks the bytes that stand for themselves inside a string literal.
var lexPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func lexHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func lexLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// lexNumber returns the index just past the number that starts at b[i],
// or -1.
func lexNumber(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = lexDigits(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := lexDigits(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := lexDigits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func lexDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// appendError appends a JSON-RPC error response; a nil id is written null.
func appendError(dst []byte, id json.RawMessage, code int, msg string) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	if id == nil {
		id = json.RawMessage("null")
	}
	dst = append(dst, id...)
	dst = append(dst, `,"error":{"code":`...)
	dst = appendInt(dst, code)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, msg)
	return append(dst, "}}"...)
}

// appendDenial appends the CallToolResult a denied call is answered with
// (architecture.md, "Proxy").
func appendDenial(dst []byte, id json.RawMessage, v *Verdict) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"result":{"content":[{"type":"text","text":`...)
	dst = appendString(dst, v.Message)
	dst = append(dst, `}],"isError":true,"_meta":{"toolgate/decision_id":`...)
	dst = appendString(dst, v.DecisionID)
	dst = append(dst, `,"toolgate/rule":`...)
	dst = appendString(dst, v.Rule)
	dst = append(dst, `,"toolgate/bundle":`...)
	dst = appendString(dst, v.Bundle)
	return append(dst, "}}}"...)
}

// appendDenialError appends the JSON-RPC error a denied call is answered
// with when denials are configured as errors: the message as the error
// message, and decision_id, rule and bundle in its data.
func appendDenialError(dst []byte, id json.RawMessage, v *Verdict) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"error":{"code":`...)
	dst = appendInt(dst, CodeDenied)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, v.Message)
	dst = append(dst, `,"data":{"decision_id":`...)
	dst = appendString(dst, v.DecisionID)
	dst = append(dst, `,"rule":`...)
	dst = appendString(dst, v.Rule)
	dst = append(dst, `,"bundle":`...)
	dst = appendString(dst, v.Bundle)
	return append(dst, "}}}"...)
}

// appendApprovalError appends the JSON-RPC error a call waiting for approval
// is answered with.
func appendApprovalError(dst []byte, id json.RawMessage, v *Verdict) []byte {
	dst = append(dst, `{"jsonrpc":"2.0","id":`...)
	dst = append(dst, id...)
	dst = append(dst, `,"error":{"code":`...)
	dst = appendInt(dst, CodeApprovalRequired)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, v.Message)
	dst = append(dst, `,"data":{"approval_id":`...)
	dst = appendString(dst, v.Approval.ID)
	dst = append(dst, `,"expires_at":`...)
	dst = appendString(dst, v.Approval.ExpiresAt.UTC().Format(time.RFC3339))
	dst = append(dst, `,"rule":`...)
	dst = appendString(dst, v.Approval.Rule)
	dst = append(dst, `,"decision_id":`...)
	dst = appendString(dst, v.DecisionID)
	dst = append(dst, `,"bundle":`...)
	dst = appendString(dst, v.Bundle)
	return append(dst, "}}}"...)
}
