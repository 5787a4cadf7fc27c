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
// "-dirty" unless git vouches for every source read: each must be a file
// of that commit (links resolved, inside the work tree) whose content is
// the committed one. Modified, untracked, ignored or outside files, and git
// failing, all make it -dirty: the revision then names the commit the
// bundle was built on, not one it equals.
func gitRevision(paths []string, sources []policy.Source) string {
	dir := gitDir(paths)
	rev := git(dir, "rev-parse", "HEAD")
	if rev == "" {
		return ""
	}
	top, ok := gitOK(dir, "rev-parse", "--show-toplevel")
	if !ok {
		return rev + "-dirty"
	}
	if real, err := filepath.EvalSymlinks(top); err == nil {
		top = real
	}
	rels := make([]string, 0, len(sources))
	for _, s := range sources {
		real, err := filepath.EvalSymlinks(filepath.FromSlash(s.Path))
		if err == nil {
			real, err = filepath.Abs(real)
		}
		if err != nil {
			return rev + "-dirty"
		}
		rel, err := filepath.Rel(top, real)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return rev + "-dirty" // outside the work tree
		}
		rels = append(rels, filepath.ToSlash(rel))
	}
	if len(rels) == 0 {
		return rev
	}
	tree, ok := gitOK(top, append([]string{"ls-tree", "-r", "-z", "HEAD", "--"}, rels...)...)
	if !ok {
		return rev + "-dirty"
	}
	committed := map[string]string{} // path → blob
	for _, entry := range strings.Split(tree, "\x00") {
		meta, path, found := strings.Cut(entry, "\t")
		if f := strings.Fields(meta); found && len(f) == 3 && f[1] == "blob" {
			committed[path] = f[2]
		}
	}
	hashes, ok := gitOK(top, append([]string{"hash-object", "--"}, rels...)...)
	lines := strings.Split(hashes, "\n")
	if !ok || len(lines) != len(rels) {
		return rev + "-dirty"
	}
	for i, rel := range rels {
		if committed[rel] != strings.TrimSpace(lines[i]) {
			return rev + "-dirty"
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
		u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
		return u.String()
	}
	if m := scpLike.FindStringSubmatch(remote); m != nil {
		// [user@]host:path: keep a bare user (git@), drop one with a
		// password (user:secret@).
		if strings.Contains(m[1], ":") {
			return m[2]
		}
		return remote
	}
	return ""
}

// scpLike matches git's scp-like remote syntax, [user@]host:path (a host
// of two characters or more: C:\path is a Windows path).
var scpLike = regexp.MustCompile(`^([^@/\\]+@)?([A-Za-z0-9._-]{2,}:[^\\].*)$`)

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
