package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/runtime/admin"
	"github.com/toolgate/toolgate/runtime/audit"
	"github.com/toolgate/toolgate/runtime/counters"
	"github.com/toolgate/toolgate/runtime/engine"
	"github.com/toolgate/toolgate/runtime/proxy"
	"github.com/toolgate/toolgate/runtime/source"
)

// defaultAdminAddr is where the admin listener binds unless --admin says
// otherwise.
const defaultAdminAddr = "127.0.0.1:9091"

// defaultCacheDir is where pulled bundles are cached: the user cache folder's
// toolgate/bundles, or a temporary folder when there is none.
func defaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "toolgate", "bundles")
}

// defaultStateDir is where --state disk keeps counters: the user cache
// folder's toolgate/state, or a temporary folder when there is none.
func defaultStateDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "toolgate", "state")
}

// stateSubdir is the folder name, under --state-dir, of a server's
// counters: the server name with path separators escaped.
func stateSubdir(server string) string {
	name := url.PathEscape(server)
	if name == "." || name == ".." {
		name = "_" + name
	}
	return name
}

func proxyCmd() *cobra.Command {
	var policyPath, bundlePath, pinFile, cacheDir, server, identity, groups, auditPath, adminAddr, stateDir, stateKind string
	var adminRemote bool
	var rf registryFlags
	c := &cobra.Command{
		Use:   "proxy (--policy PATH | --bundle FILE | --pin-file FILE) --server NAME [--audit-log FILE] -- CMD [ARG…]",
		Short: "Run an MCP stdio server behind toolgate, enforcing a policy on every tools/call",
		Long: "Proxy starts the MCP server command after --, relays the MCP client on stdin/stdout to it,\n" +
			"and decides every tools/call with the policy: a denied call is answered with an isError\n" +
			"result and never reaches the server; hidden tools are removed from tools/list.\n" +
			"Logs are JSON lines on stderr. It exits 1 when the server exits before the client.\n\n" +
			"With --pin-file, the bundle the pin file names is verified with its keys, pulled by digest\n" +
			"(through --cache-dir, so a bundle verified before loads while the registry is down) and\n" +
			"swapped in; a change to the pin file or SIGHUP loads it again, and a bundle that fails\n" +
			"is refused while the one in force stays. With no verified bundle every tools/call is denied.\n" +
			"The admin listener (--admin) serves /healthz, /readyz, /status and /metrics.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return usageError{errors.New("proxy needs the server command after --")}
			}
			sources := 0
			for _, s := range []string{policyPath, bundlePath, pinFile} {
				if s != "" {
					sources++
				}
			}
			if sources != 1 {
				return usageError{errors.New("proxy needs exactly one of --policy PATH, --bundle FILE and --pin-file FILE")}
			}
			if server == "" {
				return usageError{errors.New("proxy needs --server NAME (the server name the policies govern)")}
			}
			if stateKind != "memory" && stateKind != "disk" {
				return usageError{fmt.Errorf("--state must be memory or disk, not %q", stateKind)}
			}
			ctx := cmd.Context()
			logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))

			eng := engine.New()
			defer eng.Close()
			metrics := admin.NewMetrics()
			var swaps func() admin.SwapStatus

			var b *bundles.Bundle
			var digest string
			switch {
			case pinFile != "":
				src, err := source.NewPinFile(pinFile, cacheDir, eng, source.WithRegistry(rf.options()...), source.WithLogger(logger))
				if err != nil {
					return problemError{err}
				}
				swaps = func() admin.SwapStatus {
					s := src.Status()
					return admin.SwapStatus{LastError: s.LastError, LastErrorAt: s.LastErrorAt, LastSwap: s.LastSwap, Swaps: s.Swaps, Failures: s.Failures}
				}
				hup := make(chan os.Signal, 1)
				signal.Notify(hup, syscall.SIGHUP)
				defer signal.Stop(hup)
				// The first load happens before the server starts, so that a
				// good pin decides the first call; a failed one leaves the
				// proxy running, denying every call (fail closed).
				_ = src.Load(ctx)
				digest, _ = eng.Active()
				wctx, stop := context.WithCancel(ctx)
				defer stop()
				go src.Watch(wctx, hup)
			case policyPath != "":
				built, _, err := buildInProcess(ctx, cmd, []string{policyPath})
				if err != nil {
					return err
				}
				var buf bytes.Buffer
				if err := bundles.Write(&buf, built); err != nil {
					return err
				}
				b, digest = built, bundles.Digest(buf.Bytes())
			default:
				raw, err := os.ReadFile(bundlePath)
				if err != nil {
					return err
				}
				if b, err = bundles.ReadBytes(raw, bundles.Limits{}); err != nil {
					return problemError{fmt.Errorf("loading %s: %w", bundlePath, err)}
				}
				digest = bundles.Digest(raw)
			}
			if b != nil {
				if err := eng.Swap(ctx, digest, b); err != nil {
					return problemError{err}
				}
			}

			if adminAddr != "" {
				l, err := admin.Listen(adminAddr, adminRemote)
				switch {
				case err != nil && errors.Is(err, admin.ErrRemote):
					return usageError{err}
				case err != nil && !cmd.Flags().Changed("admin"):
					// Several stdio proxies may run side by side (one per
					// server in an MCP client's config): only the first gets
					// the default port.
					logger.Warn("admin listener not started; pass --admin ADDR to choose another address", "addr", adminAddr, "err", err)
				case err != nil:
					return problemError{err}
				default:
					srv := &http.Server{Handler: admin.Handler(eng, swaps, metrics), ReadHeaderTimeout: 10 * time.Second}
					go srv.Serve(l)
					defer srv.Close()
					logger.Info("admin listener started", "addr", l.Addr().String())
				}
			}

			// Counters are per server: each server's proxy keeps them in its
			// own subfolder of --state-dir.
			var ctrs proxy.Counters = counters.New()
			if stateKind == "disk" {
				dir := filepath.Join(stateDir, stateSubdir(server))
				disk, err := counters.OpenDisk(dir, counters.DiskOptions{})
				switch {
				case err != nil && errors.Is(err, counters.ErrLocked) && !cmd.Flags().Changed("state-dir"):
					// Another proxy for the same server (a second MCP
					// client) holds the default folder: this one counts in
					// memory, like the proxies before durable counters.
					logger.Warn("counter state in use by another proxy; counting in memory; pass --state-dir DIR to keep them", "dir", dir, "err", err)
				case err != nil:
					return problemError{fmt.Errorf("opening the counter state (--state-dir; --state memory keeps none): %w", err)}
				default:
					defer func() {
						if err := disk.Close(); err != nil {
							logger.Error("saving the counter state", "dir", dir, "err", err)
						}
					}()
					ctrs = disk
				}
			}
			opts := []proxy.PolicyOption{proxy.WithCounters(ctrs), proxy.WithLogger(logger)}
			if auditPath != "" {
				alog, err := audit.Open(auditPath)
				if err != nil {
					return problemError{err}
				}
				defer alog.Close()
				opts = append(opts, proxy.WithAudit(alog))
			}
			pol := proxy.NewPolicy(admin.Instrument(eng, metrics), opts...)

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
				metrics.UpstreamError()
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
	f.StringVar(&pinFile, "pin-file", "", "pin file naming the signed bundle to run (watched; SIGHUP re-reads it)")
	f.StringVar(&cacheDir, "cache-dir", defaultCacheDir(), "folder where pulled bundles are cached, for loading while the registry is down")
	f.StringVar(&adminAddr, "admin", defaultAdminAddr, "address of the admin listener (/healthz, /readyz, /status, /metrics); empty turns it off")
	f.BoolVar(&adminRemote, "admin-allow-remote", false, "allow --admin on an address that is not loopback")
	f.StringVar(&server, "server", "", "name of the MCP server, as the policies name it")
	f.StringVar(&identity, "identity", "", "subject of the caller (identity.subject)")
	f.StringVar(&groups, "groups", "", "comma-separated groups of the caller (identity.groups)")
	f.StringVar(&auditPath, "audit-log", "", "append a hash-chained JSON line per decision to this file")
	f.StringVar(&stateKind, "state", "disk", "where counters live: disk (kept in --state-dir across restarts) or memory (lost on exit)")
	f.StringVar(&stateDir, "state-dir", defaultStateDir(), "folder where --state disk keeps counters, in a subfolder per --server")
	rf.add(c)
	return c
}
