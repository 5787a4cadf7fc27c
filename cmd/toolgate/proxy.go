package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/bundles/oci"
	"github.com/toolgate/toolgate/bundles/sign"
	"github.com/toolgate/toolgate/runtime/admin"
	"github.com/toolgate/toolgate/runtime/counters"
	"github.com/toolgate/toolgate/runtime/engine"
	"github.com/toolgate/toolgate/runtime/identity"
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

// proxyFlags are the flags of toolgate proxy; a --config file sets the same
// ones (see applyConfig).
type proxyFlags struct {
	config                                string
	policyPath, bundle, pinFile, cacheDir string
	keys                                  []string
	server, identity, groups              string
	auditPath                             string
	auditMaxSize                          byteSize
	auditFailOpen, auditArguments         bool
	adminAddr                             string
	adminRemote                           bool
	stateKind, stateDir                   string
	stateFlushEvery                       time.Duration
	redisURL                              string
	redisTimeout                          time.Duration
	redisFailOpen                         bool
	denyAsError                           bool
	stateDirGiven                         bool
	listen, upstream                      string
	grants, jwks, jwtIssuer               string
	jwtAudience, upstreamHeaders          []string
	allowAnonymous                        bool
	approvalMode, adminTokenFile          string
	webhookURL, webhookSecretFile         string
	upstreamTimeout, shutdownTimeout      time.Duration
	rf                                    registryFlags
}

