package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/runtime/admin"
	"github.com/toolgate/toolgate/runtime/approvals"
	"github.com/toolgate/toolgate/runtime/audit"
	"github.com/toolgate/toolgate/runtime/engine"
	"github.com/toolgate/toolgate/runtime/proxy"
)

// proxyRuntime is what every transport of the proxy shares: the engine and
// its bundle source, the policy with its counters, audit log and approval
// store, the metrics, and the approvals admin API. close releases it all, in
// reverse order of opening.
type proxyRuntime struct {
	logger       *slog.Logger
	eng          *engine.Engine
	pol          *proxy.Policy
	metrics      *admin.Metrics
	swaps        func() admin.SwapStatus
	approvalsAPI http.Handler
	// adminListener is the admin listener's socket; nil when there is
	// none (then no one can approve a call waiting on this proxy).
	adminListener net.Listener
	closers       []func()
}

func (rt *proxyRuntime) onClose(f func()) { rt.closers = append(rt.closers, f) }

func (rt *proxyRuntime) close() {
	for i := len(rt.closers) - 1; i >= 0; i-- {
		rt.closers[i]()
	}
	rt.closers = nil
}

// newProxyRuntime opens what pf names. On error, what was opened is
// released by close.
func newProxyRuntime(ctx context.Context, cmd *cobra.Command, pf *proxyFlags, logger *slog.Logger) (*proxyRuntime, error) {
	rt := &proxyRuntime{logger: logger, eng: engine.New(), metrics: admin.NewMetrics()}
	rt.onClose(func() { rt.eng.Close() })
	swaps, stopSource, err := loadPolicySource(ctx, cmd, pf, rt.eng, logger)
	if err != nil {
		return rt, err
	}
	rt.swaps = swaps
	rt.onClose(stopSource)
	if pf.server == "" {
		if pf.server, err = soleServer(rt.eng); err != nil {
			return rt, err
		}
		logger.Info("governing the one server the policies name", "server", pf.server)
	}
	// Compiling policies (OPA) and Wasm (wazero) at start leaves a large
	// heap behind that the proxy never needs again: hand it back now rather
	// than when the scavenger gets to it.
	debug.FreeOSMemory()

	ctrs, closeCounters, err := openCounters(cmd, pf, logger)
	if err != nil {
		return rt, err
	}
	rt.onClose(closeCounters)
	opts := []proxy.PolicyOption{proxy.WithCounters(ctrs), proxy.WithLogger(logger)}
	var alog *audit.Log
	if pf.auditPath != "" {
		if alog, err = audit.Open(pf.auditPath, audit.WithMaxBytes(int64(pf.auditMaxSize))); err != nil {
			return rt, problemError{err}
		}
		rt.onClose(func() { alog.Close() })
		opts = append(opts, proxy.WithAudit(alog), proxy.WithAuditFailOpen(pf.auditFailOpen), proxy.WithAuditArguments(pf.auditArguments))
	}
	if err := rt.listenAdmin(cmd, pf); err != nil {
		return rt, err
	}
	if rt.adminListener == nil && pf.stateKind != "redis" {
		// Approvals are given through an admin listener holding the
		// store (on Redis, any proxy's): this proxy has none, so a call
		// waiting here could never be approved. Say so at once.
		why := "No one can approve it on this proxy (it has no admin listener: --admin is off, or its address was taken by another proxy; give --admin ADDR), so the call is denied."
		logger.Warn("calls needing approval will be denied: approvals are given through the admin listener, which is not running", "admin", pf.adminAddr)
		opts = append(opts, proxy.WithoutApprovals(why))
	} else {
		store, err := rt.openApprovals(pf, alog)
		if err != nil {
			return rt, err
		}
		opts = append(opts, proxy.WithApprovals(store, proxy.ApprovalMode(pf.approvalMode)))
	}
	opts = append(opts, proxy.WithDecided(rt.metrics.Decided))
	rt.pol = proxy.NewPolicy(rt.eng, opts...)
	rt.metrics.CountAuditErrors(rt.pol.AuditErrors)
	return rt, nil
}

// soleServer is the server the proxy governs when --server is not given:
// the one server the active bundle's policies govern. With several, or no
// bundle active yet (a pin whose registry is down at start), the proxy
// cannot tell which and --server must name it.
func soleServer(eng *engine.Engine) (string, error) {
	m, ok := eng.Manifest()
	switch {
	case !ok:
		return "", usageError{errors.New("proxy needs --server NAME: no bundle is active yet to tell which server its policies govern")}
	case len(m.Metadata.Servers) == 1:
		return m.Metadata.Servers[0], nil
	case len(m.Metadata.Servers) == 0:
		return "", usageError{errors.New("proxy needs --server NAME: the bundle's policies govern no server")}
	}
	return "", usageError{fmt.Errorf("proxy needs --server NAME: the policies govern %d servers (%s)", len(m.Metadata.Servers), strings.Join(m.Metadata.Servers, ", "))}
}

