package proxy

import (
	"bytes"
	"encoding/json"
	"time"
)

// JSON-RPC error codes the proxy answers with.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeInvalidParams  = -32602
	codeUpstreamGone   = -32000
)

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

// message is the envelope of one JSON-RPC message. Its raw fields are
// copies (json.RawMessage copies on unmarshal) and outlive the line.
type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// classify parses one line. For an invalid message it returns the JSON-RPC
// error code to answer with (-32700: not JSON, -32600: not a JSON-RPC 2.0
// message) and, when the message has a usable id, that id.
func classify(line []byte) (m message, k kind, code int) {
	m, k, code = classifyEnvelope(line)
	if k == kindInvalid && m.ID != nil && !validID(m.ID) {
		m.ID = nil // an error answer to it carries id null
	}
	return m, k, code
}

func classifyEnvelope(line []byte) (m message, k kind, code int) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		if json.Valid(line) {
			// Batches (arrays) are not part of MCP since 2025-06-18; the
			// proxy refuses them rather than let a tools/call through
			// unchecked.
			return m, kindInvalid, codeInvalidRequest
		}
		return m, kindInvalid, codeParseError
	}
	if err := json.Unmarshal(line, &m); err != nil {
		m = message{}
		if json.Valid(line) {
			// Valid JSON, wrong field types: keep a usable id if there is one.
			var idOnly struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(line, &idOnly) == nil && validID(idOnly.ID) {
				m.ID = idOnly.ID
			}
			return m, kindInvalid, codeInvalidRequest
		}
		return m, kindInvalid, codeParseError
	}
	if m.ID != nil && !validID(m.ID) {
		if string(m.ID) != "null" || m.Method != nil {
			m.ID = nil
			return m, kindInvalid, codeInvalidRequest
		}
	}
	if m.JSONRPC != "2.0" {
		return m, kindInvalid, codeInvalidRequest
	}
	switch {
	case m.Method != nil:
		if *m.Method == "" || m.Result != nil || m.Error != nil {
			return m, kindInvalid, codeInvalidRequest
		}
		if m.Params != nil && m.Params[0] != '{' && m.Params[0] != '[' {
			return m, kindInvalid, codeInvalidRequest
		}
		if m.ID == nil {
			if *m.Method == "tools/call" {
				// A tools/call must be a request: as a notification it
				// would reach the server undecided.
				return m, kindInvalid, codeInvalidRequest
			}
			return m, kindNotification, 0
		}
		return m, kindRequest, 0
	case m.ID != nil && (m.Result == nil) != (m.Error == nil):
		return m, kindResponse, 0
	}
	return m, kindInvalid, codeInvalidRequest
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