func proxyCmd() *cobra.Command {
	var pf proxyFlags
	c := &cobra.Command{
		Use:   "proxy (--policy PATH | --bundle FILE|REF@DIGEST | --pin-file FILE) [--server NAME] [--config FILE] (-- CMD [ARG…] | --listen ADDR --upstream URL | --upstream URL)",
		Short: "Run an MCP server behind toolgate (stdio, Streamable HTTP, or a bridge), enforcing a policy on every tools/call",
		Long: "Three ways to run: `-- CMD [ARG…]` starts a stdio server (the line an MCP client's config\n" +
			"holds); `--listen ADDR --upstream URL` serves Streamable HTTP in front of an HTTP server;\n" +
			"`--upstream URL` alone bridges a stdio client to an HTTP server.\n\n" +
			"Proxy starts the MCP server command after --, relays the MCP client on stdin/stdout to it,\n" +
			"and decides every tools/call with the policy: a denied call is answered with an isError\n" +
			"result (or, with --deny-as-error, a JSON-RPC error) and never reaches the server; hidden\n" +
			"tools are removed from tools/list. Logs are JSON lines on stderr. It exits 1 when the\n" +
			"server exits before the client.\n\n" +
			"Policy sources: --policy compiles policy files in-process (development); --bundle loads a\n" +
			"bundle file, or pulls REF@DIGEST by digest and verifies it with --key (an oci:DIR@DIGEST\n" +
			"layout on disk is checked by digest, and with --key by its signature in the layout);\n" +
			"--pin-file loads the signed bundle a pin file\n" +
			"names, through --cache-dir (so a bundle verified before loads while the registry is down),\n" +
			"and again whenever the pin file changes or SIGHUP arrives. A bundle that fails is refused\n" +
			"while the one in force stays; with no verified bundle every tools/call is denied.\n\n" +
			"--config FILE reads the same settings from YAML: each key is a flag name below without\n" +
			"the dashes, plus `command:` (the server command as a list); flags given on the command\n" +
			"line win, and relative paths are relative to the config file (docs/proxy.md).\n\n" +
			"The admin listener (--admin) serves /healthz, /readyz, /status and /metrics.",
		RunE: func(cmd *cobra.Command, args []string) error { return runProxy(cmd, &pf, args) },
	}
	f := c.Flags()
	f.StringVar(&pf.config, "config", "", "YAML file holding these flags: keys are the flag names, plus command (the server command as a list)")
	f.StringVar(&pf.policyPath, "policy", "", "policy file or folder to compile in-process (development)")
	f.StringVar(&pf.bundle, "bundle", "", "bundle file (.tar.gz) built by toolgate build, or REF@DIGEST to pull and verify with --key")
	f.StringSliceVar(&pf.keys, "key", nil, "public key a --bundle REF@DIGEST must be signed with (repeatable)")
	f.StringVar(&pf.pinFile, "pin-file", "", "pin file naming the signed bundle to run (watched; SIGHUP re-reads it)")
	f.StringVar(&pf.cacheDir, "cache-dir", defaultCacheDir(), "folder where pulled bundles are cached, for loading while the registry is down")
	f.StringVar(&pf.adminAddr, "admin", defaultAdminAddr, "address of the admin listener (/healthz, /readyz, /status, /metrics); empty turns it off")
	f.BoolVar(&pf.adminRemote, "admin-allow-remote", false, "allow --admin on an address that is not loopback")
	f.StringVar(&pf.server, "server", "", "name of the MCP server, as the policies name it (default: the one server the policies govern)")
	f.StringVar(&pf.listen, "listen", "", "serve MCP over Streamable HTTP on this address (with --upstream)")
	f.StringVar(&pf.upstream, "upstream", "", "the MCP server's Streamable HTTP endpoint; without --listen, a stdio client is bridged to it")
	f.StringVar(&pf.grants, "grants", "", "grants file: the bearer tokens (by sha256) HTTP callers may present, and who they are (watched; SIGHUP re-reads it)")
	f.StringVar(&pf.jwks, "jwks", "", "JWKS file or URL verifying bearer JWTs of HTTP callers (with --jwt-issuer and --jwt-audience)")
	f.StringVar(&pf.jwtIssuer, "jwt-issuer", "", "the iss bearer JWTs must carry")
	f.StringSliceVar(&pf.jwtAudience, "jwt-audience", nil, "audience(s) bearer JWTs must name (repeatable)")
	f.StringSliceVar(&pf.upstreamHeaders, "upstream-header", nil, "header sent to an HTTP server on forwarded calls, NAME=env:VAR or NAME=file:PATH (or NAME=Bearer env:VAR); repeatable")
	f.BoolVar(&pf.allowAnonymous, "allow-anonymous", false, "with --listen on an address that is not loopback, accept callers without credentials (no --grants or --jwks)")
	f.StringVar(&pf.identity, "identity", "", "subject of the caller over stdio (identity.subject); default $TOOLGATE_IDENTITY")
	f.StringVar(&pf.groups, "groups", "", "comma-separated groups of the caller over stdio (identity.groups); default $TOOLGATE_GROUPS")
	f.StringVar(&pf.auditPath, "audit-log", "", "append a hash-chained JSON line per decision to this file")
	f.Var(&pf.auditMaxSize, "audit-max-size", "rotate the audit log when it would grow past this size, e.g. 100MiB, keeping the chain across files (0: never)")
	f.BoolVar(&pf.auditFailOpen, "audit-fail-open", false, "let calls through when the audit log cannot be written (default: deny them)")
	f.BoolVar(&pf.auditArguments, "audit-arguments", false, "write each call's argument values into the audit log (default: only their sha256)")
	f.Var(newOneOf(&pf.stateKind, "disk", "memory", "disk", "redis"), "state", "where counters live: disk (kept in --state-dir across restarts), memory (lost on exit), or redis (shared, --redis); --redis alone implies redis")
	f.StringVar(&pf.redisURL, "redis", "", "Redis URL for state shared by several proxies: redis://[USER@]HOST:PORT[/DB] or rediss:// for TLS; the password from TOOLGATE_REDIS_PASSWORD")
	f.DurationVar(&pf.redisTimeout, "redis-timeout", counters.DefaultRedisTimeout, "timeout of each Redis operation")
	f.BoolVar(&pf.redisFailOpen, "redis-fail-open", false, "let calls through, uncounted, while Redis is unreachable (default: deny them)")
	f.StringVar(&pf.stateDir, "state-dir", defaultStateDir(), "folder where --state disk keeps counters, in a subfolder per --server")
	f.DurationVar(&pf.stateFlushEvery, "state-flush-every", counters.DefaultFlushEvery, "how often --state disk writes changed counters to its journal and fsyncs it: a crash loses at most this much of the counts")
	f.Var(newOneOf(&pf.approvalMode, string(proxy.ApprovalAsync), string(proxy.ApprovalAsync), string(proxy.ApprovalHold)), "approval-mode", "how a call needing approval is answered: async (a JSON-RPC error with the approval id; retry once approved) or hold (the call waits for the decision)")
	f.StringVar(&pf.adminTokenFile, "admin-token-file", "", "file of the tokens the approvals admin API accepts (one per line: TOKEN or sha256:HEX, then optionally NAME and GROUPS); without it the API refuses every call")
	f.StringVar(&pf.webhookURL, "approval-webhook", "", "URL that receives a signed POST for each new approval request")
	f.StringVar(&pf.webhookSecretFile, "approval-webhook-secret-file", "", "file holding the HMAC-SHA256 key that signs --approval-webhook bodies")
	f.BoolVar(&pf.denyAsError, "deny-as-error", false, "answer denied calls with a JSON-RPC error instead of an isError result the model can read")
	f.DurationVar(&pf.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGINT or SIGTERM, how long calls in flight may take to finish before they are answered with an error")
	f.DurationVar(&pf.upstreamTimeout, "upstream-timeout", 0, "answer a call the server has not answered within this long with an error (0: wait); it also bounds the proxy's own listing of the tools (30s when 0)")
	pf.rf.add(c)
	markPaths(f, "config", "policy", "bundle", "key", "pin-file", "cache-dir", "state-dir", "audit-log", "registry-ca",
		"admin-token-file", "approval-webhook-secret-file", "grants")
	return c
}

// proxyCommand returns the server command: what follows --, or the config
// file's command.
func proxyCommand(cmd *cobra.Command, args, fromConfig []string) ([]string, error) {
	dash := cmd.ArgsLenAtDash()
	switch {
	case dash > 0 || (dash < 0 && len(args) > 0):
		return nil, usageError{fmt.Errorf("unexpected argument %q: the server command goes after --", args[0])}
	case dash == 0 && len(args) > 0:
		return args, nil
	case len(fromConfig) > 0:
		return fromConfig, nil
	}
	return nil, usageError{errors.New("proxy needs the server command after -- (or command: in --config)")}
}

func runProxy(cmd *cobra.Command, pf *proxyFlags, args []string) error {
	var fromConfig []string
	if pf.config != "" {
		var err error
		if fromConfig, err = applyConfig(cmd.Flags(), pf.config); err != nil {
			return usageError{err}
		}
	}
	if pf.listen != "" && pf.upstream == "" {
		return usageError{errors.New("--listen needs --upstream URL (the MCP server's Streamable HTTP endpoint)")}
	}
	var command []string
	if pf.upstream == "" {
		var err error
		if command, err = proxyCommand(cmd, args, fromConfig); err != nil {
			return err
		}
	} else if len(args) > 0 || len(fromConfig) > 0 {
		return usageError{errors.New("--upstream proxies an HTTP server: give no server command")}
	}
	sources := 0
	for _, s := range []string{pf.policyPath, pf.bundle, pf.pinFile} {
		if s != "" {
			sources++
		}
	}
	if sources != 1 {
		return usageError{errors.New("proxy needs exactly one of --policy PATH, --bundle FILE|REF@DIGEST and --pin-file FILE")}
	}
	pf.stateDirGiven = cmd.Flags().Changed("state-dir")
	if pf.redisURL != "" && !cmd.Flags().Changed("state") {
		pf.stateKind = "redis"
	}
	if pf.stateKind == "redis" && pf.redisURL == "" { // --state and --approval-mode take only their words (oneOf)
		return usageError{errors.New("--state redis needs --redis URL")}
	}
	if (pf.webhookURL == "") != (pf.webhookSecretFile == "") {
		return usageError{errors.New("--approval-webhook and --approval-webhook-secret-file go together")}
	}
	if pf.upstreamTimeout < 0 {
		return usageError{fmt.Errorf("--upstream-timeout must not be negative")}
	}
	ctx := cmd.Context()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))

	rt, err := newProxyRuntime(ctx, cmd, pf, logger)
	defer rt.close()
	if err != nil {
		return err
	}
	rt.startAdmin()
	digest, _ := rt.eng.Active()
	metrics, pol := rt.metrics, rt.pol
	if pf.upstream != "" {
		return runHTTPProxy(ctx, cmd, pf, rt)
	}

	up := exec.Command(command[0], command[1:]...)
	up.Stderr = os.Stderr
	upIn, upOut, childIn, childOut, err := serverPipes()
	if err != nil {
		return err
	}
	up.Stdin, up.Stdout = childIn, childOut
	err = up.Start()
	childIn.Close() // the server has its own copies
	childOut.Close()
	if err != nil {
		upIn.Close()
		upOut.Close()
		return problemError{fmt.Errorf("starting the MCP server %q: %w", command[0], err)}
	}
	defer upOut.Close()
	logger.Info("proxy started", "server", pf.server, "bundle", digest, "command", command[0], "pid", up.Process.Pid)

	st := &proxy.Stdio{
		Server: pf.server,
		// The local user started this process: the identity is theirs,
		// from the flags or TOOLGATE_IDENTITY / TOOLGATE_GROUPS.
		Identity: identity.Local(pf.identity, pf.groups),
		Decide:   pol.Decide,
		Hidden:   pol.Hidden,
		// A policy reading tool.annotations gets them from the server
		// even when the client called without listing.
		ReadsAnnotations: pol.ReadsAnnotations,
		Logger:           logger,
		DenyAsError:      pf.denyAsError,
		CallTimeout:      pf.upstreamTimeout,
		UpstreamError:    metrics.UpstreamError,
		Listed:           metrics.Listed,
	}
	// SIGINT/SIGTERM: finish the calls in flight (up to
	// --shutdown-timeout), then close the server's input so that it exits.
	var shuttingDown atomic.Bool
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stop)
	go func() {
		sig, ok := <-stop
		if !ok {
			return
		}
		shuttingDown.Store(true)
		logger.Info("shutting down: finishing calls in flight", "signal", sig.String(), "pending", st.Pending(), "timeout", pf.shutdownTimeout.String())
		dctx, cancel := context.WithTimeout(context.Background(), pf.shutdownTimeout)
		left := st.Drain(dctx)
		cancel()
		if left > 0 {
			logger.Warn("shutdown timeout: answering the calls still in flight with an error", "pending", left)
			st.Abort("toolgate is shutting down and the MCP server did not answer in time")
		}
		if !st.CloseServerInput() {
			upIn.Close() // Run has not started
		}
		// A server busy with an abandoned call may not exit on its own.
		time.AfterFunc(shutdownServerGrace, func() { up.Process.Kill() })
	}()
	runErr := st.Run(ctx, os.Stdin, os.Stdout, upIn, upOut)
	if shuttingDown.Load() {
		waitUpstream(up, shutdownServerGrace+time.Second)
		logger.Info("shut down")
		return nil
	}
	if errors.Is(runErr, proxy.ErrUpstreamExited) {
		metrics.UpstreamError()
		waitErr := up.Wait()
		status := "exit status 0"
		if waitErr != nil {
			status = waitErr.Error()
		}
		return problemError{fmt.Errorf("the MCP server %q exited (%s) while the client was connected; check its stderr above", command[0], status)}
	}
	// The client is gone: give the server a moment to exit on its own.
	waitUpstream(up, 5*time.Second)
	return runErr
}

