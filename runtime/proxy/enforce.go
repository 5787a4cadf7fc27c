package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/toolgate/toolgate/bundles"
)

// Enforcer is the transport-independent half of the proxy: it turns a
// client's tools/call into a decision input and a [Verdict], writes the
// answer to a denied call, and filters a server's tools/list response.
// Transports (stdio, Streamable HTTP) own the framing, the pending-request
// bookkeeping and the peers; they share one Enforcer. An Enforcer is
// immutable after construction and safe for concurrent use.
type Enforcer struct {
	// Server names the MCP server in decision inputs.
	Server string
	// Decide decides a tools/call. Required.
	Decide func(ctx context.Context, in *bundles.Input) Verdict
	// Hidden reports whether a tool listed by the server is hidden from the
	// client; the input has empty arguments. Nil hides nothing.
	Hidden func(ctx context.Context, in *bundles.Input) bool
	// DenyAsError answers a denied call with a JSON-RPC error (code
	// [CodeDenied], data carrying decision_id, rule and bundle) instead of
	// the default isError CallToolResult the model can read.
	DenyAsError bool
	// Notify, when set, writes a notification to the client; a call held
	// for approval that carries a progress token reports through it while
	// it waits.
	Notify func(line []byte) error
	// ReadsAnnotations reports whether the policy in force reads
	// tool.annotations paths. When it does, a tools/call waits while the
	// proxy lists the server's tools itself (every page) if it names a tool
	// the session's [Catalog] does not hold, or the server said its tools
	// changed, unless a whole listing (the proxy's, or a client's) has been
	// read since: the annotations must be those the server announces,
	// whether or not the client listed them. Nil never lists.
	ReadsAnnotations func() bool
}

// Catalog is what one MCP session's server told the proxy about its tools:
// the annotations of each tool in its last tools/list, which feed
// tool.annotations paths. The zero value is empty and ready; it is safe for
// concurrent use.
type Catalog struct {
	mu    sync.Mutex           // guards tools, listing, and changes' writes
	tools map[string]toolEntry // by tool name
	// changes counts the server's notifications that its tools changed: a
	// listing started before one is out of date, and while the catalog is
	// not complete after one, the annotations it holds may be too.
	changes atomic.Uint64
	// complete is set once a whole listing has been read since the server
	// last said its list changed: every page of the proxy's own (at most
	// MaxToolPages), or a client's tools/list that asked for no cursor and
	// got no next one. A tool the catalog does not hold then has no
	// annotations.
	complete atomic.Bool
	// listing is the proxy's own listing in flight, for transports whose
	// calls wait on it in their own goroutines (HTTP, the bridge); nil when
	// none.
	listing *listing
}

// toolEntry is one listed tool: its name (kept so that a call's input can
// use it rather than a new copy) and its annotations.
type toolEntry struct {
	name        string
	annotations json.RawMessage
}

// lookup returns the listed tool whose name is the bytes name, if any.
func (c *Catalog) lookup(name []byte) (toolEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.tools[string(name)]
	return t, ok
}

// Stale records that the server said its list of tools changed
// (notifications/tools/list_changed): the next call that needs annotations
// waits for a new listing, and a listing under way is out of date.
func (c *Catalog) Stale() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changes.Add(1)
	c.complete.Store(false)
}

// needsListing reports whether a call to a tool the catalog holds (listed)
// or not must wait for the proxy to list the server's tools: no whole
// listing since the last change, and the tool unknown or the catalog
// changed since.
func (c *Catalog) needsListing(listed bool) bool {
	return !c.complete.Load() && (!listed || c.changes.Load() > 0)
}

// generation returns how many times the server said its tools changed: a
// listing started now is current until it changes.
func (c *Catalog) generation() uint64 { return c.changes.Load() }

// replace makes tools, read by a listing started at generation gen, the
// catalog, complete, unless the server said its tools changed since; it
// reports whether it did.
func (c *Catalog) replace(tools map[string]toolEntry, gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changes.Load() != gen {
		return false
	}
	c.tools = tools
	c.complete.Store(true)
	return true
}

// adopt makes the complete listing in from the catalog, unless the
// catalog is complete already.
func (c *Catalog) adopt(from *Catalog) {
	from.mu.Lock()
	tools := from.tools
	from.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.complete.Load() {
		return
	}
	c.tools = tools
	c.complete.Store(true)
}

func (c *Catalog) set(tool string, ann json.RawMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tools == nil {
		c.tools = make(map[string]toolEntry)
	}
	c.tools[tool] = toolEntry{name: tool, annotations: ann}
}

// callParams is what a decision reads of tools/call params: views into
// them.
type callParams struct {
	name          []byte // the name's string literal, quotes included
	arguments     []byte // nil when absent or null
	progressToken []byte // in _meta; nil when absent
}

