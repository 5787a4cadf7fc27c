// Package policy is the front of the compiler (what CI runs): it reads
// PolicyLayer policy v1 YAML files, with toolgate's extensions, into typed
// values that keep every field's file position, and lints them.
//
// Parse turns one file into a [File] and the problems found on the way;
// [Lint] checks a whole set of files together (the rules that span files,
// such as servers whose files disagree on default). Every problem is a
// [Diagnostic] that prints as "file:line:col: message".
package policy
