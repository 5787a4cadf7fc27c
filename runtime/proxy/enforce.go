package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"

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
}

// Catalog is what one MCP session's server told the proxy about its tools:
// the annotations of each tool in its last tools/list, which feed
// tool.annotations paths. The zero value is empty and ready; it is safe for
// concurrent use.
type Catalog struct {
	mu          sync.Mutex
	annotations map[string]json.RawMessage // by tool name
}

// Annotations returns the annotations the server last listed for tool, or
// nil.
func (c *Catalog) Annotations(tool string) json.RawMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.annotations[tool]
}

func (c *Catalog) set(tool string, ann json.RawMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.annotations == nil {
		c.annotations = make(map[string]json.RawMessage)
	}
	c.annotations[tool] = ann
}

// callParams is the part of tools/call params a decision reads.
type callParams struct {
	Name      *string         `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
	Meta      struct {
		ProgressToken json.RawMessage `json:"progressToken"`
	} `json:"_meta"`
}

// DecideCall builds the decision input of a tools/call request m from the
// session's catalog and the caller's identity and asks Decide. A request
// whose params do not name a tool, or whose arguments are not an object,
// gets a -32602 error response (returned as the second value) instead.
func (e *Enforcer) DecideCall(ctx context.Context, cat *Catalog, id bundles.Identity, m *message) (Verdict, []byte) {
	var cp callParams
	if len(m.Params) == 0 || m.Params[0] != '{' || json.Unmarshal(m.Params, &cp) != nil || cp.Name == nil {
		return Verdict{}, appendError(nil, m.ID, codeInvalidParams, "tools/call needs params with a string name")
	}
	args := bytes.TrimSpace(cp.Arguments)
	if string(args) == "null" {
		args = nil
	}
	if len(args) > 0 && args[0] != '{' {
		return Verdict{}, appendError(nil, m.ID, codeInvalidParams, "tools/call arguments must be an object")
	}
	in := bundles.Input{Server: e.Server, Tool: *cp.Name, Arguments: args, Identity: id}
	in.Annotations = cat.Annotations(in.Tool)
	if tok := cp.Meta.ProgressToken; e.Notify != nil && validID(tok) {
		ctx = WithProgress(ctx, e.progressReporter(tok))
	}
	return e.Decide(ctx, &in), nil
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
		ann := bytes.TrimSpace(t.Annotations)
		if len(ann) == 0 || ann[0] != '{' {
			ann = nil
		}
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
