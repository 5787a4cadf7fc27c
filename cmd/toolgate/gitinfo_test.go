package main

import (
	"os/exec"
	"testing"
)

// TestGitSource: the origin remote as the artifact's source, without
// credentials; none for a local path.
func TestGitSource(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("git", "-C", dir, "init", "-q").CombinedOutput(); err != nil {
		t.Fatalf("git init: %v\n%s", err, out)
	}
	for remote, want := range map[string]string{
		"https://user:secret@git.example.com/acme/policies.git": "https://git.example.com/acme/policies.git",
		"https://git.example.com/a/@b/policies.git":             "https://git.example.com/a/@b/policies.git",
		"ssh://git@git.example.com:2222/acme/policies.git":      "ssh://git.example.com:2222/acme/policies.git",
		"git@github.com:acme/policies.git":                      "git@github.com:acme/policies.git",
		"git@git.example.com:/srv/git/policies.git":             "git@git.example.com:/srv/git/policies.git",
		"deploy:secret@git.example.com:acme/policies.git":       "git.example.com:acme/policies.git",
		"https://git.example.com/p.git?access_token=abc#x":      "https://git.example.com/p.git",
		`C:\src\policies`:                 "",
		"/home/alice/src/policies":        "",
		"file:///home/alice/src/policies": "",
		"../policies":                     "",
	} {
		exec.Command("git", "-C", dir, "remote", "remove", "origin").Run()
		if out, err := exec.Command("git", "-C", dir, "remote", "add", "origin", remote).CombinedOutput(); err != nil {
			t.Fatalf("git remote add %s: %v\n%s", remote, err, out)
		}
		if got := gitSource(dir); got != want {
			t.Errorf("origin %s: source %q, want %q", remote, got, want)
		}
	}
	if got := gitSource(t.TempDir()); got != "" {
		t.Errorf("no work tree: source %q, want none", got)
	}
}
