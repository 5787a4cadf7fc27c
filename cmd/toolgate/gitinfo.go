package main

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	out, _ := gitOK(dir, args...)
	return out
}

// gitOK is git, telling a failure (false) from an empty output.
func gitOK(dir string, args ...string) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), gitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0") // never take the index lock
	out, err := cmd.Output()
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(out)), true
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
	if len(paths) == 0 {
		paths = []string{"policies"}
	}
	// Each path is asked about in its own folder; a path git cannot
	// answer for (outside this work tree, git failing) counts as changed:
	// the revision must not claim a commit the sources may not be.
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return rev + "-dirty"
		}
		out, ok := gitOK(gitDir([]string{abs}), "status", "--porcelain", "--", abs)
		if !ok || out != "" {
			return rev + "-dirty"
		}
		if top, _ := gitOK(gitDir([]string{abs}), "rev-parse", "HEAD"); top != rev {
			return rev + "-dirty" // another work tree's commit
		}
	}
	return rev
}

// gitSource is the URL of the policy repository (its origin remote), with
// any credentials in it left out; "" for a remote that is a local path
// (no use to anyone reading the artifact) or that does not parse.
func gitSource(dir string) string {
	remote := git(dir, "remote", "get-url", "origin")
	if strings.Contains(remote, "://") {
		u, err := url.Parse(remote)
		if err != nil || u.Scheme == "file" {
			return ""
		}
		u.User = nil
		return u.String()
	}
	if scpLike.MatchString(remote) { // git@host:org/repo.git: a user, no secret
		return remote
	}
	return ""
}

// scpLike matches git's scp-like remote syntax, [user@]host:path.
var scpLike = regexp.MustCompile(`^([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:[^/\\]`)

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
	seen := map[string]bool{}
	for i, s := range sources {
		out[i] = s
		abs, err := filepath.Abs(filepath.FromSlash(s.Path))
		if err != nil {
			continue
		}
		// The folder's links are resolved, not the file's: a file's own
		// name says which server it governs, a link's included.
		if real, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
			abs = filepath.Join(real, filepath.Base(abs))
		}
		if rel, err := filepath.Rel(top, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			out[i].Path = filepath.ToSlash(rel)
		}
		if seen[out[i].Path] {
			return sources // two names for one path: keep them as given
		}
		seen[out[i].Path] = true
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
