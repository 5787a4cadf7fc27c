package identity

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/internal/statedir"
)

// Limits of a grants file; a file over them is refused.
const (
	// MaxGrantsFileSize is the largest grants file read, in bytes.
	MaxGrantsFileSize = 4 << 20
	// MaxGrants is the most grants one file may hold.
	MaxGrants = 10000
	// maxClaimsDepth bounds the nesting of a grant's claims.
	maxClaimsDepth = 16
	// maxClaimsSize bounds one grant's claims, JSON-encoded, in bytes.
	maxClaimsSize = 64 << 10
	// maxErrors is how many problems a parse reports before it gives up.
	maxErrors = 50
)

// TokenPrefix starts every token [NewToken] makes, so that a leaked one is
// recognisable (secret scanners, logs): "tg_" then 43 base64url characters.
const TokenPrefix = "tg_"

// AllServers, alone in a grant's servers, lets it reach every server.
const AllServers = "*"

// Grant is one entry of a grants file: a bearer token (by its hash) and the
// identity it stands for. A Grant from [ParseGrants] or a [Grants] is
// shared: do not modify it or its slices.
type Grant struct {
	// Label names the grant: unique in the file, 1 to 64 of [A-Za-z0-9._-],
	// e.g. alice-laptop. `toolgate grants revoke LABEL` removes it.
	Label string
	// TokenSHA256 is the lowercase hex SHA-256 of the token, never the token.
	TokenSHA256 string
	// Subject is identity.subject. Required.
	Subject string
	// Groups is identity.groups; nil means none.
	Groups []string
	// Claims is identity.claims as one JSON object (keys sorted); nil means
	// {}.
	Claims json.RawMessage
	// Servers lists the servers the token may reach (the proxy's --server
	// names); ["*"] means every server. Required and never empty: a grant
	// must say where it may go.
	Servers []string
	// Expires is when the token stops working; zero means never.
	Expires time.Time
}

// Identity returns the identity the grant stands for; it shares g's slices.
func (g *Grant) Identity() bundles.Identity {
	return bundles.Identity{Subject: g.Subject, Groups: g.Groups, Claims: g.Claims}
}

// Allows reports whether the grant may reach server. A grant listing
// servers does not reach the unnamed server "".
func (g *Grant) Allows(server string) bool {
	for _, s := range g.Servers {
		if s == AllServers || (s == server && server != "") {
			return true
		}
	}
	return false
}

// Expired reports whether the grant has expired at now.
func (g *Grant) Expired(now time.Time) bool {
	return !g.Expires.IsZero() && !now.Before(g.Expires)
}

// NewToken returns a new random token (32 bytes from crypto/rand, as
// TokenPrefix + base64url without padding) and its [HashToken].
func NewToken() (token, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("making a token: %w", err)
	}
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashToken(token), nil
}

