package identity

import (
	"os"
	"strings"

	"github.com/toolgate/toolgate/bundles"
)

// Environment variables [FromEnv] reads.
const (
	// EnvIdentity holds identity.subject for a stdio proxy.
	EnvIdentity = "TOOLGATE_IDENTITY"
	// EnvGroups holds identity.groups for a stdio proxy, comma-separated.
	EnvGroups = "TOOLGATE_GROUPS"
)

// FromEnv returns the identity of a stdio proxy's caller from the
// environment: subject from TOOLGATE_IDENTITY, groups from TOOLGATE_GROUPS
// (comma-separated; spaces around names and empty names dropped). Unset
// variables give an empty subject and no groups.
//
// Over stdio the local user started the proxy (an MCP client such as
// Claude Desktop runs it), so there is no token to check: the identity is
// configuration. The environment is the fallback of --identity/--groups,
// for clients whose server entries set env more easily than args; see
// [Local].
func FromEnv() bundles.Identity {
	return bundles.Identity{Subject: strings.TrimSpace(os.Getenv(EnvIdentity)), Groups: SplitGroups(os.Getenv(EnvGroups))}
}

// Local returns a stdio proxy's identity: each of subject and groups (the
// --identity and --groups flags) when given, else its environment variable
// of [FromEnv]. The two are decided separately: --identity alice with
// TOOLGATE_GROUPS=eng gives subject alice in group eng.
func Local(subject, groups string) bundles.Identity {
	env := FromEnv()
	id := bundles.Identity{Subject: strings.TrimSpace(subject), Groups: SplitGroups(groups)}
	if id.Subject == "" {
		id.Subject = env.Subject
	}
	if strings.TrimSpace(groups) == "" {
		id.Groups = env.Groups
	}
	return id
}

// SplitGroups splits a comma-separated list of groups, trimming spaces and
// dropping empty names; "" gives nil.
func SplitGroups(s string) []string {
	var out []string
	for _, g := range strings.Split(s, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}
