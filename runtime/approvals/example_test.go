package approvals_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/toolgate/toolgate/runtime/approvals"
	"github.com/toolgate/toolgate/runtime/audit"
)

// The proxy's side of require_approval, in async mode: a call is answered
// with the request to decide, and the same call retried after the approval
// runs once.
func ExampleOpenDisk() {
	dir, _ := os.MkdirTemp("", "approvals")
	defer os.RemoveAll(dir)
	store, err := approvals.OpenDisk(dir, approvals.WithEvents(func(e approvals.Event) {
		fmt.Printf("audit: %s (decided by %q)\n", e.Kind, e.Request.DecidedBy)
	}))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	ctx := context.Background()
	call := approvals.Binding{
		Identity:   approvals.Identity{Subject: "alice", Groups: []string{"eng"}},
		Server:     "github",
		Tool:       "delete_repo",
		ArgsSHA256: audit.ArgsSHA256([]byte(`{"repo":"acme/old"}`)),
		Bundle:     "sha256:" + strings.Repeat("0", 64),
	}

	// The decision says require_approval: use an approval if there is one,
	// else open (or join) the request.
	decide := func() {
		if _, ok, err := store.Consume(ctx, call); err != nil || ok {
			fmt.Println("call runs:", ok)
			return
		}
		r, created, err := store.Request(ctx, call, "github.yaml#delete_repo/ask", approvals.Approvers{}, 30*time.Minute)
		if err != nil {
			panic(err)
		}
		fmt.Println("approval required; new request:", created, "status:", r.Status)
	}
	decide()
	decide() // a retry joins the same request

	// A person approves (toolgate approvals approve ID, or the admin API).
	list, _ := store.List(ctx, approvals.Filter{Status: approvals.Pending})
	if _, err := store.Decide(ctx, list[0].ID, true, approvals.Identity{Subject: "bob"}, "planned cleanup"); err != nil {
		panic(err)
	}
	decide() // the retry runs, once
	decide() // and the next one asks again
	// Output:
	// audit: requested (decided by "")
	// approval required; new request: true status: pending
	// approval required; new request: false status: pending
	// audit: approved (decided by "bob")
	// audit: used (decided by "bob")
	// call runs: true
	// audit: requested (decided by "")
	// approval required; new request: true status: pending
}