// Why a tools/call's params are refused (-32602).
const (
	errNeedName        = "tools/call needs params with a string name"
	errArgsObject      = "tools/call arguments must be an object"
	errParamsAmbiguous = "tools/call params name or arguments appear twice, or spelled in another case: servers differ on which counts, so the proxy cannot decide the call"
	errNameEncoding    = "tools/call name is not valid UTF-8 (or holds an unpaired \\u surrogate escape): servers differ on what it names, so the proxy cannot decide the call"
)

var callParamNames = []string{"name", "arguments"}

// scanCallParams reads tools/call params in one pass, validating them, and
// returns why they are refused, or "". Member names are matched exactly;
// name or arguments twice, or in another case, is refused (see
// [classify]).
func scanCallParams(params []byte, cp *callParams) string {
	i := lexSpace(params, 0)
	if i == len(params) || params[i] != '{' {
		return errNeedName
	}
	var seen [2]bool
	ambiguous, badMeta := false, false
	ok := scanMembers(params, i, func(key, value []byte) {
		switch string(key) {
		case `"name"`:
			ambiguous = ambiguous || seen[0]
			seen[0], cp.name = true, value
		case `"arguments"`:
			ambiguous = ambiguous || seen[1]
			seen[1], cp.arguments = true, value
		case `"_meta"`:
			cp.progressToken = nil
			if len(value) > 0 && value[0] == '{' {
				scanMembers(value, 0, func(key, value []byte) {
					if string(key) == `"progressToken"` {
						cp.progressToken = value
					}
				})
			} else {
				badMeta = string(value) != "null"
			}
		default:
			if j, _ := foldedIndex(key, callParamNames); j >= 0 {
				ambiguous = true
			}
		}
	})
	switch {
	case !ok || badMeta:
		return errNeedName
	case ambiguous:
		return errParamsAmbiguous
	case len(cp.name) == 0 || cp.name[0] != '"':
		return errNeedName
	}
	if string(cp.arguments) == "null" {
		cp.arguments = nil
	}
	if len(cp.arguments) > 0 && cp.arguments[0] != '{' {
		return errArgsObject
	}
	return ""
}

// scanMembers validates the object that starts at b[i] (and nothing but
// white space after it) and calls member with each member's name (its
// string literal) and value. It reports whether the object was valid.
func scanMembers(b []byte, i int, member func(key, value []byte)) bool {
	i = lexSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return lexSpace(b, i+1) == len(b)
	}
	for {
		if i == len(b) || b[i] != '"' {
			return false
		}
		ks := i
		if i = lexString(b, i); i < 0 {
			return false
		}
		key := b[ks:i]
		if i = lexSpace(b, i); i == len(b) || b[i] != ':' {
			return false
		}
		vs := lexSpace(b, i+1)
		if i = lexValue(b, vs, 1); i < 0 {
			return false
		}
		member(key, b[vs:i])
		if i = lexSpace(b, i); i == len(b) {
			return false
		}
		if b[i] == '}' {
			return lexSpace(b, i+1) == len(b)
		}
		if b[i] != ',' {
			return false
		}
		i = lexSpace(b, i+1)
	}
}

// toolName returns the tool name a string literal stands for and its
// listed annotations, taking the name from the catalog when it lists the
// tool (no copy); listed says whether it does. ok is false when the literal
// is not a name all JSON parsers read alike: invalid UTF-8, or an unpaired
// surrogate escape.
func toolName(cat *Catalog, lit []byte) (name string, ann json.RawMessage, listed, ok bool) {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		if !utf8.Valid(inner) {
			return "", nil, false, false
		}
		if t, listed := cat.lookup(inner); listed {
			return t.name, t.annotations, true, true
		}
		return string(inner), nil, false, true
	}
	var buf [128]byte
	b, exact := appendUnquoted(buf[:0], lit)
	if !exact {
		return "", nil, false, false
	}
	if t, listed := cat.lookup(b); listed {
		return t.name, t.annotations, true, true
	}
	return string(b), nil, false, true
}

// inputs recycles decision inputs (and their State slices) from call to
// call: Decide must not keep its input.
var inputs = sync.Pool{New: func() any { return new(bundles.Input) }}

