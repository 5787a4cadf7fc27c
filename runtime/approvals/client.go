package approvals

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultClientTimeout bounds each call a [Client] makes when it has no
// HTTP client of its own.
const DefaultClientTimeout = 10 * time.Second

// Client calls the admin API [Handler] serves. Set the fields, then call
// its methods; it is safe for concurrent use.
type Client struct {
	// BaseURL is the admin listener, e.g. http://127.0.0.1:9091. Required.
	BaseURL string
	// Token is the bearer token; empty sends none (and the API answers
	// ErrUnauthorized).
	Token string
	// HTTP is the client used; nil means one with DefaultClientTimeout.
	HTTP *http.Client
}

// APIError is an error answer of the admin API. It wraps the sentinel its
// code stands for (ErrNotFound, ErrExpired, ErrUnauthorized, …), so test
// with errors.Is.
type APIError struct {
	StatusCode int
	Code       string
	Message    string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("admin API answered %d", e.StatusCode)
	}
	return e.Message
}

// Unwrap returns the sentinel error for e's code, if any.
func (e *APIError) Unwrap() error {
	switch e.Code {
	case "unauthorized":
		return ErrUnauthorized
	case "not_found":
		return ErrNotFound
	case "self_approval":
		return ErrSelfApproval
	case "not_approver":
		return ErrNotApprover
	case "not_pending":
		return ErrNotPending
	case "expired":
		return ErrExpired
	}
	if e.StatusCode == http.StatusUnauthorized {
		return ErrUnauthorized
	}
	return nil
}

// List returns the requests f selects, newest first.
func (c *Client) List(ctx context.Context, f Filter) ([]Request, error) {
	q := url.Values{}
	if f.Status != "" {
		q.Set("status", string(f.Status))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	path := "/approvals"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var body ListBody
	if err := c.do(ctx, http.MethodGet, path, nil, &body); err != nil {
		return nil, err
	}
	return body.Approvals, nil
}

// Get returns request id.
func (c *Client) Get(ctx context.Context, id string) (Request, error) {
	var r Request
	err := c.do(ctx, http.MethodGet, "/approvals/"+url.PathEscape(id), nil, &r)
	return r, err
}

// Decide approves or denies request id as the given name (empty: the
// token's name) with reason, and returns the decided request.
func (c *Client) Decide(ctx context.Context, id string, approve bool, as, reason string) (Request, error) {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	var r Request
	err := c.do(ctx, http.MethodPost, "/approvals/"+url.PathEscape(id)+"/"+verb, DecideBody{As: as, Reason: reason}, &r)
	return r, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	base := strings.TrimRight(c.BaseURL, "/")
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return fmt.Errorf("calling the admin API at %s: %w", c.BaseURL, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultClientTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling the admin API at %s: %w (is the proxy running with its admin listener there?)", c.BaseURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("reading the admin API's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &APIError{StatusCode: resp.StatusCode}
		var eb ErrorBody
		if json.Unmarshal(raw, &eb) == nil {
			e.Code, e.Message = eb.Code, eb.Error
		} else {
			e.Message = fmt.Sprintf("admin API answered %s: %s", resp.Status, strings.TrimSpace(string(raw)))
		}
		return e
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("reading the admin API's answer from %s: %w", c.BaseURL, err)
	}
	return nil
}
