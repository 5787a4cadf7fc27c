package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/runtime/approvals"
)

// approvalFlags are the flags every approvals subcommand shares.
type approvalFlags struct {
	admin     string
	tokenFile string
	json      bool
}

func approvalsCmd() *cobra.Command {
	var af approvalFlags
	c := &cobra.Command{
		Use:   "approvals",
		Short: "List, show, approve and deny calls waiting for a person's approval",
		Long: `Work with the approval queue of a running proxy, through its admin API.

A call that a require_approval rule stops waits in the queue until a person
approves or denies it, or until it expires. Approving lets the same call
(same caller, server, tool, arguments and policy bundle) run once.

The proxy's admin listener (--admin, default 127.0.0.1:9091) serves the API;
--token-file names a file holding one of the tokens of the proxy's
--admin-token-file (the first token of the file is sent).

Exit status: 0 done, 1 the proxy refused or could not be reached, 2 bad usage.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown approvals command %q; use list, show, approve or deny", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	pf := c.PersistentFlags()
	pf.StringVar(&af.admin, "admin", "http://"+defaultAdminAddr, "the proxy's admin listener, as a URL or HOST:PORT")
	pf.StringVar(&af.tokenFile, "token-file", "", "file holding the admin token (its first token is sent)")
	pf.BoolVar(&af.json, "json", false, "print JSON instead of text")

	var status string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List approval requests, newest first",
		Args:  wrapArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := approvals.Filter{Status: approvals.Status(status), Limit: limit}
			if status != "" && !f.Status.Valid() {
				return usageError{fmt.Errorf("--status %q: use pending, approved, denied, expired or used", status)}
			}
			if limit < 0 {
				return usageError{fmt.Errorf("--limit %d is negative", limit)}
			}
			client, err := af.client()
			if err != nil {
				return err
			}
			rs, err := client.List(cmd.Context(), f)
			if err != nil {
				return af.problem(err)
			}
			out := cmd.OutOrStdout()
			if af.json {
				return printApprovalJSON(out, approvals.ListBody{Approvals: rs})
			}
			if len(rs) == 0 {
				what := "approval requests"
				if status != "" {
					what = status + " " + what
				}
				fmt.Fprintf(out, "no %s\n", what)
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tSUBJECT\tSERVER\tTOOL\tRULE\tEXPIRES")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Status, orDash(r.Subject), orDash(r.Server), r.Tool, orDash(r.Rule), approvalWhen(r.ExpiresAt, now))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&status, "status", "", "only requests in this status: pending, approved, denied, expired or used")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many requests (0: all)")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one approval request",
		Args:  wrapArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := af.client()
			if err != nil {
				return err
			}
			r, err := client.Get(cmd.Context(), args[0])
			if err != nil {
				return af.problem(err)
			}
			if af.json {
				return printApprovalJSON(cmd.OutOrStdout(), r)
			}
			return printApproval(cmd.OutOrStdout(), r, time.Now())
		},
	}
	c.AddCommand(list, show, approvalDecideCmd(&af, true), approvalDecideCmd(&af, false))
	return c
}

func approvalDecideCmd(af *approvalFlags, approve bool) *cobra.Command {
	verb, done := "deny", "denied"
	if approve {
		verb, done = "approve", "approved"
	}
	var as, reason string
	c := &cobra.Command{
		Use:   verb + " ID",
		Short: strings.ToUpper(verb[:1]) + verb[1:] + " a pending approval request",
		Long: strings.ToUpper(verb[:1]) + verb[1:] + ` a pending approval request. The proxy records who decided: --as, or
the name its token file gives this token. A request cannot be decided by the
person who made the call, nor, when its rule names approvers, by anyone else.`,
		Args: wrapArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := af.client()
			if err != nil {
				return err
			}
			r, err := client.Decide(cmd.Context(), args[0], approve, as, reason)
			if err != nil {
				return af.problem(err)
			}
			out := cmd.OutOrStdout()
			if af.json {
				return printApprovalJSON(out, r)
			}
			fmt.Fprintf(out, "%s %s as %s (%s of %s on %s; expires %s)\n", done, r.ID, r.DecidedBy, r.Tool, orDash(r.Subject), orDash(r.Server), r.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	c.Flags().StringVar(&as, "as", "", "who decides (default: the token's name)")
	c.Flags().StringVar(&reason, "reason", "", "why, recorded with the decision")
	return c
}

// client makes the API client from the flags.
func (af *approvalFlags) client() (*approvals.Client, error) {
	base := af.admin
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{fmt.Errorf("--admin %q: want the admin listener as http://HOST:PORT", af.admin)}
	}
	c := &approvals.Client{BaseURL: strings.TrimRight(u.String(), "/")}
	if af.tokenFile != "" {
		if c.Token, err = approvals.ReadToken(af.tokenFile); err != nil {
			return nil, usageError{err}
		}
	}
	return c, nil
}

// problem turns an API error into exit status 1, saying what to do for the
// usual ones.
func (af *approvalFlags) problem(err error) error {
	var api *approvals.APIError
	switch {
	case errors.Is(err, approvals.ErrUnauthorized) && af.tokenFile == "":
		err = errors.New("no admin token sent: pass --token-file FILE holding a token from the proxy's --admin-token-file")
	case errors.Is(err, approvals.ErrUnauthorized) && errors.As(err, &api) && api.Code == "unauthorized":
		err = fmt.Errorf("the proxy at %s did not accept the token in %s: is it one of the proxy's --admin-token-file? (%w)", af.admin, af.tokenFile, err)
	case errors.Is(err, approvals.ErrNotFound):
		err = fmt.Errorf("%w\nRun 'toolgate approvals list' to see the requests the proxy holds.", err)
	}
	return problemError{err}
}

func printApprovalJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printApproval(w io.Writer, r approvals.Request, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	line("id", r.ID)
	line("status", string(r.Status))
	line("subject", orDash(r.Subject))
	line("groups", strings.Join(r.Groups, ", "))
	line("server", orDash(r.Server))
	line("tool", r.Tool)
	line("arguments", "sha256:"+r.ArgsSHA256)
	line("bundle", r.Bundle)
	line("rule", r.Rule)
	approvers := "anyone with an admin token"
	if !r.Approvers.Empty() {
		var parts []string
		if len(r.Approvers.Subjects) > 0 {
			parts = append(parts, "subjects "+strings.Join(r.Approvers.Subjects, ", "))
		}
		if len(r.Approvers.Groups) > 0 {
			parts = append(parts, "groups "+strings.Join(r.Approvers.Groups, ", "))
		}
		approvers = strings.Join(parts, "; ")
	}
	line("approvers", approvers)
	line("created", r.CreatedAt.Format(time.RFC3339))
	line("expires", approvalWhen(r.ExpiresAt, now))
	line("decided by", r.DecidedBy)
	if !r.DecidedAt.IsZero() {
		line("decided at", r.DecidedAt.Format(time.RFC3339))
	}
	line("reason", r.Reason)
	if !r.UsedAt.IsZero() {
		line("used at", r.UsedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

// approvalWhen prints t with how far it is from now.
func approvalWhen(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d >= 0 {
		return fmt.Sprintf("%s (in %s)", t.Format(time.RFC3339), d)
	}
	return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), -d)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
