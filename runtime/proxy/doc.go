// Package proxy is the runtime stage that sits between MCP clients and MCP
// servers and enforces the active bundle on every tools/call
// (architecture.md, "Proxy").
//
// Two parts meet here. [Stdio] is the transport: it relays newline-delimited
// JSON-RPC between a client and a server process and knows nothing of
// policy; it takes hooks for tools/call (Decide) and for tools/list (Hidden).
// [Policy] supplies those hooks: it evaluates the engine's active bundle,
// reserves counters, writes the audit record and turns the decision into a
// [Verdict].
//
// Hidden tools: a tool the server lists is removed from the client's
// tools/list when its decision, for an input with empty arguments, is
// decided by a rule whose name ends in "#hide" (policy.md §3 step 1: the
// tool is in the policy's hide list). Tools denied for other reasons (for
// instance by default: deny) stay listed; their calls are denied.
package proxy