// HashToken returns the lowercase hex SHA-256 of token: what a grants file
// stores. A token has 256 bits of entropy, so an unsalted fast hash is
// enough: the hash of a random token cannot be reversed or guessed.
func HashToken(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

var labelRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ValidLabel reports whether label may name a grant.
func ValidLabel(label string) bool { return labelRE.MatchString(label) }

// ParseGrants parses a grants file's contents; name prefixes error
// positions ("name:line:col: …"). The file is YAML, one mapping with one
// key, grants, a list of grants:
//
//	grants:
//	  - label: alice-laptop        # unique; [A-Za-z0-9._-], at most 64
//	    token_sha256: 9f86d0…      # hex SHA-256 of the token, never the token
//	    subject: alice             # identity.subject
//	    groups: [eng, oncall]      # identity.groups (optional)
//	    claims: {team: platform}   # identity.claims (optional; any JSON-able values)
//	    servers: [github, jira]    # the servers it may reach; ["*"] for all
//	    expires: 2027-01-01        # optional: RFC 3339 time, or a date (00:00 UTC that day)
//
// Parsing is strict: an unknown or repeated key, a value of the wrong
// shape, a missing label, token_sha256, subject or servers, a duplicate
// label or hash, "*" mixed with server names, anchors and aliases, and a
// file over MaxGrantsFileSize or MaxGrants are errors. Every problem found
// is returned, joined. An empty file parses as no grants, though
// [Grants] refuses to load one (a file caught mid-write looks empty);
// "grants: []" says there are none.
func ParseGrants(name string, data []byte) ([]Grant, error) {
	p := &parser{name: name}
	grants := p.parse(data)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return grants, nil
}

type parser struct {
	name string
	errs []error
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	if len(p.errs) == maxErrors {
		p.errs = append(p.errs, fmt.Errorf("%s: too many problems; fix these first", p.name))
	}
	if len(p.errs) > maxErrors {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if n == nil {
		p.errs = append(p.errs, fmt.Errorf("%s: %s", p.name, msg))
		return
	}
	p.errs = append(p.errs, fmt.Errorf("%s:%d:%d: %s", p.name, n.Line, n.Column, msg))
}

// document decodes the one YAML document of data; nil for an empty file.
func (p *parser) document(data []byte) *yaml.Node {
	if len(data) > MaxGrantsFileSize {
		p.errorf(nil, "larger than %d bytes", MaxGrantsFileSize)
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		p.errorf(nil, "%s", yamlError(err))
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(&extra, "a second YAML document; a grants file holds one")
		return nil
	} else if !errors.Is(err, io.EOF) {
		p.errorf(nil, "%s", yamlError(err))
		return nil
	}
	return &doc
}

// yamlError rewords yaml.v3's "yaml: line N: …" as "line N: …".
func yamlError(err error) string {
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

func (p *parser) parse(data []byte) []Grant {
	doc := p.document(data)
	if doc == nil {
		return nil
	}
	root := doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if p.aliases(root) {
		return nil
	}
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.errorf(root, "a grants file is a mapping with one key, grants: (a list)")
		return nil
	}
	var list *yaml.Node
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch {
		case seen[k.Value]:
			p.errorf(k, "%q is set twice", k.Value)
		case k.Value == "grants":
			list = v
		default:
			p.errorf(k, "unknown key %q; the one key is grants:", k.Value)
		}
		seen[k.Value] = true
	}
	if list == nil || isNull(list) {
		return nil
	}
	if list.Kind != yaml.SequenceNode {
		p.errorf(list, "grants: must be a list of grants")
		return nil
	}
	if len(list.Content) > MaxGrants {
		p.errorf(list, "%d grants; at most %d are allowed", len(list.Content), MaxGrants)
		return nil
	}
	grants := make([]Grant, 0, len(list.Content))
	labels := map[string]*yaml.Node{}
	hashes := map[string]*yaml.Node{}
	for _, item := range list.Content {
		g, ok := p.grant(item)
		if !ok {
			continue
		}
		if first, dup := labels[g.Label]; dup {
			p.errorf(item, "label %q is used twice (first at line %d); labels are unique", g.Label, first.Line)
			continue
		}
		if first, dup := hashes[g.TokenSHA256]; dup {
			p.errorf(item, "token_sha256 of %q is also that of the grant at line %d; give each grant its own token", g.Label, first.Line)
			continue
		}
		labels[g.Label], hashes[g.TokenSHA256] = item, item
		grants = append(grants, g)
	}
	return grants
}

// aliases reports (and records) any anchor, alias or merge key under n:
// they make one value stand in several places, which a reviewed list of
// grants has no use for, and they are refused outright.
func (p *parser) aliases(n *yaml.Node) bool {
	found := false
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		switch {
		case n.Kind == yaml.AliasNode:
			p.errorf(n, "aliases (*%s) are not allowed in a grants file; write the value out", n.Value)
			found = true
			return
		case n.Anchor != "":
			p.errorf(n, "anchors (&%s) are not allowed in a grants file", n.Anchor)
			found = true
		case n.Tag == "!!merge":
			p.errorf(n, "merge keys (<<) are not allowed in a grants file")
			found = true
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return found
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

var grantKeys = []string{"label", "token_sha256", "subject", "groups", "claims", "servers", "expires"}

func (p *parser) grant(item *yaml.Node) (Grant, bool) {
	var g Grant
	before := len(p.errs)
	if item.Kind != yaml.MappingNode {
		p.errorf(item, "a grant is a mapping with label, token_sha256, subject, servers (and groups, claims, expires)")
		return g, false
	}
	fields := map[string]*yaml.Node{}
	for i := 0; i+1 < len(item.Content); i += 2 {
		k, v := item.Content[i], item.Content[i+1]
		switch {
		case !slices.Contains(grantKeys, k.Value):
			p.errorf(k, "unknown key %q; a grant has %s", k.Value, strings.Join(grantKeys, ", "))
		case fields[k.Value] != nil:
			p.errorf(k, "%q is set twice", k.Value)
		default:
			fields[k.Value] = v
		}
	}
	required := func(key string) *yaml.Node {
		v := fields[key]
		if v == nil || isNull(v) {
			p.errorf(item, "the grant has no %s", key)
			return nil
		}
		return v
	}
	if v := required("label"); v != nil {
		if g.Label, _ = p.str(v, "label"); g.Label != "" && !ValidLabel(g.Label) {
			p.errorf(v, "label %q: use 1 to 64 letters, digits, '.', '_' or '-'", g.Label)
		}
	}
	if v := required("token_sha256"); v != nil {
		h, _ := p.str(v, "token_sha256")
		h = strings.ToLower(h)
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			p.errorf(v, "token_sha256 must be 64 hex digits, the SHA-256 of the token (never the token itself)")
		}
		g.TokenSHA256 = h
	}
	if v := required("subject"); v != nil {
		if g.Subject, _ = p.str(v, "subject"); g.Subject == "" {
			p.errorf(v, "subject is empty")
		}
	}
	if v := fields["groups"]; v != nil && !isNull(v) {
		g.Groups = p.strList(v, "groups")
	}
	if v := required("servers"); v != nil {
		g.Servers = p.strList(v, "servers")
		switch {
		case len(g.Servers) == 0:
			p.errorf(v, `servers is empty; list the servers this token may reach, or ["*"] for all`)
		case len(g.Servers) > 1 && slices.Contains(g.Servers, AllServers):
			p.errorf(v, `servers: "*" means every server; do not list others with it`)
		}
	}
	if v := fields["claims"]; v != nil && !isNull(v) {
		g.Claims = p.claims(v)
	}
	if v := fields["expires"]; v != nil && !isNull(v) {
		if v.Kind != yaml.ScalarNode {
			p.errorf(v, "expires must be an RFC 3339 time or a date (2027-01-01)")
		} else if t, err := ParseExpiry(v.Value); err != nil {
			p.errorf(v, "expires: %v", err)
		} else {
			g.Expires = t
		}
	}
	return g, len(p.errs) == before
}

// ParseExpiry parses an expiry: an RFC 3339 time (2027-01-01T09:00:00+01:00)
// or a date (2027-01-01), meaning 00:00 UTC that day — the token stops
// working when that day begins.
func ParseExpiry(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2027-01-01T00:00:00Z) nor a date (2027-01-01)", s)
}

func (p *parser) str(v *yaml.Node, key string) (string, bool) {
	if v.Kind != yaml.ScalarNode {
		p.errorf(v, "%s must be a string", key)
		return "", false
	}
	return v.Value, true
}

// strList reads a list of non-empty strings.
func (p *parser) strList(v *yaml.Node, key string) []string {
	if v.Kind != yaml.SequenceNode {
		p.errorf(v, "%s must be a list of strings, e.g. [a, b]", key)
		return nil
	}
	out := make([]string, 0, len(v.Content))
	for _, e := range v.Content {
		s, ok := p.str(e, key+" entries")
		if !ok {
			continue
		}
		if s == "" || isNull(e) {
			p.errorf(e, "%s has an empty entry", key)
			continue
		}
		out = append(out, s)
	}
	return out
}

// claims converts a mapping to one JSON object.
func (p *parser) claims(v *yaml.Node) json.RawMessage {
	if v.Kind != yaml.MappingNode {
		p.errorf(v, "claims must be a mapping of names to values")
		return nil
	}
	val, ok := p.jsonValue(v, 0)
	if !ok {
		return nil
	}
	raw, err := json.Marshal(val)
	if err != nil {
		p.errorf(v, "claims: %v", err)
		return nil
	}
	if len(raw) > maxClaimsSize {
		p.errorf(v, "claims are %d bytes as JSON; at most %d are allowed", len(raw), maxClaimsSize)
		return nil
	}
	return raw
}

// jsonValue converts a YAML node to a value encoding/json encodes as the
// same data: mappings (keys are taken as strings), sequences, strings,
// numbers, booleans and null. Timestamps stay strings, as written.
func (p *parser) jsonValue(n *yaml.Node, depth int) (any, bool) {
	if depth > maxClaimsDepth {
		p.errorf(n, "claims nest deeper than %d levels", maxClaimsDepth)
		return nil, false
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		ok := true
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				p.errorf(k, "claim names must be strings")
				ok = false
				continue
			}
			if _, dup := m[k.Value]; dup {
				p.errorf(k, "claim %q is set twice", k.Value)
				ok = false
				continue
			}
			val, vok := p.jsonValue(v, depth+1)
			m[k.Value], ok = val, ok && vok
		}
		return m, ok
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		ok := true
		for _, e := range n.Content {
			val, eok := p.jsonValue(e, depth+1)
			s, ok = append(s, val), ok && eok
		}
		return s, ok
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil, true
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				p.errorf(n, "%v", err)
				return nil, false
			}
			return b, true
		case "!!int", "!!float":
			// int, int64, uint64 or float64: each encodes as the number.
			var v any
			if err := n.Decode(&v); err != nil {
				p.errorf(n, "claim value %s: %v", n.Value, err)
				return nil, false
			}
			if f, isFloat := v.(float64); isFloat && (math.IsNaN(f) || math.IsInf(f, 0)) {
				p.errorf(n, "claim value %s is not a JSON number", n.Value)
				return nil, false
			}
			return v, true
		case "!!str", "!!timestamp":
			return n.Value, true
		}
		p.errorf(n, "claim value of type %s cannot be JSON", n.Tag)
		return nil, false
	}
	p.errorf(n, "claim value cannot be JSON")
	return nil, false
}

