package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/runtime/identity"
	"github.com/toolgate/toolgate/runtime/proxy"
)

// runHTTPProxy runs the Streamable HTTP proxy (--listen) or the stdio
// client bridged to an HTTP server (--upstream alone).
func runHTTPProxy(ctx context.Context, cmd *cobra.Command, pf *proxyFlags, rt *proxyRuntime) error {
	logger := rt.logger
	up, err := url.Parse(pf.upstream)
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		return usageError{fmt.Errorf("--upstream %q: want the server's http:// or https:// MCP endpoint", pf.upstream)}
	}
	creds, err := identity.ParseUpstreamHeaders(pf.upstreamHeaders)
	if err != nil {
		return usageError{fmt.Errorf("--upstream-header: %w", err)}
	}
	var upstreamHeaders func(http.Header)
	if creds != nil && len(pf.upstreamHeaders) > 0 {
		upstreamHeaders = creds.Apply
	}
	enf := &proxy.Enforcer{Server: pf.server, Decide: rt.pol.Decide, Hidden: rt.pol.Hidden, DenyAsError: pf.denyAsError,
		ReadsAnnotations: rt.pol.ReadsAnnotations}

	if pf.listen == "" {
		// A stdio client (Claude Desktop, Cursor) and an HTTP server: the
		// identity is the local user's, as over stdio.
		b := &proxy.Bridge{Enforcer: enf, Upstream: up, CallTimeout: pf.upstreamTimeout, Logger: logger,
			Identity: identity.Local(pf.identity, pf.groups), UpstreamHeaders: upstreamHeaders, UpstreamError: rt.metrics.UpstreamError, Listed: rt.metrics.Listed}
		logger.Info("proxy started", "server", pf.server, "upstream", up.Redacted(), "mode", "stdio-to-http")
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(stop)
		ran := make(chan error, 1)
		go func() { ran <- b.Run(ctx, os.Stdin, os.Stdout) }()
		select {
		case err := <-ran:
			return err
		case sig := <-stop:
			// As over stdio: finish the calls in flight (up to
			// --shutdown-timeout), answer the rest with an error, end the
			// session.
			logger.Info("shutting down: finishing calls in flight", "signal", sig.String(), "timeout", pf.shutdownTimeout.String())
			sctx, cancel := context.WithTimeout(context.Background(), pf.shutdownTimeout)
			defer cancel()
			if b.Shutdown(sctx) {
				logger.Warn("shutdown timeout: answered the calls still in flight with an error")
			}
			logger.Info("shut down")
			return nil
		}
	}

	auth, err := openAuthenticators(ctx, pf, rt)
	if err != nil {
		return err
	}
	h := &proxy.HTTP{Enforcer: enf, Upstream: up, CallTimeout: pf.upstreamTimeout, Logger: logger,
		Identity: proxy.IdentityOf, UpstreamHeaders: upstreamHeaders, UpstreamError: rt.metrics.UpstreamError, Listed: rt.metrics.Listed}
	var handler http.Handler = h
	l, err := net.Listen("tcp", pf.listen)
	if err != nil {
		return problemError{fmt.Errorf("--listen: %w", err)}
	}
	defer l.Close()
	if auth != nil {
		handler = proxy.Authenticated(h, auth, pf.server, func(r *http.Request, err error) {
			logger.Warn("request refused: no valid credential", "remote", r.RemoteAddr, "err", err)
			rt.pol.Refused(pf.server, err.Error())
		})
	} else {
		host, _, _ := net.SplitHostPort(l.Addr().String())
		if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && !pf.allowAnonymous {
			return usageError{errors.New("--listen on an address that is not loopback needs --grants or --jwks (or --allow-anonymous)")}
		}
		logger.Warn("no --grants or --jwks: HTTP callers are anonymous (identity empty)")
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// No WriteTimeout: calls and event streams last as long as they
		// need (--upstream-timeout bounds the calls).
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stop)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	logger.Info("proxy started", "server", pf.server, "listen", l.Addr().String(), "upstream", up.Redacted(), "mode", "http")
	select {
	case err := <-served:
		return problemError{err}
	case sig := <-stop:
		logger.Info("shutting down: finishing calls in flight", "signal", sig.String(), "timeout", pf.shutdownTimeout.String())
		sctx, cancel := context.WithTimeout(context.Background(), pf.shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			// Event streams (GET) stay open until their clients go: close
			// what is left.
			srv.Close()
		}
		logger.Info("shut down")
		return nil
	}
}

// openAuthenticators opens --grants (watched, and re-read on SIGHUP) and
// --jwks; it returns nil when neither is set.
func openAuthenticators(ctx context.Context, pf *proxyFlags, rt *proxyRuntime) (identity.Authenticator, error) {
	var auths []identity.Authenticator
	if pf.grants != "" {
		g, err := identity.OpenGrants(pf.grants, identity.WithLogger(rt.logger))
		if err != nil {
			return nil, usageError{fmt.Errorf("--grants: %w", err)}
		}
		wctx, cancel := context.WithCancel(ctx)
		rt.onClose(cancel)
		go g.Watch(wctx)
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		rt.onClose(func() { signal.Stop(hup) })
		go func() {
			for {
				select {
				case <-wctx.Done():
					return
				case <-hup:
					if err := g.Reload(); err != nil {
						rt.logger.Error("grants file not reloaded; the grants in force stay", "err", err)
					}
				}
			}
		}()
		auths = append(auths, g)
	}
	if pf.jwks != "" {
		j, err := identity.NewJWT(identity.JWTConfig{JWKS: pf.jwks, Issuer: pf.jwtIssuer, Audience: pf.jwtAudience}, identity.WithLogger(rt.logger))
		if err != nil {
			return nil, usageError{fmt.Errorf("--jwks: %w", err)}
		}
		if err := j.Refresh(ctx); err != nil {
			rt.logger.Warn("JWKS not read yet; tokens are refused until it is", "err", err)
		}
		auths = append(auths, j)
	}
	if len(auths) == 0 {
		return nil, nil
	}
	return identity.Chain(auths...), nil
}
