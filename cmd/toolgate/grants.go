package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/runtime/identity"
)

func grantsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "grants",
		Short: "Add, revoke and list the bearer tokens of a grants file",
		Long: `A grants file (YAML, kept in git) lists the bearer tokens the HTTP proxy accepts
(toolgate proxy --grants FILE): each grant has a label, the SHA-256 of its token
(never the token), the identity it stands for (subject, groups, claims), the
servers it may reach ("*" for all) and an optional expiry. The proxy reloads the
file when it changes: a revoked or expired token stops working without a restart.`,
		Args: wrapArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	c.AddCommand(grantsAddCmd(), grantsRevokeCmd(), grantsListCmd())
	return c
}

func grantsAddCmd() *cobra.Command {
	var file, subject, expires string
	var groups, servers []string
	c := &cobra.Command{
		Use:   "add LABEL --grants-file FILE --subject S [--groups a,b] [--servers x,y] [--expires 2027-01-01]",
		Short: "Make a new random token, print it once, and add its hash to the grants file",
		Long: `Add makes a new random token (tg_ and 43 base64url characters, 256 random bits),
prints it on stdout — once: it is not stored anywhere, only its SHA-256 is —
and adds a grant with that hash to the grants file, creating the file (mode
0600) if needed. The file's other grants and comments are kept; it is replaced
atomically. Commit the file and give the token to its holder.

--servers defaults to "*" (every server). --expires takes an RFC 3339 time
or a date, which means 00:00 UTC that day.`,
		Args: wrapArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			label := args[0]
			switch {
			case file == "":
				return usageError{errors.New("grants add needs --grants-file FILE")}
			case !identity.ValidLabel(label):
				return usageError{fmt.Errorf("label %q: use 1 to 64 letters, digits, '.', '_' or '-'", label)}
			case strings.TrimSpace(subject) == "":
				return usageError{errors.New("grants add needs --subject S (identity.subject)")}
			}
			g := identity.Grant{Label: label, Subject: subject, Groups: identity.SplitGroups(strings.Join(groups, ",")),
				Servers: identity.SplitGroups(strings.Join(servers, ","))}
			if len(g.Servers) > 1 && slices.Contains(g.Servers, identity.AllServers) {
				return usageError{errors.New(`--servers: "*" means every server; do not list others with it`)}
			}
			if expires != "" {
				t, err := identity.ParseExpiry(expires)
				if err != nil {
					return usageError{fmt.Errorf("--expires: %w", err)}
				}
				if !t.After(time.Now()) {
					return usageError{fmt.Errorf("--expires %s is in the past", expires)}
				}
				g.Expires = t
			}
			token, hash, err := identity.NewToken()
			if err != nil {
				return err
			}
			g.TokenSHA256 = hash
			if err := identity.AddGrant(file, g); err != nil {
				return problemError{err}
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			fmt.Fprintf(cmd.ErrOrStderr(), "added grant %q to %s; the token above is shown only once: hand it over now, then commit the file\n", label, file)
			return nil
		},
	}
	c.Flags().StringVar(&file, "grants-file", "", "the grants file (YAML) to add to; created if missing")
	c.Flags().StringVar(&subject, "subject", "", "identity.subject of the token's holder")
	c.Flags().StringSliceVar(&groups, "groups", nil, "identity.groups, comma-separated")
	c.Flags().StringSliceVar(&servers, "servers", nil, `servers the token may reach, comma-separated (default "*": all)`)
	c.Flags().StringVar(&expires, "expires", "", "when the token stops working: RFC 3339 time or date (00:00 UTC); default never")
	return c
}

func grantsRevokeCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "revoke LABEL --grants-file FILE",
		Short: "Remove a grant; its token stops working once the proxy reloads the file",
		Args:  wrapArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usageError{errors.New("grants revoke needs --grants-file FILE")}
			}
			if err := identity.RevokeGrant(file, args[0]); err != nil {
				return problemError{err}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "revoked grant %q in %s; commit the file\n", args[0], file)
			return nil
		},
	}
	c.Flags().StringVar(&file, "grants-file", "", "the grants file (YAML) to remove from")
	return c
}

func grantsListCmd() *cobra.Command {
	var file string
	var asJSON bool
	c := &cobra.Command{
		Use:   "list --grants-file FILE [--json]",
		Short: "List the grants: label, subject, groups, servers, expiry",
		Args:  wrapArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usageError{errors.New("grants list needs --grants-file FILE")}
			}
			grants, err := identity.ReadGrants(file)
			if err != nil {
				return problemError{err}
			}
			now := time.Now()
			out := cmd.OutOrStdout()
			if asJSON {
				type row struct {
					Label   string     `json:"label"`
					Subject string     `json:"subject"`
					Groups  []string   `json:"groups"`
					Servers []string   `json:"servers"`
					Expires *time.Time `json:"expires"`
					Expired bool       `json:"expired"`
				}
				rows := make([]row, 0, len(grants))
				for _, g := range grants {
					r := row{Label: g.Label, Subject: g.Subject, Groups: g.Groups, Servers: g.Servers, Expired: g.Expired(now)}
					if r.Groups == nil {
						r.Groups = []string{}
					}
					if !g.Expires.IsZero() {
						e := g.Expires
						r.Expires = &e
					}
					rows = append(rows, r)
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "LABEL\tSUBJECT\tGROUPS\tSERVERS\tEXPIRES")
			for _, g := range grants {
				exp := "never"
				if !g.Expires.IsZero() {
					exp = g.Expires.Format(time.RFC3339)
					if g.Expired(now) {
						exp += " (expired)"
					}
				}
				groups := strings.Join(g.Groups, ",")
				if groups == "" {
					groups = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", g.Label, g.Subject, groups, strings.Join(g.Servers, ","), exp)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&file, "grants-file", "", "the grants file (YAML) to list")
	c.Flags().BoolVar(&asJSON, "json", false, "print a JSON array instead of a table")
	return c
}
