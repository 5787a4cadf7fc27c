package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/toolgate/toolgate/bundles"
	"github.com/toolgate/toolgate/compiler/policy"
)

// What a build and a push learn from the git work tree the policies live in
// (architecture.md: the bundle's revision is the git commit; the artifact
// names its source). Each is empty when git, or a work tree, is not there.

// gitTimeout bounds each git command.
const gitTimeout = 5 * time.Second

// git runs git in dir and returns its trimmed output, "" on any failure.
func git(dir string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), gitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0") // never take the index lock
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// gitDir is the folder to ask git about for the policy paths (default
// policies/).
func gitDir(paths []string) string {
	p := "policies"
	if len(paths) > 0 {
		p = paths[0]
	}
	if info, err := os.Stat(p); err == nil && !info.IsDir() {
		p = filepath.Dir(p)
	}
	return p
}

// gitRevision is the commit checked out where the policies are, with
// "-dirty" when a policy path holds changes not committed: the revision
// then names the commit the bundle was built on, not one it equals.
func gitRevision(paths []string) string {
	dir := gitDir(paths)
	rev := git(dir, "rev-parse", "HEAD")
	if rev == "" {
		return ""
	}
	spec := []string{"status", "--porcelain", "--"}
	if len(paths) == 0 {
		paths = []string{"policies"}
	}
	for _, p := range paths {
		if abs, err := filepath.Abs(p); err == nil {
			spec = append(spec, abs)
		}
	}
	if git(dir, spec...) != "" {
		rev += "-dirty"
	}
	return rev
}

// gitSource is the URL of the policy repository (its origin remote), with
// any credentials in it left out.
func gitSource(dir string) string {
	u := git(dir, "remote", "get-url", "origin")
	if at := strings.LastIndex(u, "@"); at >= 0 && strings.Contains(u, "://") {
		u = u[:strings.Index(u, "://")+3] + u[at+1:]
	}
	return u
}

// repoRelative names each source by its path from the top of the git work
// tree that holds it, so that a built bundle (its source entries, rule ids
// and digest) is the same whichever way the folder was spelled: policies,
// ./policies, /abs/checkout/policies, or . inside it. Sources outside a
// work tree keep their names. Only toolgate build uses it: the commands
// that compile in-process (test, proxy --policy) name files as given.
func repoRelative(sources []policy.Source, paths []string) []policy.Source {
	top := git(gitDir(paths), "rev-parse", "--show-toplevel")
	if top == "" {
		return sources
	}
	if real, err := filepath.EvalSymlinks(top); err == nil {
		top = real
	}
	out := make([]policy.Source, len(sources))
	for i, s := range sources {
		out[i] = s
		abs, err := filepath.Abs(filepath.FromSlash(s.Path))
		if err != nil {
			continue
		}
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			abs = real
		}
		if rel, err := filepath.Rel(top, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			out[i].Path = filepath.ToSlash(rel)
		}
	}
	return out
}

// commitTime is when the commit a bundle was built from was made, as the
// git work tree here knows it: the artifact's created annotation, the
// same for every push of that commit (the epoch when unknown).
func commitTime(bundle []byte) (time.Time, bool) {
	b, err := bundles.ReadBytes(bundle, bundles.Limits{})
	if err != nil {
		return time.Time{}, false
	}
	rev := strings.TrimSuffix(b.Manifest.Revision, "-dirty")
	if rev == "" || strings.HasPrefix(rev, "-") {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, git(".", "show", "-s", "--format=%cI", rev+"^{commit}", "--"))
	return t, err == nil
}
