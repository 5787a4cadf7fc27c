package counters

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/toolgate/toolgate/bundles"
)

func openDisk(t testing.TB, dir string, opts DiskOptions) *Disk {
	t.Helper()
	d, err := OpenDisk(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func diskValue(d *Disk, key, window string, now time.Time) int64 {
	return d.State(nil, []bundles.Reservation{{Key: key, Window: window}}, now)[0].Value
}

func journalSize(t *testing.T, dir string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func fixed(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestDiskSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	d := openDisk(t, dir, DiskOptions{Now: fixed(t0)})
	rs := []bundles.Reservation{res("a", "day", 3, limit(12)), res("b", "hour", 1, nil)}
	for i := 0; i < 3; i++ {
		if _, refusal := d.Reserve(rs, t0); refusal != nil {
			t.Fatalf("call %d refused", i)
		}
	}
	release, _ := d.Reserve(rs, t0)
	release() // a failed call spends no quota
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, lockName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock left after Close: %v", err)
	}

	d = openDisk(t, dir, DiskOptions{Now: fixed(t0)})
	if got := diskValue(d, "a", "day", t0); got != 9 {
		t.Errorf("a = %d after reopen, want 9", got)
	}
	if got := diskValue(d, "b", "hour", t0); got != 3 {
		t.Errorf("b = %d after reopen, want 3", got)
	}
	// The limit still holds across the restart: 9 + 3 fits, 12 + 3 does not.
	if _, refusal := d.Reserve(rs[:1], t0); refusal != nil {
		t.Error("a refused under its limit after reopen")
	}
	if _, refusal := d.Reserve(rs[:1], t0); refusal == nil {
		t.Error("a reserved past its limit after reopen")
	}
}

func TestDiskWindowExpiryAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	d := openDisk(t, dir, DiskOptions{Now: fixed(t0)})
	d.Reserve([]bundles.Reservation{res("m", "minute", 1, nil), res("h", "hour", 2, nil), res("d", "day", 4, nil)}, t0)
	d.Close()

	later := t0.Add(time.Hour) // 04:04:05: a new minute and hour, the same day
	d = openDisk(t, dir, DiskOptions{Now: fixed(later)})
	for _, c := range []struct {
		key, window string
		want        int64
	}{{"m", "minute", 0}, {"h", "hour", 0}, {"d", "day", 4}} {
		if got := diskValue(d, c.key, c.window, later); got != c.want {
			t.Errorf("%s (%s) = %d after an hour, want %d", c.key, c.window, got, c.want)
		}
	}
	d.Close()
	// Opening compacts: only the day counter is left in the journal.
	raw, _ := os.ReadFile(filepath.Join(dir, journalName))
	if want := "day 1767312000 4 \"d\"\n"; string(raw) != want {
		t.Errorf("journal = %q, want %q", raw, want)
	}
}

func TestDiskTornLastLine(t *testing.T) {
	dir := t.TempDir()
	start := strconv.FormatInt(t0.Truncate(time.Hour).Unix(), 10)
	journal := "hour " + start + " 5 \"a\"\n" +
		"garbage\n" +
		"hour " + start + " 7 \"b\"\n" +
		"hour " + start + " 9 \"a" // torn: no closing quote, no newline
	if err := os.WriteFile(filepath.Join(dir, journalName), []byte(journal), 0o600); err != nil {
		t.Fatal(err)
	}
	d := openDisk(t, dir, DiskOptions{Now: fixed(t0)})
	if got := diskValue(d, "a", "hour", t0); got != 5 {
		t.Errorf("a = %d, want 5 (the torn line ignored)", got)
	}
	if got := diskValue(d, "b", "hour", t0); got != 7 {
		t.Errorf("b = %d, want 7", got)
	}
	// A torn line that parses (the digits cut short) is ignored too.
	d.Close()
	os.WriteFile(filepath.Join(dir, journalName), []byte("hour "+start+" 5 \"a\"\nhour "+start+" 1"), 0o600)
	d = openDisk(t, dir, DiskOptions{Now: fixed(t0)})
	if got := diskValue(d, "a", "hour", t0); got != 5 {
		t.Errorf("a = %d, want 5", got)
	}
}

func TestDiskRollbackWritesNothing(t *testing.T) {
	dir := t.TempDir()
	d := openDisk(t, dir, DiskOptions{Now: fixed(t0), FlushEvery: time.Hour})
	rs := []bundles.Reservation{res("a", "day", 1, nil)}
	d.Reserve(rs, t0)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	size := journalSize(t, dir)
	release, _ := d.Reserve(rs, t0)
	release()
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := journalSize(t, dir); got != size {
		t.Errorf("journal grew from %d to %d bytes for a rolled-back reservation", size, got)
	}
}

func TestDiskCompaction(t *testing.T) {
	dir := t.TempDir()
	rs := []bundles.Reservation{res("a", "day", 1, nil), res("b", "hour", 2, nil)}

	// Without compaction the journal holds every change...
	d := openDisk(t, dir, DiskOptions{Now: fixed(t0), FlushEvery: time.Hour})
	for i := 0; i < 100; i++ {
		d.Reserve(rs, t0)
		d.Flush()
	}
	grown := journalSize(t, dir)
	d.Close()

	// ...with a small limit it is rewritten as it grows past it.
	const limit = 256
	d = openDisk(t, dir, DiskOptions{Now: fixed(t0), FlushEvery: time.Hour, CompactAt: limit})
	for i := 0; i < 100; i++ {
		d.Reserve(rs, t0)
		d.Flush()
		if size := journalSize(t, dir); size > limit {
			t.Fatalf("journal is %d bytes, past the %d-byte limit", size, limit)
		}
	}
	if size := journalSize(t, dir); size >= grown {
		t.Errorf("compacted journal %d bytes, want under the uncompacted %d", size, grown)
	}
	d.Close()
	d = openDisk(t, dir, DiskOptions{Now: fixed(t0)})
	if a, b := diskValue(d, "a", "day", t0), diskValue(d, "b", "hour", t0); a != 200 || b != 400 {
		t.Errorf("after compaction a = %d, b = %d; want 200 and 400", a, b)
	}
}

func TestDiskSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	d := openDisk(t, dir, DiskOptions{})
	if _, err := OpenDisk(dir, DiskOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: got %v, want ErrLocked", err)
	}
	d.Close()
	d2 := openDisk(t, dir, DiskOptions{})
	d2.Close()
}

