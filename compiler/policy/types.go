package policy

import (
	"fmt"
	"time"
)

// Pos is a 1-based line and column in a policy file.
type Pos struct {
	Line, Col int
}

// Diagnostic is one problem in a policy file.
type Diagnostic struct {
	Path string
	Pos  Pos
	Msg  string
}

func (d Diagnostic) String() string {
	return fmt.Sprintf("%s:%d:%d: %s", d.Path, d.Pos.Line, d.Pos.Col, d.Msg)
}

func (d Diagnostic) Error() string { return d.String() }

// Actions a rule may take. The zero value of Rule.Action means Evaluate.
const (
	ActionEvaluate        = "evaluate"
	ActionDeny            = "deny"
	ActionRequireApproval = "require_approval" // extension
)

// ModeShadow marks a file or rule whose outcome is logged, not enforced.
const ModeShadow = "shadow"

// Wildcard is the tools key (and hide entry) that stands for every tool.
const Wildcard = "*"

// GlobalScope is the counter scope of rules under the "*" key.
const GlobalScope = "_global"

// DefaultApprovalTimeout applies when a require_approval rule sets none.
const DefaultApprovalTimeout = 15 * time.Minute

// File is one parsed policy file. Zero values mean what the YAML's absence
// means: Default "" is allow, Mode "" is enforce.
type File struct {
	// Path is the file's path as given to Parse (repository-relative in a build).
	Path        string
	Version     string
	Description string
	// Default is "allow" or "deny" after Parse (absent means allow).
	Default    string
	DefaultPos Pos
	// Server is the server this file governs: its `server:` field, else the
	// file's base name without extension.
	Server    string
	ServerPos Pos
	// Mode is "" or "shadow" (extension).
	Mode string
	Hide []Name
	// Tools are the keys of `tools`, in file order.
	Tools []Tool
}

// Name is a string with the position where it was written.
type Name struct {
	Value string
	Pos   Pos
}

// Tool is one key of `tools` and its rules.
type Tool struct {
	// Key is an exact tool name, a glob ("get_*"), or "*".
	Key   string
	Pos   Pos
	Rules []Rule
}

// Rule is one rule, with rate_limit already expanded into State and a
// condition on its counter.
type Rule struct {
	Name   string
	Pos    Pos
	Action string // one of the Action constants; "" is never left after Parse
	// Conditions must all hold for an evaluate rule to let the call through.
	Conditions []Condition
	// When (extension) must all hold for the rule to apply at all.
	When []Condition
	// OnDeny is the message when this rule stops the call; HasOnDeny tells
	// an empty on_deny from none.
	OnDeny    string
	HasOnDeny bool
	// RateLimit is the rule's rate_limit shorthand, if it had one.
	RateLimit *RateLimit
	State     *State
	// Mode is "" or "shadow" (extension).
	Mode string
	// ApprovalTimeout is set for require_approval rules.
	ApprovalTimeout time.Duration
	// Approvers (extension), on a require_approval rule, restricts who may
	// decide its approvals; nil means any approver.
	Approvers *Approvers
}

// Approvers are the people who may decide a rule's approvals: a decider
// qualifies by subject or by one of their groups.
type Approvers struct {
	Subjects []string
	Groups   []string
}

// Condition is one {path, op, value}.
type Condition struct {
	Path  string
	Op    string
	Value any // as yaml.v3 decodes it: int, float64, string, bool, nil, []any, map[string]any
	Pos   Pos
	// HasValue tells `value: null` from no value at all.
	HasValue bool
	// Generated marks the condition a rate_limit expands into.
	Generated bool
}

// RateLimit is "N/window".
type RateLimit struct {
	N      int64
	Window string
}

// State is a rule's counter.
type State struct {
	Counter string
	Window  string
	// Increment is the fixed amount, 1 when absent; unused with IncrementFrom.
	Increment int64
	// IncrementFrom is an "args." path whose number is the amount.
	IncrementFrom string
	Pos           Pos
}

// Windows a counter may have, in seconds.
var Windows = map[string]int64{"minute": 60, "hour": 3600, "day": 86400}