// openApprovals opens the approval store (Redis with --redis, else on disk
// beside the counters), its events to the audit log and the webhook, and
// the admin API over it.
func (rt *proxyRuntime) openApprovals(pf *proxyFlags, alog *audit.Log) (approvals.Store, error) {
	var hooks []func(approvals.Event)
	if alog != nil {
		hooks = append(hooks, proxy.ApprovalAuditor(alog, func(err error) {
			rt.logger.Error("audit log write failed for an approval event", "err", err)
		}))
	}
	if pf.webhookURL != "" {
		secret, err := os.ReadFile(pf.webhookSecretFile)
		if err != nil {
			return nil, problemError{fmt.Errorf("--approval-webhook-secret-file: %w", err)}
		}
		wh, err := approvals.NewWebhook(approvals.WebhookOptions{URL: pf.webhookURL, Secret: []byte(strings.TrimSpace(string(secret))), Logger: rt.logger})
		if err != nil {
			return nil, usageError{fmt.Errorf("--approval-webhook: %w", err)}
		}
		rt.onClose(func() { wh.Close() }) // after the store closes (closers run in reverse)
		hooks = append(hooks, wh.Event)
	}
	opts := []approvals.Option{approvals.WithLogger(rt.logger), approvals.WithEvents(func(e approvals.Event) {
		for _, h := range hooks {
			h(e)
		}
	})}
	var store approvals.Store
	switch pf.stateKind {
	case "redis":
		ro, err := redisOptions(pf.redisURL)
		if err != nil {
			return nil, usageError{fmt.Errorf("--redis: %w", err)}
		}
		r, err := approvals.OpenRedis(approvals.RedisOptions{Addr: ro.Addr, Username: ro.Username, Password: ro.Password, DB: ro.DB, TLS: ro.TLS, Timeout: pf.redisTimeout}, opts...)
		if err != nil {
			return nil, usageError{err}
		}
		store = r
	default:
		dir := filepath.Join(pf.stateDir, stateSubdir(pf.server))
		if pf.stateKind == "memory" {
			tmp, err := os.MkdirTemp("", "toolgate-approvals-")
			if err != nil {
				return nil, err
			}
			rt.onClose(func() { os.RemoveAll(tmp) })
			dir = tmp
		}
		d, err := approvals.OpenDisk(dir, opts...)
		if errors.Is(err, approvals.ErrLocked) && !rt.cmdChangedStateDir(pf) {
			// Another proxy for this server holds the default folder (a
			// second MCP client): this one keeps its approvals apart.
			tmp, terr := os.MkdirTemp("", "toolgate-approvals-")
			if terr != nil {
				return nil, terr
			}
			rt.onClose(func() { os.RemoveAll(tmp) })
			rt.logger.Warn("approval store in use by another proxy; keeping approvals in a temporary folder; pass --state-dir DIR to keep them", "dir", dir)
			d, err = approvals.OpenDisk(tmp, opts...)
		}
		if err != nil {
			return nil, problemError{fmt.Errorf("opening the approval store: %w", err)}
		}
		store = d
	}
	rt.onClose(func() { store.Close() })

	var tokens *approvals.Tokens
	if pf.adminTokenFile != "" {
		t, err := approvals.LoadTokens(pf.adminTokenFile)
		if err != nil {
			return nil, usageError{err}
		}
		tokens = t
	}
	rt.approvalsAPI = approvals.Handler(store, tokens)
	return store, nil
}

// cmdChangedStateDir reports whether --state-dir was given (then a locked
// folder is an error, not a reason to fall back).
func (rt *proxyRuntime) cmdChangedStateDir(pf *proxyFlags) bool { return pf.stateDirGiven }

// listenAdmin opens the admin listener's socket (rt.adminListener), or
// leaves it nil when --admin is off or its default address is taken.
func (rt *proxyRuntime) listenAdmin(cmd *cobra.Command, pf *proxyFlags) error {
	if pf.adminAddr == "" {
		return nil
	}
	l, err := admin.Listen(pf.adminAddr, pf.adminRemote)
	switch {
	case err != nil && errors.Is(err, admin.ErrRemote):
		return usageError{err}
	case err != nil && !cmd.Flags().Changed("admin"):
		// Several stdio proxies may run side by side (one per server in an
		// MCP client's config): only the first gets the default port.
		rt.logger.Warn("admin listener not started; pass --admin ADDR to choose another address", "addr", pf.adminAddr, "err", err)
		return nil
	case err != nil:
		return problemError{err}
	}
	rt.adminListener = l
	rt.onClose(func() { l.Close() })
	return nil
}

// startAdmin serves the admin listener opened by listenAdmin: /healthz,
// /readyz, /status, /metrics and the approvals API under /approvals.
func (rt *proxyRuntime) startAdmin() {
	l := rt.adminListener
	if l == nil {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/", admin.Handler(rt.eng, rt.swaps, rt.metrics))
	mux.Handle("/approvals", rt.approvalsAPI)
	mux.Handle("/approvals/", rt.approvalsAPI)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	rt.onClose(func() { srv.Close() })
	rt.logger.Info("admin listener started", "addr", l.Addr().String())
}
