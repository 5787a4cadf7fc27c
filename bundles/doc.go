// Package bundles is the contract shared by the compiler (what CI runs) and
// the runtime (what the proxy runs): the decision input and result types of
// policy.md §6 and the bundle file format of architecture.md.
//
// The compiler writes bundles with [Write]; the runtime reads them with [Read].
// Neither side imports the other: they meet here.
package bundles
