package approvals

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Headers of a webhook delivery.
const (
	// SignatureHeader holds "sha256=" and the hex HMAC-SHA256 of the body
	// under the shared secret.
	SignatureHeader = "X-Toolgate-Signature"
	// TimestampHeader holds the Unix time (seconds) the attempt was sent,
	// also in the signed body as "timestamp": reject old ones to stop
	// replays.
	TimestampHeader = "X-Toolgate-Timestamp"
	// EventHeader holds the event kind; DeliveryHeader an id that stays the
	// same across the retries of one delivery (to drop duplicates).
	EventHeader    = "X-Toolgate-Event"
	DeliveryHeader = "X-Toolgate-Delivery"
)

// Defaults for [WebhookOptions].
const (
	DefaultWebhookAttempts   = 5
	DefaultWebhookBackoff    = time.Second
	DefaultWebhookMaxBackoff = 30 * time.Second
	DefaultWebhookTimeout    = 5 * time.Second
	DefaultWebhookQueue      = 256
	webhookWorkers           = 2
)

// WebhookOptions configures [NewWebhook]. URL and Secret are required.
type WebhookOptions struct {
	// URL receives a POST for each event, http or https.
	URL string
	// Secret keys the HMAC-SHA256 signature of each body (at least 16
	// bytes). Keep it in a file, never in the policy.
	Secret []byte
	// Kinds are the events sent; empty sends EventRequested only.
	Kinds []EventKind
	// Attempts is how many times one delivery is tried in all (default
	// DefaultWebhookAttempts). A network error, a timeout, 408, 425, 429
	// and any 5xx answer are retried; other answers are final.
	Attempts int
	// Backoff is the wait before the first retry, doubled before each next
	// one up to MaxBackoff (defaults DefaultWebhookBackoff,
	// DefaultWebhookMaxBackoff).
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Timeout bounds each attempt, connecting included (default
	// DefaultWebhookTimeout).
	Timeout time.Duration
	// Queue is how many deliveries may wait to be sent (default
	// DefaultWebhookQueue); past it new ones are dropped and logged.
	Queue int
	// Client sends the requests; nil means a new http.Client.
	Client *http.Client
	// Logger receives failed and dropped deliveries (default
	// slog.Default()).
	Logger *slog.Logger
}

// WebhookPayload is the signed JSON body of a delivery.
type WebhookPayload struct {
	Event     EventKind `json:"event"`
	Delivery  string    `json:"delivery"`
	Timestamp int64     `json:"timestamp"`
	Request   Request   `json:"request"`
}

// Webhook posts approval events to a URL, signed, in the background: Event
// only queues, so it never blocks the call that caused the event. Pass
// w.Event to [WithEvents] (alone, or from a function that also audits). It
// is safe for concurrent use; whoever makes it must Close it.
type Webhook struct {
	o     WebhookOptions
	queue chan WebhookPayload
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu     sync.Mutex // guards closed (against sends on a closed queue)
	closed bool

	delivered, failed, dropped atomic.Uint64
}

// NewWebhook checks o (every problem is reported) and starts the senders.
func NewWebhook(o WebhookOptions) (*Webhook, error) {
	var errs []error
	u, err := url.Parse(o.URL)
	if o.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("approval webhook URL %q is not an http(s) URL", o.URL))
	}
	if len(o.Secret) < 16 {
		errs = append(errs, fmt.Errorf("approval webhook secret is %d bytes; use at least 16 (e.g. openssl rand -hex 32 into a file)", len(o.Secret)))
	}
	if o.Attempts < 0 || o.Backoff < 0 || o.MaxBackoff < 0 || o.Timeout < 0 || o.Queue < 0 {
		errs = append(errs, errors.New("approval webhook: attempts, backoffs, timeout and queue must not be negative (0 takes the default)"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if o.Attempts == 0 {
		o.Attempts = DefaultWebhookAttempts
	}
	if o.Backoff == 0 {
		o.Backoff = DefaultWebhookBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultWebhookMaxBackoff
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultWebhookTimeout
	}
	if o.Queue == 0 {
		o.Queue = DefaultWebhookQueue
	}
	if len(o.Kinds) == 0 {
		o.Kinds = []EventKind{EventRequested}
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Secret = bytes.Clone(o.Secret)
	w := &Webhook{o: o, queue: make(chan WebhookPayload, o.Queue)}
	w.ctx, w.stop = context.WithCancel(context.Background())
	for range webhookWorkers {
		w.wg.Go(w.run)
	}
	return w, nil
}

// Event queues e for delivery when its kind is one the webhook sends. It
// never blocks: with the queue full, e is dropped and logged.
func (w *Webhook) Event(e Event) {
	if !slices.Contains(w.o.Kinds, e.Kind) {
		return
	}
	p := WebhookPayload{Event: e.Kind, Delivery: rand.Text(), Request: e.Request}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	select {
	case w.queue <- p:
	default:
		w.dropped.Add(1)
		w.o.Logger.Error("approval webhook queue full; notification dropped (the request is still in the queue: toolgate approvals list)",
			"event", e.Kind, "id", e.Request.ID, "queue", w.o.Queue)
	}
}

// Stats returns how many deliveries succeeded, failed after every attempt,
// and were dropped (queue full, or still queued at Close).
func (w *Webhook) Stats() (delivered, failed, dropped uint64) {
	return w.delivered.Load(), w.failed.Load(), w.dropped.Load()
}

// Close stops the senders: a delivery in flight is abandoned, and the
// deliveries still queued are dropped (counted and logged). Close is safe to
// call more than once.
func (w *Webhook) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	close(w.queue)
	w.mu.Unlock()
	w.stop()
	w.wg.Wait()
	return nil
}

func (w *Webhook) run() {
	for p := range w.queue {
		if w.ctx.Err() != nil {
			w.dropped.Add(1)
			continue
		}
		w.deliver(p)
	}
}

// deliver tries p up to Attempts times with exponential backoff.
func (w *Webhook) deliver(p WebhookPayload) {
	wait := w.o.Backoff
	var last error
	for attempt := 1; attempt <= w.o.Attempts; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-w.ctx.Done():
				t.Stop()
				w.dropped.Add(1)
				return
			}
			wait = min(2*wait, w.o.MaxBackoff)
		}
		retry, err := w.send(p)
		if err == nil {
			w.delivered.Add(1)
			return
		}
		last = err
		if !retry || w.ctx.Err() != nil {
			break
		}
	}
	w.failed.Add(1)
	w.o.Logger.Error("approval webhook delivery failed; the request is still in the queue (toolgate approvals list)",
		"event", p.Event, "id", p.Request.ID, "delivery", p.Delivery, "err", last)
}

// send makes one attempt; retry says whether another may succeed.
func (w *Webhook) send(p WebhookPayload) (retry bool, err error) {
	p.Timestamp = time.Now().Unix()
	body, err := json.Marshal(p)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.o.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "toolgate-approvals")
	req.Header.Set(SignatureHeader, Sign(w.o.Secret, body))
	req.Header.Set(TimestampHeader, strconv.FormatInt(p.Timestamp, 10))
	req.Header.Set(EventHeader, string(p.Event))
	req.Header.Set(DeliveryHeader, p.Delivery)
	resp, err := w.o.Client.Do(req)
	if err != nil {
		return true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c == http.StatusRequestTimeout, c == http.StatusTooEarly, c == http.StatusTooManyRequests, c >= 500:
		return true, fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return false, fmt.Errorf("webhook answered %s (not retried)", resp.Status)
	}
}

// Sign returns the signature header value for body: "sha256=" and the hex
// HMAC-SHA256 of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