// DecideCall builds the decision input of a tools/call request m from the
// session's catalog and the caller's identity and asks Decide. A request
// whose params do not name a tool, or whose arguments are not an object,
// gets a -32602 error response (returned as the second value) instead; so
// does one whose params name or arguments appear twice or spelled in
// another case, or whose name is not valid UTF-8 or holds an unpaired
// surrogate escape (servers read those differently, and the call must be
// decided on what the server will run).
//
// A call that must wait for the proxy to list the server's tools is not
// decided: listFirst is then true. It must wait when the policy in force
// reads tool.annotations and the catalog is not complete, and the catalog
// does not hold the tool the call names or the server said its tools
// changed since the last whole listing.
//
// The input's Arguments are a view into m.Params, which is a view into the
// line the message came in: Decide sees exactly the bytes forwarded, and
// must not keep them (nor the input) past its return.
func (e *Enforcer) DecideCall(ctx context.Context, cat *Catalog, id bundles.Identity, m *message) (v Verdict, errLine []byte, listFirst bool) {
	var cp callParams
	if msg := scanCallParams(m.Params, &cp); msg != "" {
		return Verdict{}, appendError(nil, m.ID, codeInvalidParams, msg), false
	}
	tool, ann, listed, ok := toolName(cat, cp.name)
	if !ok {
		return Verdict{}, appendError(nil, m.ID, codeInvalidParams, errNameEncoding), false
	}
	if e.ReadsAnnotations != nil && cat.needsListing(listed) && e.ReadsAnnotations() {
		return Verdict{}, nil, true
	}
	if tok := cp.progressToken; e.Notify != nil && validID(tok) {
		ctx = WithProgress(ctx, e.progressReporter(tok))
	}
	in := inputs.Get().(*bundles.Input)
	*in = bundles.Input{Server: e.Server, Tool: tool, Annotations: ann, Arguments: cp.arguments, Identity: id, State: in.State[:0]}
	v = e.Decide(ctx, in)
	*in = bundles.Input{State: in.State[:0]}
	inputs.Put(in)
	return v, nil, false
}

// listedAnnotations returns the annotations of a listed tool when they are
// an object, else nil.
func listedAnnotations(raw json.RawMessage) json.RawMessage {
	ann := bytes.TrimSpace(raw)
	if len(ann) == 0 || ann[0] != '{' {
		return nil
	}
	return ann
}

// AppendDenial appends the response to a denied call with request id id:
// an isError CallToolResult, or a JSON-RPC error when DenyAsError is set. A
// call waiting for approval (v.Approval set) always gets a JSON-RPC error,
// code [CodeApprovalRequired], whose data holds approval_id, expires_at and
// rule.
func (e *Enforcer) AppendDenial(dst []byte, id json.RawMessage, v *Verdict) []byte {
	if v.Approval != nil {
		return appendApprovalError(dst, id, v)
	}
	if e.DenyAsError {
		return appendDenialError(dst, id, v)
	}
	return appendDenial(dst, id, v)
}

// listedTool is the part of a listed tool the proxy reads.
type listedTool struct {
	Name        string          `json:"name"`
	Annotations json.RawMessage `json:"annotations"`
}

// FilterTools remembers the annotations of a tools/list response m in cat
// and removes hidden tools. It returns the rewritten response, or nil when
// the response can pass as it came (nothing hidden, or a result it cannot
// read).
func (e *Enforcer) FilterTools(ctx context.Context, cat *Catalog, id bundles.Identity, m *message) []byte {
	var result map[string]json.RawMessage
	if json.Unmarshal(m.Result, &result) != nil {
		return nil
	}
	var tools []json.RawMessage
	if json.Unmarshal(result["tools"], &tools) != nil {
		return nil
	}
	kept := tools[:0]
	hidden := 0
	for _, raw := range tools {
		var t listedTool
		if json.Unmarshal(raw, &t) != nil {
			kept = append(kept, raw)
			continue
		}
		ann := listedAnnotations(t.Annotations)
		cat.set(t.Name, ann)
		if e.Hidden != nil && e.Hidden(ctx, &bundles.Input{Server: e.Server, Tool: t.Name, Annotations: ann, Identity: id}) {
			hidden++
			continue
		}
		kept = append(kept, raw)
	}
	if hidden == 0 {
		return nil
	}
	tb, err := json.Marshal(kept)
	if err != nil {
		return nil
	}
	result["tools"] = tb
	rb, err := json.Marshal(result)
	if err != nil {
		return nil
	}
	out := append([]byte(`{"jsonrpc":"2.0","id":`), m.ID...)
	out = append(out, `,"result":`...)
	out = append(out, rb...)
	return append(out, '}')
}

// progressReporter returns a function that sends the client
// notifications/progress for token, numbering them 1, 2, …
func (e *Enforcer) progressReporter(token json.RawMessage) func(string) {
	token = append(json.RawMessage(nil), token...)
	var n atomic.Int64
	return func(msg string) {
		b := append([]byte(nil), `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":`...)
		b = append(b, token...)
		b = append(b, `,"progress":`...)
		b = appendInt(b, int(n.Add(1)))
		b = append(b, `,"message":`...)
		b = appendString(b, msg)
		e.Notify(append(b, "}}"...))
	}
}