// ReadGrants reads and parses the grants file at path.
func ReadGrants(path string) ([]Grant, error) {
	raw, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	return ParseGrants(path, raw)
}

// readLimited reads a file of at most MaxGrantsFileSize bytes.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading grants file: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxGrantsFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading grants file %s: %w", path, err)
	}
	if len(raw) > MaxGrantsFileSize {
		return nil, fmt.Errorf("grants file %s: larger than %d bytes", path, MaxGrantsFileSize)
	}
	return raw, nil
}

// AddGrant appends g to the grants file at path, creating the file (mode
// 0600) when it does not exist. The rest of the file — other grants,
// comments, key order — is kept; the file is replaced atomically (a
// temporary file in the same folder, then a rename) and keeps its mode.
// g.TokenSHA256 must be set (from [NewToken]); g.Servers nil means ["*"].
// A file that does not parse is not touched; a label or hash the file
// already holds is ErrGrantExists. Concurrent AddGrant and RevokeGrant
// calls on one file may lose an update: run them one at a time.
func AddGrant(path string, g Grant) error {
	doc, grants, err := openForEdit(path)
	if err != nil {
		return err
	}
	for _, old := range grants {
		if old.Label == g.Label {
			return fmt.Errorf("adding %q to %s: %w (revoke it first, or choose another label)", g.Label, path, ErrGrantExists)
		}
		if old.TokenSHA256 == strings.ToLower(g.TokenSHA256) {
			return fmt.Errorf("adding %q to %s: %w: grant %q has the same token_sha256", g.Label, path, ErrGrantExists, old.Label)
		}
	}
	if len(g.Servers) == 0 {
		g.Servers = []string{AllServers}
	}
	item, err := grantNode(g)
	if err != nil {
		return fmt.Errorf("adding %q to %s: %w", g.Label, path, err)
	}
	list := grantsList(doc)
	list.Content = append(list.Content, item)
	return writeEdited(path, doc)
}

