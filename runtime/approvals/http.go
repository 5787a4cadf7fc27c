package approvals

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// DefaultTokenName is who decides with a token whose line names no one.
const DefaultTokenName = "admin"

// minTokenLen is the shortest token a token file may hold in clear.
const minTokenLen = 16

// ErrUnauthorized: the admin API was called without a valid token.
var ErrUnauthorized = errors.New("admin API token missing or not accepted")

// Tokens are the bearer tokens the admin API accepts, kept only as their
// sha256. A Tokens is immutable and safe for concurrent use.
type Tokens struct {
	list []token
}

type token struct {
	sum    [sha256.Size]byte
	name   string
	named  bool // the line named who holds it
	groups []string
}

// LoadTokens reads a token file (see [ParseTokens]).
func LoadTokens(path string) (*Tokens, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading admin token file: %w", err)
	}
	t, err := ParseTokens(raw)
	if err != nil {
		return nil, fmt.Errorf("admin token file %s: %w", path, err)
	}
	return t, nil
}

// ParseTokens reads a token file: one token a line, blank lines and lines
// starting with # skipped. A line is
//
//	TOKEN [NAME [GROUP,GROUP…]]
//
// TOKEN is the token itself (at least 16 characters; e.g. the output of
// `openssl rand -hex 32`) or "sha256:" and its sha256 in hex, so that the
// proxy's file need not hold the token. NAME is who decides with it, and the
// groups are theirs, checked against a request's approvers. A token without
// a NAME is shared: whoever holds it decides as the name they give ("as"),
// DefaultTokenName when they give none, with no groups. A named token
// decides as its NAME only. Every problem is reported, by line.
func ParseTokens(data []byte) (*Tokens, error) {
	t := &Tokens{}
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) > 3 {
			errs = append(errs, fmt.Errorf("line %d: %d fields; want TOKEN [NAME [GROUP,GROUP…]]", n, len(f)))
			continue
		}
		var tok token
		if hexSum, ok := strings.CutPrefix(f[0], "sha256:"); ok {
			sum, err := hex.DecodeString(hexSum)
			if err != nil || len(sum) != sha256.Size {
				errs = append(errs, fmt.Errorf("line %d: %q is not sha256: and 64 hex digits", n, f[0]))
				continue
			}
			copy(tok.sum[:], sum)
		} else {
			if len(f[0]) < minTokenLen {
				errs = append(errs, fmt.Errorf("line %d: the token is %d characters; use at least %d (e.g. openssl rand -hex 32)", n, len(f[0]), minTokenLen))
				continue
			}
			tok.sum = sha256.Sum256([]byte(f[0]))
		}
		tok.name = DefaultTokenName
		if len(f) > 1 {
			tok.name, tok.named = f[1], true
		}
		if len(f) > 2 {
			for g := range strings.SplitSeq(f[2], ",") {
				if g != "" {
					tok.groups = append(tok.groups, g)
				}
			}
		}
		t.list = append(t.list, tok)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 && len(t.list) == 0 {
		errs = append(errs, errors.New("no token; put one on a line (e.g. the output of openssl rand -hex 32)"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// match returns the token whose hash equals presented's. It compares every
// token in constant time, whichever matches.
func (t *Tokens) match(presented string) (token, bool) {
	if t == nil || presented == "" {
		return token{}, false
	}
	sum := sha256.Sum256([]byte(presented))
	found := -1
	for i := range t.list {
		if subtle.ConstantTimeCompare(sum[:], t.list[i].sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return token{}, false
	}
	return t.list[found], true
}

// ReadToken returns the token to present from a token file: the first
// token of the first line that holds one. A file that holds only the token's
// hash cannot be used to call the API.
func ReadToken(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading admin token file: %w", err)
	}
	for line := range strings.Lines(string(raw)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		tok := strings.Fields(line)[0]
		if strings.HasPrefix(tok, "sha256:") {
			return "", fmt.Errorf("admin token file %s holds the token's sha256, not the token; give a file with the token itself", path)
		}
		return tok, nil
	}
	return "", fmt.Errorf("admin token file %s holds no token", path)
}

// DecideBody is the JSON body of POST /approvals/{id}/approve and /deny.
type DecideBody struct {
	// As is who decides; with a shared token, empty means
	// DefaultTokenName; with a named token, it must be empty or that name.
	As     string `json:"as,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// ListBody is the JSON body of GET /approvals.
type ListBody struct {
	Approvals []Request `json:"approvals"`
}

// ErrorBody is the JSON body of every error answer. Code is one of
// unauthorized, bad_request, not_found, forbidden, self_approval,
// not_approver, not_pending, expired, unavailable.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// maxBody bounds a decision's body; maxReason its reason.
const (
	maxBody   = 16 << 10
	maxReason = 4 << 10
)

// Handler serves the approval queue's admin API, for mounting on the admin
// listener at /approvals and /approvals/:
//
//   - GET /approvals[?status=S][&limit=N]: [ListBody], newest first;
//   - GET /approvals/{id}: the [Request];
//   - POST /approvals/{id}/approve and /deny, body [DecideBody] (optional):
//     the decided [Request].
//
// Every call must carry "Authorization: Bearer TOKEN" with a token of
// tokens, else it is answered 401 with a WWW-Authenticate header (nil tokens
// refuse every call). Errors are [ErrorBody] with 400, 403 (the decider may
// not decide this request), 404, 409 (not pending, or expired) or 503 (the
// store could not answer). The decider recorded is the "as" of the body or
// the token's name. The handler is safe for concurrent use.
func Handler(s Store, tokens *Tokens) http.Handler {
	h := &handler{store: s, tokens: tokens}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /approvals", h.list)
	mux.HandleFunc("GET /approvals/{id}", h.get)
	mux.HandleFunc("POST /approvals/{id}/approve", func(w http.ResponseWriter, r *http.Request) { h.decide(w, r, true) })
	mux.HandleFunc("POST /approvals/{id}/deny", func(w http.ResponseWriter, r *http.Request) { h.decide(w, r, false) })
	return h.auth(mux)
}

type handler struct {
	store  Store
	tokens *Tokens
}

type tokenKey struct{}

func (h *handler) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, bearer, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		tok, found := h.tokens.match(strings.TrimSpace(bearer))
		if !strings.EqualFold(scheme, "Bearer") || !found {
			w.Header().Set("WWW-Authenticate", `Bearer realm="toolgate admin"`)
			msg := "missing or wrong admin token: send Authorization: Bearer TOKEN with a token from the proxy's --admin-token-file"
			if h.tokens == nil {
				msg = "the approval API is off: start the proxy with --admin-token-file"
			}
			writeError(w, http.StatusUnauthorized, "unauthorized", msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenKey{}, tok)))
	})
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	var f Filter
	q := r.URL.Query()
	if s := q.Get("status"); s != "" {
		f.Status = Status(s)
		if !f.Status.Valid() {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("unknown status %q; use pending, approved, denied, expired or used", s))
			return
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("limit %q is not a number of requests", s))
			return
		}
		f.Limit = n
	}
	rs, err := h.store.List(r.Context(), f)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if rs == nil {
		rs = []Request{}
	}
	writeJSON(w, http.StatusOK, ListBody{Approvals: rs})
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	req, err := h.store.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (h *handler) decide(w http.ResponseWriter, r *http.Request, approve bool) {
	tok, _ := r.Context().Value(tokenKey{}).(token)
	var body DecideBody
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("reading the body: %v", err))
		return
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf(`the body is not {"as": "NAME", "reason": "…"}: %v`, err))
			return
		}
	}
	if len(body.Reason) > maxReason {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("the reason is %d bytes; keep it under %d", len(body.Reason), maxReason))
		return
	}
	by := Identity{Subject: tok.name, Groups: tok.groups}
	if body.As != "" {
		if tok.named && body.As != tok.name {
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("this token decides as %q only; leave out \"as\" or use another token", tok.name))
			return
		}
		by.Subject = body.As
	}
	req, err := h.store.Decide(r.Context(), r.PathValue("id"), approve, by, body.Reason)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func writeStoreError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, ErrSelfApproval):
		writeError(w, http.StatusForbidden, "self_approval", err.Error())
	case errors.Is(err, ErrNotApprover):
		writeError(w, http.StatusForbidden, "not_approver", err.Error())
	case errors.Is(err, ErrNoDecider):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, ErrExpired):
		writeError(w, http.StatusConflict, "expired", err.Error())
	case errors.Is(err, ErrNotPending):
		writeError(w, http.StatusConflict, "not_pending", err.Error())
	default:
		writeError(w, http.StatusServiceUnavailable, "unavailable", "the approval store could not answer: "+err.Error())
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
