package opawasm

import "errors"

// Errors returned by [Compile] and [Module.Eval]. Each is wrapped with the
// detail; test with [errors.Is]. An error from Eval means the policy could
// not decide, and the caller must deny (fail closed).
var (
	// ErrABI: the module does not speak the OPA Wasm ABI version 1.2 or
	// later, lacks an export the ABI requires, or lacks the toolgate/decision
	// entrypoint. Rebuild the bundle with a supported OPA version.
	ErrABI = errors.New("module does not implement the OPA Wasm ABI 1.2")
	// ErrUnsupportedBuiltin: the module calls OPA builtins that are not
	// compiled into the Wasm target, and toolgate provides none.
	ErrUnsupportedBuiltin = errors.New("module needs builtins the runtime does not provide")
	// ErrInvalidModule: the bundle's policy.wasm is not a Wasm module wazero
	// can compile, or imports something the OPA ABI does not define.
	ErrInvalidModule = errors.New("policy.wasm is not a valid OPA Wasm module")
	// ErrInvalidData: the bundle's data.json is not valid JSON.
	ErrInvalidData = errors.New("bundle data is not valid JSON")
	// ErrInputTooLarge: the encoded input is over the input size limit
	// (see [WithMaxInputBytes]).
	ErrInputTooLarge = errors.New("decision input is too large")
	// ErrInputTooDeep: the encoded input nests deeper than the depth limit
	// (see [WithMaxDepth]).
	ErrInputTooDeep = errors.New("decision input nests too deeply")
	// ErrInvalidInput: a raw JSON field of the input (arguments,
	// annotations, claims) is not a valid JSON object.
	ErrInvalidInput = errors.New("decision input is not valid JSON")
	// ErrTimeout: the evaluation ran past its deadline and was stopped.
	ErrTimeout = errors.New("policy evaluation timed out")
	// ErrMemoryLimit: the evaluation needed more memory than the page limit
	// allows (see [WithMemoryLimitPages]). It is reported together with
	// [ErrAbort] when the module aborted on a failed allocation.
	ErrMemoryLimit = errors.New("policy evaluation is over the memory limit")
	// ErrAbort: the module called opa_abort; the message says why.
	ErrAbort = errors.New("policy aborted")
	// ErrTrap: the module trapped (out-of-bounds access, stack overflow,
	// unreachable, …).
	ErrTrap = errors.New("policy trapped")
	// ErrNoDecision: the policy gave no result, or a result that is not a
	// decision object.
	ErrNoDecision = errors.New("policy gave no decision")
	// ErrClosed: the module was closed.
	ErrClosed = errors.New("module is closed")
)