func TestDiskStaleLockTakenOver(t *testing.T) {
	dir := t.TempDir()
	// The PID of a process that has exited.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Skip("cannot run a child process:", err)
	}
	pid := cmd.Process.Pid
	os.WriteFile(filepath.Join(dir, lockName), []byte(strconv.Itoa(pid)+"\n"), 0o600)
	d := openDisk(t, dir, DiskOptions{})
	raw, _ := os.ReadFile(filepath.Join(dir, lockName))
	if got := string(raw); got != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("lock holds %q, want this process's PID", got)
	}
	d.Close()
}

func TestDiskConcurrentReserve(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	d := openDisk(t, dir, DiskOptions{FlushEvery: time.Millisecond})
	rs := []bundles.Reservation{res("a", "day", 1, limit(300)), res("b", "day", 1, nil)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				release, refusal := d.Reserve(rs, now)
				if refusal != nil {
					continue
				}
				if i%5 == 0 {
					time.Sleep(time.Millisecond) // the call runs across a flush
					release()
					continue
				}
				mu.Lock()
				granted++
				mu.Unlock()
				d.State(nil, rs, now)
			}
		}()
	}
	wg.Wait()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openDisk(t, dir, DiskOptions{})
	if a, b := diskValue(d, "a", "day", now), diskValue(d, "b", "day", now); a != int64(granted) || b != int64(granted) || a > 300 {
		t.Fatalf("after reopen a = %d, b = %d, committed %d; want all equal and at most 300", a, b, granted)
	}
}

func BenchmarkReserve(b *testing.B) {
	now := time.Now()
	rs := []bundles.Reservation{res("t._rate_minute", "minute", 1, nil), res("t.spend", "day", 3, nil)}
	disk, err := OpenDisk(b.TempDir(), DiskOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer disk.Close()
	for _, bc := range []struct {
		name string
		s    interface {
			Reserve([]bundles.Reservation, time.Time) (func(), *bundles.Reservation)
		}
	}{{"store=memory", New()}, {"store=disk", disk}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, refusal := bc.s.Reserve(rs, now); refusal != nil {
					b.Fatal("refused")
				}
			}
		})
	}
}

// BenchmarkReserveParallel: calls on different counters (one per
// goroutine, as per-identity limits are) should not wait for each other.
func BenchmarkReserveParallel(b *testing.B) {
	now := time.Now()
	s := New()
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := fmt.Sprintf("user%d._rate_minute", next.Add(1))
		rs := []bundles.Reservation{res(key, "minute", 1, nil), res(key+".spend", "day", 3, nil)}
		for pb.Next() {
			if _, refusal := s.Reserve(rs, now); refusal != nil {
				b.Fatal("refused")
			}
			s.State(nil, rs, now)
		}
	})
}