// RevokeGrant removes the grant labelled label from the grants file at path,
// keeping the rest of the file as [AddGrant] does. No such grant is
// ErrNoSuchGrant. The proxy stops accepting the token once it has reloaded
// the file (at once when it watches the file).
func RevokeGrant(path, label string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("revoking %q: %w", label, err)
	}
	doc, _, err := openForEdit(path)
	if err != nil {
		return err
	}
	list := grantsList(doc)
	for i, item := range list.Content {
		if item.Kind != yaml.MappingNode {
			continue
		}
		for j := 0; j+1 < len(item.Content); j += 2 {
			if item.Content[j].Value == "label" && item.Content[j+1].Value == label {
				list.Content = slices.Delete(list.Content, i, i+1)
				return writeEdited(path, doc)
			}
		}
	}
	return fmt.Errorf("revoking %q in %s: %w (`toolgate grants list` shows the labels)", label, path, ErrNoSuchGrant)
}

// openForEdit reads and checks the grants file for an edit; a missing file
// is an empty document.
func openForEdit(path string) (*yaml.Node, []Grant, error) {
	raw, err := readLimited(path)
	if errors.Is(err, os.ErrNotExist) {
		raw, err = nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	grants, err := ParseGrants(path, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("not editing %s, which has problems:\n%w", path, err)
	}
	doc := &yaml.Node{}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := yaml.Unmarshal(raw, doc); err != nil {
			return nil, nil, fmt.Errorf("grants file %s: %w", path, err)
		}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		// Empty, or only comments: keep the comments above the list.
		head := doc.HeadComment
		doc = &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
		doc.Content[0].HeadComment = head
	}
	return doc, grants, nil
}