// shutdownServerGrace is how long a shutting-down stdio proxy lets its
// server run once its input is closed, before killing it: shorter than the
// 5 s MCP clients (the official SDKs) give the proxy itself before they
// signal it again, so that the proxy exits on its own, cleanly.
const shutdownServerGrace = 2 * time.Second

// waitUpstream waits for the server process to exit, killing it after
// grace.
func waitUpstream(up *exec.Cmd, grace time.Duration) {
	done := make(chan error, 1)
	go func() { done <- up.Wait() }()
	select {
	case <-done:
	case <-time.After(grace):
		up.Process.Kill()
		<-done
	}
}

// loadPolicySource makes the flags' policy source active in eng before the
// first call: the pin file or registry digest (then watched), the bundle
// file or layout, or the policy compiled in-process. A pin file or digest
// that fails to load leaves the proxy running and denying every call (fail
// closed) while the watch retries. It returns the swap status for /status
// (nil for sources that never swap) and a function that stops the watch.
func loadPolicySource(ctx context.Context, cmd *cobra.Command, pf *proxyFlags, eng *engine.Engine, logger *slog.Logger) (func() admin.SwapStatus, func(), error) {
	var src *source.PinFile
	var err error
	keyGiven := cmd.Flags().Changed("key")
	if keyGiven && !(pf.bundle != "" && looksLikeReference(pf.bundle)) {
		// A pin file names its own keys; a bundle file carries no signature.
		return nil, nil, usageError{errors.New("--key applies to --bundle REF@DIGEST or oci:DIR@DIGEST only (a pin file names its keys in publicKey:)")}
	}
	switch {
	case pf.pinFile != "":
		src, err = source.NewPinFile(pf.pinFile, pf.cacheDir, eng, source.WithRegistry(pf.rf.options()...), source.WithLogger(logger))
		if err != nil {
			return nil, nil, problemError{err}
		}
	case pf.bundle != "" && looksLikeReference(pf.bundle):
		d, err := oci.ParseDigest(pf.bundle, pf.rf.options()...)
		if err != nil {
			return nil, nil, usageError{fmt.Errorf("--bundle: %w", err)}
		}
		nd, isRegistry := d.Name()
		if !isRegistry {
			// An OCI layout on disk: the digest is checked on the way in,
			// and with --key its signature (in the layout) too.
			if keyGiven { // given empty, readKeys refuses: never a silent skip
				keys, err := readKeys(pf.keys)
				if err != nil {
					return nil, nil, err
				}
				dir, _ := d.Layout()
				if err := sign.VerifyLayout(ctx, dir, d.Hash(), keys); err != nil {
					return nil, nil, problemError{fmt.Errorf("--bundle %s: %w", pf.bundle, err)}
				}
			}
			layer, err := oci.Pull(ctx, d, pf.rf.options()...)
			if err != nil {
				return nil, nil, problemError{err}
			}
			return nil, func() {}, swapBytes(ctx, eng, pf.bundle, layer, d.Hash().String())
		}
		keys, err := readKeys(pf.keys)
		if err != nil {
			return nil, nil, err
		}
		if src, err = source.NewDigest(nd, keys, pf.cacheDir, eng, source.WithRegistry(pf.rf.options()...), source.WithLogger(logger)); err != nil {
			return nil, nil, problemError{err}
		}
	case pf.policyPath != "":
		built, _, err := buildInProcess(ctx, cmd, []string{pf.policyPath})
		if err != nil {
			return nil, nil, err
		}
		var buf bytes.Buffer
		if err := bundles.Write(&buf, built); err != nil {
			return nil, nil, err
		}
		if err := eng.Swap(ctx, bundles.Digest(buf.Bytes()), built); err != nil {
			return nil, nil, problemError{err}
		}
		return nil, func() {}, nil
	default:
		raw, err := os.ReadFile(pf.bundle)
		if err != nil {
			return nil, nil, err
		}
		return nil, func() {}, swapBytes(ctx, eng, pf.bundle, raw, bundles.Digest(raw))
	}
	swaps := func() admin.SwapStatus {
		s := src.Status()
		return admin.SwapStatus{LastError: s.LastError, LastErrorAt: s.LastErrorAt, LastSwap: s.LastSwap, Swaps: s.Swaps, Failures: s.Failures}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	// The first load happens before the server starts, so that a good
	// bundle decides the first call; a failed one leaves the proxy
	// running, denying every call (fail closed), while Watch retries.
	_ = src.Load(ctx)
	wctx, stop := context.WithCancel(ctx)
	go src.Watch(wctx, hup)
	return swaps, func() { stop(); signal.Stop(hup) }, nil
}

// swapBytes reads a bundle and makes it active under digest.
func swapBytes(ctx context.Context, eng *engine.Engine, name string, raw []byte, digest string) error {
	b, err := bundles.ReadBytes(raw, bundles.Limits{})
	if err != nil {
		return problemError{fmt.Errorf("loading %s: %w", name, err)}
	}
	if err := eng.Swap(ctx, digest, b); err != nil {
		return problemError{err}
	}
	return nil
}

// openCounters opens the counter store --state names. Counters are per
// server: each server's proxy keeps them in its own subfolder of
// --state-dir.
// redisCounterPrefix starts the Redis keys of server's counters. The name
// is escaped, ':' included, so that no two servers' keys can meet (server
// "a" with tool "b:x" and server "a:b" with tool "x" shared keys when ':'
// was left as it is).
func redisCounterPrefix(server string) string {
	return counters.DefaultRedisKeyPrefix + strings.ReplaceAll(url.PathEscape(server), ":", "%3A") + ":"
}

func openCounters(cmd *cobra.Command, pf *proxyFlags, logger *slog.Logger) (proxy.Counters, func(), error) {
	switch pf.stateKind {
	case "memory":
		return counters.New(), func() {}, nil
	case "redis":
		opts, err := redisOptions(pf.redisURL)
		if err != nil {
			return nil, nil, usageError{fmt.Errorf("--redis: %w", err)}
		}
		opts.KeyPrefix = redisCounterPrefix(pf.server)
		opts.Timeout, opts.FailOpen, opts.Logger = pf.redisTimeout, pf.redisFailOpen, logger
		r, err := counters.OpenRedis(opts)
		if err != nil {
			return nil, nil, usageError{err}
		}
		return r, func() { r.Close() }, nil
	}
	dir := filepath.Join(pf.stateDir, stateSubdir(pf.server))
	if pf.stateFlushEvery <= 0 {
		return nil, nil, usageError{fmt.Errorf("--state-flush-every %s: must be positive", pf.stateFlushEvery)}
	}
	disk, err := counters.OpenDisk(dir, counters.DiskOptions{FlushEvery: pf.stateFlushEvery})
	switch {
	case err != nil && errors.Is(err, counters.ErrLocked) && !cmd.Flags().Changed("state-dir"):
		// Another proxy for the same server (a second MCP client) holds
		// the default folder: this one counts in memory, like the proxies
		// before durable counters.
		logger.Warn("counter state in use by another proxy; counting in memory; pass --state-dir DIR to keep them", "dir", dir, "err", err)
		return counters.New(), func() {}, nil
	case err != nil:
		return nil, nil, problemError{fmt.Errorf("opening the counter state (--state-dir; --state memory keeps none): %w", err)}
	}
	return disk, func() {
		if err := disk.Close(); err != nil {
			logger.Error("saving the counter state", "dir", dir, "err", err)
		}
	}, nil
}
