package approvals_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/toolgate/toolgate/runtime/approvals"
)

var webhookSecret = []byte("0123456789abcdef-webhook-secret")

// delivery is what a test webhook receiver saw.
type delivery struct {
	signatureOK bool
	timestamp   string
	id          string
	event       string
	payload     approvals.WebhookPayload
}

// receiver answers with codes in turn (200 once they run out) and checks
// each body's signature on its own, with the shared secret.
func receiver(t *testing.T, codes ...int) (*httptest.Server, func() []delivery) {
	var mu sync.Mutex // guards got, codes
	var got []delivery
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, webhookSecret)
		m.Write(body)
		want := "sha256=" + hex.EncodeToString(m.Sum(nil))
		d := delivery{
			signatureOK: hmac.Equal([]byte(r.Header.Get("X-Toolgate-Signature")), []byte(want)),
			timestamp:   r.Header.Get("X-Toolgate-Timestamp"),
			id:          r.Header.Get("X-Toolgate-Delivery"),
			event:       r.Header.Get("X-Toolgate-Event"),
		}
		if err := json.Unmarshal(body, &d.payload); err != nil {
			t.Errorf("webhook body is not JSON: %v", err)
		}
		mu.Lock()
		got = append(got, d)
		code := http.StatusOK
		if len(codes) > 0 {
			code, codes = codes[0], codes[1:]
		}
		mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []delivery {
		mu.Lock()
		defer mu.Unlock()
		return append([]delivery(nil), got...)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestApprovalWebhookSignedAndRetried(t *testing.T) {
	srv, got := receiver(t, http.StatusInternalServerError, http.StatusServiceUnavailable)
	w, err := approvals.NewWebhook(approvals.WebhookOptions{URL: srv.URL, Secret: webhookSecret, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Wired as a store's event hook: only the new request is sent.
	d, err := approvals.OpenDisk(t.TempDir(), approvals.WithEvents(w.Event), approvals.WithSweepEvery(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r, _, err := d.Request(context.Background(), call("alice", "delete_repo", `{}`), rule, approvals.Approvers{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Decide(context.Background(), r.ID, true, bob, ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the delivery", func() bool { n, _, _ := w.Stats(); return n == 1 })
	ds := got()
	if len(ds) != 3 {
		t.Fatalf("%d attempts, want 3 (two failures retried, then success)", len(ds))
	}
	for i, d := range ds {
		if !d.signatureOK {
			t.Errorf("attempt %d: signature does not verify", i)
		}
		if d.id == "" || d.id != ds[0].id || d.payload.Delivery != d.id {
			t.Errorf("attempt %d: delivery id %q (body %q), first %q: retries keep one id", i, d.id, d.payload.Delivery, ds[0].id)
		}
		if d.timestamp != strconv.FormatInt(d.payload.Timestamp, 10) {
			t.Errorf("attempt %d: timestamp header %q, body %d", i, d.timestamp, d.payload.Timestamp)
		}
		if d.event != "requested" || d.payload.Event != approvals.EventRequested || d.payload.Request.ID != r.ID || d.payload.Request.Status != approvals.Pending {
			t.Errorf("attempt %d: event %q payload %+v", i, d.event, d.payload)
		}
	}
	if _, failed, dropped := w.Stats(); failed != 0 || dropped != 0 {
		t.Fatalf("failed %d dropped %d", failed, dropped)
	}
}

func TestApprovalWebhookGivesUp(t *testing.T) {
	// A 4xx other than 408/425/429 is final; repeated 5xx stop after
	// Attempts.
	srv, got := receiver(t, http.StatusBadRequest)
	w, err := approvals.NewWebhook(approvals.WebhookOptions{URL: srv.URL, Secret: webhookSecret, Backoff: time.Millisecond, Attempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Event(approvals.Event{Kind: approvals.EventRequested, Request: approvals.Request{ID: "ap_ONE"}})
	waitFor(t, "the failure", func() bool { _, f, _ := w.Stats(); return f == 1 })
	if n := len(got()); n != 1 {
		t.Fatalf("%d attempts after a 400, want 1", n)
	}

	srv2, got2 := receiver(t, 500, 500, 500, 500)
	w2, err := approvals.NewWebhook(approvals.WebhookOptions{URL: srv2.URL, Secret: webhookSecret, Backoff: time.Millisecond, Attempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	w2.Event(approvals.Event{Kind: approvals.EventRequested, Request: approvals.Request{ID: "ap_TWO"}})
	waitFor(t, "the failure", func() bool { _, f, _ := w2.Stats(); return f == 1 })
	if n := len(got2()); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
}

// TestApprovalWebhookNeverBlocks: a receiver that hangs does not hold up
// Event; past the queue, events are dropped.
func TestApprovalWebhookNeverBlocks(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	w, err := approvals.NewWebhook(approvals.WebhookOptions{URL: srv.URL, Secret: webhookSecret, Queue: 2, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 20 {
		w.Event(approvals.Event{Kind: approvals.EventRequested, Request: approvals.Request{ID: "ap_" + strconv.Itoa(i)}})
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("20 events took %s", d)
	}
	if _, _, dropped := w.Stats(); dropped < 10 {
		t.Fatalf("dropped %d of 20 with 2 senders and a queue of 2", dropped)
	}
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a hanging receiver")
	}
}

func TestApprovalWebhookOptions(t *testing.T) {
	for _, o := range []approvals.WebhookOptions{
		{URL: "ftp://x", Secret: webhookSecret},
		{URL: "http://x", Secret: []byte("short")},
		{URL: "", Secret: webhookSecret},
		{URL: "http://x", Secret: webhookSecret, Attempts: -1},
	} {
		if _, err := approvals.NewWebhook(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	m := hmac.New(sha256.New, []byte("k"))
	m.Write([]byte("body"))
	if got, want := approvals.Sign([]byte("k"), []byte("body")), "sha256="+hex.EncodeToString(m.Sum(nil)); got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}