// grantsList returns the grants sequence of a checked document, making it
// (and the mapping it sits in) when absent or null.
func grantsList(doc *yaml.Node) *yaml.Node {
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		// Null document (e.g. "~"): replace it.
		*root = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", HeadComment: root.HeadComment}
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "grants" {
			v := root.Content[i+1]
			if v.Kind != yaml.SequenceNode {
				*v = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", LineComment: v.LineComment}
			}
			// A flow list ([]) would put every grant on one line.
			v.Style &^= yaml.FlowStyle
			return v
		}
	}
	list := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "grants"}, list)
	return list
}

// grantNode renders g as a grants file entry.
func grantNode(g Grant) (*yaml.Node, error) {
	str := func(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
	flow := func(ss []string) *yaml.Node {
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
		for _, s := range ss {
			n.Content = append(n.Content, str(s))
		}
		return n
	}
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	add := func(k string, v *yaml.Node) { m.Content = append(m.Content, str(k), v) }
	add("label", str(g.Label))
	add("token_sha256", str(strings.ToLower(g.TokenSHA256)))
	add("subject", str(g.Subject))
	if len(g.Groups) > 0 {
		add("groups", flow(g.Groups))
	}
	if len(g.Claims) > 0 {
		var v any
		dec := json.NewDecoder(bytes.NewReader(g.Claims))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("claims: %w", err)
		}
		add("claims", yamlFromJSON(v))
	}
	add("servers", flow(g.Servers))
	if !g.Expires.IsZero() {
		e := g.Expires.UTC()
		if e.Equal(e.Truncate(24 * time.Hour)) {
			add("expires", str(e.Format(time.DateOnly)))
		} else {
			add("expires", str(g.Expires.Format(time.RFC3339)))
		}
	}
	return m, nil
}

// yamlFromJSON renders a value decoded from JSON (with UseNumber) as YAML
// that [ParseGrants] reads back as the same JSON.
func yamlFromJSON(v any) *yaml.Node {
	scalar := func(tag, value string) *yaml.Node {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
	}
	switch v := v.(type) {
	case map[string]any:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		keys := slices.Sorted(maps.Keys(v))
		for _, k := range keys {
			n.Content = append(n.Content, scalar("!!str", k), yamlFromJSON(v[k]))
		}
		return n
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
		for _, e := range v {
			n.Content = append(n.Content, yamlFromJSON(e))
		}
		return n
	case json.Number:
		if _, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return scalar("!!int", string(v))
		}
		if _, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			return scalar("!!int", string(v))
		}
		return scalar("!!float", string(v))
	case string:
		return scalar("!!str", v)
	case bool:
		return scalar("!!bool", strconv.FormatBool(v))
	}
	return scalar("!!null", "null")
}

// writeEdited encodes doc, checks that the result parses, and replaces the
// file with it.
func writeEdited(path string, doc *yaml.Node) error {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := ParseGrants(path, buf.Bytes()); err != nil {
		return fmt.Errorf("not writing %s: the edited file would not parse:\n%w", path, err)
	}
	if err := writeAtomic(path, buf.Bytes()); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// writeAtomic replaces path with data through a temporary file in the same
// folder and a rename, keeping an existing file's mode (0600 for a new one).
func writeAtomic(path string, data []byte) error {
	return statedir.WriteFile(path, data, 0o600)
}
