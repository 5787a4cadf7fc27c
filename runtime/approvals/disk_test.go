package approvals_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/toolgate/toolgate/runtime/approvals"
)

const journal = "approvals.journal"

func openDisk(t *testing.T, dir string, c *clock, opts ...approvals.Option) *approvals.Disk {
	t.Helper()
	d, err := approvals.OpenDisk(dir, append([]approvals.Option{approvals.WithClock(c.Now), approvals.WithSweepEvery(-1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestApprovalDiskSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	dir, c := t.TempDir(), newClock()
	d := openDisk(t, dir, c)
	pending := mustRequest(t, d, call("alice", "delete_repo", `{"n":1}`), approvals.Approvers{Groups: []string{"security"}}, time.Hour)
	used := mustRequest(t, d, call("alice", "delete_repo", `{"n":2}`), approvals.Approvers{}, time.Hour)
	if _, err := d.Decide(ctx, used.ID, true, bob, "ok"); err != nil {
		t.Fatal(err)
	}
	if _, ok := consume(t, d, call("alice", "delete_repo", `{"n":2}`)); !ok {
		t.Fatal("approved call refused")
	}
	approved := mustRequest(t, d, call("alice", "delete_repo", `{"n":3}`), approvals.Approvers{}, time.Hour)
	if _, err := d.Decide(ctx, approved.ID, true, bob, ""); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "approvals.lock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock left after Close: %v", err)
	}

	d = openDisk(t, dir, c)
	got, err := d.Get(ctx, pending.ID)
	if err != nil || got.Status != approvals.Pending || len(got.Approvers.Groups) != 1 || !got.ExpiresAt.Equal(pending.ExpiresAt) {
		t.Fatalf("pending request after reopen = %+v, %v", got, err)
	}
	// A retry joins it after the restart.
	if j, created, _ := d.Request(ctx, call("alice", "delete_repo", `{"n":1}`), rule, approvals.Approvers{}, time.Hour); created || j.ID != pending.ID {
		t.Fatalf("retry after reopen opened %s; want to join %s", j.ID, pending.ID)
	}
	// A used approval stays used: the call cannot run a second time.
	if _, ok := consume(t, d, call("alice", "delete_repo", `{"n":2}`)); ok {
		t.Fatal("a used approval was used again after a restart")
	}
	// An approval given before the restart can be used after it, once.
	if _, ok := consume(t, d, call("alice", "delete_repo", `{"n":3}`)); !ok {
		t.Fatal("an approval given before the restart was lost")
	}
	dave := approvals.Identity{Subject: "dave", Groups: []string{"security"}}
	if _, err := d.Decide(ctx, pending.ID, true, dave, ""); err != nil {
		t.Fatal(err)
	}
}

func TestApprovalDiskTornJournal(t *testing.T) {
	ctx := context.Background()
	dir, c := t.TempDir(), newClock()
	d := openDisk(t, dir, c)
	r := mustRequest(t, d, call("alice", "delete_repo", `{}`), approvals.Approvers{}, time.Hour)
	d.Close()
	f, err := os.OpenFile(filepath.Join(dir, journal), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A line that does not parse, then a torn last line (a crash mid-write)
	// that would have approved the request.
	fmt.Fprintf(f, "not json\n{\"id\":%q,\"status\":\"approved\",\"tool\":\"delete_repo\"", r.ID)
	f.Close()
	d = openDisk(t, dir, c)
	got, err := d.Get(ctx, r.ID)
	if err != nil || got.Status != approvals.Pending {
		t.Fatalf("after a torn line: %s, %v; want pending", got.Status, err)
	}
	// The journal was rewritten without the junk: the next line is whole.
	if _, err := d.Decide(ctx, r.ID, false, bob, ""); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d = openDisk(t, dir, c)
	if got, _ := d.Get(ctx, r.ID); got.Status != approvals.Denied {
		t.Fatalf("after reopen: %s", got.Status)
	}
}

func TestApprovalDiskLock(t *testing.T) {
	dir, c := t.TempDir(), newClock()
	openDisk(t, dir, c)
	if _, err := approvals.OpenDisk(dir); !errors.Is(err, approvals.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	// A lock left by a process that is gone is taken over.
	dir2 := t.TempDir()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir2, "approvals.lock"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openDisk(t, dir2, c)
}

func TestApprovalDiskCompactsAndForgets(t *testing.T) {
	ctx := context.Background()
	dir, c := t.TempDir(), newClock()
	d := openDisk(t, dir, c, approvals.WithCompactAt(4<<10), approvals.WithRetention(time.Hour))
	var last approvals.Request
	for i := range 60 {
		b := call("alice", "delete_repo", fmt.Sprintf(`{"n":%d}`, i))
		last = mustRequest(t, d, b, approvals.Approvers{}, time.Minute)
		if _, err := d.Decide(ctx, last.ID, true, bob, ""); err != nil {
			t.Fatal(err)
		}
		if _, ok := consume(t, d, b); !ok {
			t.Fatal("refused")
		}
		c.Advance(2 * time.Minute)
	}
	keep := mustRequest(t, d, call("alice", "delete_repo", `{"keep":true}`), approvals.Approvers{}, time.Hour)
	fi, err := os.Stat(filepath.Join(dir, journal))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 48<<10 {
		t.Fatalf("journal is %d bytes after 180 transitions of mostly forgotten requests; compaction did not run", fi.Size())
	}
	all, _ := d.List(ctx, approvals.Filter{})
	if len(all) > 35 {
		t.Fatalf("%d requests kept; those an hour past their deadline should be forgotten", len(all))
	}
	d.Close()
	d = openDisk(t, dir, c, approvals.WithRetention(time.Hour))
	if got, err := d.Get(ctx, keep.ID); err != nil || got.Status != approvals.Pending {
		t.Fatalf("after compaction and reopen: %+v, %v", got, err)
	}
	if got, err := d.Get(ctx, last.ID); err != nil || got.Status != approvals.Used {
		t.Fatalf("last used request after reopen: %+v, %v", got, err)
	}
	c.Advance(3 * time.Hour)
	d.Sweep(ctx)
	if _, err := d.Get(ctx, keep.ID); !errors.Is(err, approvals.ErrNotFound) {
		t.Fatalf("request past its retention: %v, want ErrNotFound", err)
	}
}

// TestApprovalDiskClosed: a closed store answers ErrClosed and wakes its
// waiters.
func TestApprovalDiskClosed(t *testing.T) {
	ctx := context.Background()
	d := openDisk(t, t.TempDir(), newClock())
	r := mustRequest(t, d, call("alice", "delete_repo", `{}`), approvals.Approvers{}, time.Hour)
	errc := make(chan error, 1)
	go func() { _, err := d.Wait(ctx, r.ID); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	d.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, approvals.ErrClosed) {
			t.Fatalf("Wait after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake Wait")
	}
	if _, _, err := d.Consume(ctx, call("alice", "delete_repo", `{}`)); !errors.Is(err, approvals.ErrClosed) {
		t.Fatalf("Consume after Close: %v", err)
	}
}
