package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/audit"
	"github.com/toolgate/toolgate/runtime/counters"
	"github.com/toolgate/toolgate/runtime/engine"
	"github.com/toolgate/toolgate/runtime/proxy"
)

func proxyCmd() *cobra.Command {
	var policyPath, bundlePath, server, identity, groups, auditPath string
	c := &cobra.Command{
		Use:   "proxy (--policy PATH | --bundle FILE) --server NAME [--audit-log FILE] -- CMD [ARG…]",
		Short: "Run an MCP stdio server behind toolgate, enforcing a policy on every tools/call",
		Long: "Proxy starts the MCP server command after --, relays the MCP client on stdin/stdout to it,\n" +
			"and decides every tools/call with the policy: a denied call is answered with an isError\n" +
			"result and never reaches the server; hidden tools are removed from tools/list.\n" +
			"Logs are JSON lines on stderr. It exits 1 when the server exits before the client.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return usageError{errors.New("proxy needs the server command after --")}
			}
			if (policyPath == "") == (bundlePath == "") {
				return usageError{errors.New("proxy needs exactly one of --policy PATH and --bundle FILE")}
			}
			if server == "" {
				return usageError{errors.New("proxy needs --server NAME (the server name the policies govern)")}
			}
			ctx := cmd.Context()
			logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))

			var b *bundles.Bundle
			var digest string
			if policyPath != "" {
				built, _, err := buildInProcess(ctx, cmd, []string{policyPath})
				if err != nil {
					return err
				}
				var buf bytes.Buffer
				if err := bundles.Write(&buf, built); err != nil {
					return err
				}
				b, digest = built, bundles.Digest(buf.Bytes())
			} else {
				raw, err := os.ReadFile(bundlePath)
				if err != nil {
					return err
				}
				if b, err = bundles.ReadBytes(raw, bundles.Limits{}); err != nil {
					return problemError{fmt.Errorf("loading %s: %w", bundlePath, err)}
				}
				digest = bundles.Digest(raw)
			}
			eng := engine.New()
			defer eng.Close()
			if err := eng.Swap(ctx, digest, b); err != nil {
				return problemError{err}
			}

			opts := []proxy.PolicyOption{proxy.WithCounters(counters.New()), proxy.WithLogger(logger)}
			if auditPath != "" {
				alog, err := audit.Open(auditPath)
				if err != nil {
					return problemError{err}
				}
				defer alog.Close()
				opts = append(opts, proxy.WithAudit(alog))
			}
			pol := proxy.NewPolicy(eng, opts...)

			up := exec.Command(args[0], args[1:]...)
			up.Stderr = os.Stderr
			upIn, err := up.StdinPipe()
			if err != nil {
				return err
			}
			upOut, err := up.StdoutPipe()
			if err != nil {
				return err
			}
			if err := up.Start(); err != nil {
				return problemError{fmt.Errorf("starting the MCP server %q: %w", args[0], err)}
			}
			logger.Info("proxy started", "server", server, "bundle", digest, "command", args[0], "pid", up.Process.Pid)

			var groupList []string
			if groups != "" {
				groupList = strings.Split(groups, ",")
			}
			st := &proxy.Stdio{
				Server:   server,
				Identity: bundles.Identity{Subject: identity, Groups: groupList},
				Decide:   pol.Decide,
				Hidden:   pol.Hidden,
				Logger:   logger,
			}
			runErr := st.Run(ctx, os.Stdin, os.Stdout, upIn, upOut)
			if errors.Is(runErr, proxy.ErrUpstreamExited) {
				waitErr := up.Wait()
				status := "exit status 0"
				if waitErr != nil {
					status = waitErr.Error()
				}
				return problemError{fmt.Errorf("the MCP server %q exited (%s) while the client was connected; check its stderr above", args[0], status)}
			}
			// The client is gone: give the server a moment to exit on its own.
			done := make(chan error, 1)
			go func() { done <- up.Wait() }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				up.Process.Kill()
				<-done
			}
			return runErr
		},
	}
	f := c.Flags()
	f.StringVar(&policyPath, "policy", "", "policy file or folder to compile in-process (development)")
	f.StringVar(&bundlePath, "bundle", "", "bundle file (.tar.gz) built by toolgate build")
	f.StringVar(&server, "server", "", "name of the MCP server, as the policies name it")
	f.StringVar(&identity, "identity", "", "subject of the caller (identity.subject)")
	f.StringVar(&groups, "groups", "", "comma-separated groups of the caller (identity.groups)")
	f.StringVar(&auditPath, "audit-log", "", "append a hash-chained JSON line per decision to this file")
	return c
}

func auditCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "audit",
		Short: "Work with proxy audit logs",
	}
	verify := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check an audit log's hash chain; exit 1 naming the first broken line",
		Args:  wrapArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			n, err := audit.Verify(f)
			if err != nil {
				return problemError{fmt.Errorf("%s: %w", args[0], err)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d line(s), chain intact\n", args[0], n)
			return nil
		},
	}
	c.AddCommand(verify)
	return c
}
