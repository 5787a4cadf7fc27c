// Package statedir holds what the files toolgate keeps share: for the
// embedded on-disk stores (counters, approvals), a lock file naming the
// owning process and syncing the folder after a rename; for them and the
// pin and grants files, replacing a file whole or not at all.
package statedir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Lock creates dir/name holding this process's id. A lock whose process is
// gone (or that a crash left torn) is taken over; one held by a live
// process is an error wrapping locked.
func Lock(dir, name string, locked error) error {
	path := filepath.Join(dir, name)
	for attempt := 0; attempt < 2; attempt++ {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, err = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(path)
			}
			return err
		}
		if !errors.Is(err, os.ErrExist) {
			return err
		}
		raw, rerr := os.ReadFile(path)
		if rerr != nil {
			continue // removed meanwhile: try again
		}
		pid, perr := strconv.Atoi(strings.TrimSpace(string(raw)))
		if perr == nil && pid > 0 && alive(pid) {
			return fmt.Errorf("%w: %s (pid %d); stop that process, or give this one another folder", locked, path, pid)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return fmt.Errorf("%w: %s", locked, path)
}

// Unlock removes dir/name; a lock already gone is not an error.
func Unlock(dir, name string) error {
	err := os.Remove(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Sync fsyncs the folder itself, so that a rename in it is durable.
func Sync(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}

// alive reports whether process pid exists; only a definite "no such
// process" counts as gone.
func alive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		return false // Windows: no such process
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || !(errors.Is(err, os.ErrProcessDone) || errors.Is(err, syscall.ESRCH))
}
