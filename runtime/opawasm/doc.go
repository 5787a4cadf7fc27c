// Package opawasm evaluates toolgate's compiled policy, the OPA-produced
// policy.wasm of a bundle, on wazero. It is the first step of the proxy's side
// of the pipeline: the bundle's Wasm module is compiled once with [Compile],
// and every tools/call is decided by [Module.Eval].
//
// The module speaks OPA's Wasm ABI (version 1.2 or later, for opa_eval). The
// ABI glue is written here from the public ABI description; it provides no
// OPA builtins, so a module that needs any builtin outside the natives the
// Wasm target compiles in is refused at [Compile] time with
// [ErrUnsupportedBuiltin].
//
// Wasm is untrusted: each evaluation is bounded in input size and nesting
// depth (checked before the input enters Wasm), in memory (the page limit of
// the memory the module imports) and, for inputs over a size threshold, in
// time (see [WithTimeout] and [WithGuardThreshold]).
package opawasm
