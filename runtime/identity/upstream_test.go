package identity

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUpstreamCredentials(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "jira.key")
	os.WriteFile(keyFile, []byte("  s3cr3t-from-file\n"), 0o600)
	t.Setenv("TEST_UPSTREAM_TOKEN", "s3cr3t-from-env")
	c, err := ParseUpstreamHeaders([]string{"authorization=Bearer env:TEST_UPSTREAM_TOKEN", "X-Api-Key=file:" + keyFile})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Authorization": {"Bearer client-token"}, "Accept": {"application/json"}}
	StripAuthorization(h)
	c.Apply(h)
	if h.Get("Authorization") != "Bearer s3cr3t-from-env" || h.Get("X-Api-Key") != "s3cr3t-from-file" || h.Get("Accept") == "" {
		t.Errorf("headers %v", h)
	}
	if got := c.Names(); len(got) != 2 || got[0] != "Authorization" || got[1] != "X-Api-Key" {
		t.Errorf("Names = %v", got)
	}

	// Secrets never show in logs or formatting.
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("proxy", "upstream", c)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("proxy", "upstream", c)
	shown := logs.String() + fmt.Sprint(c) + fmt.Sprintf("%v %+v %#v %s", c, c, c, c)
	if strings.Contains(shown, "s3cr3t") {
		t.Errorf("a secret shows:\n%s", shown)
	}
	if !strings.Contains(shown, "env:TEST_UPSTREAM_TOKEN") || !strings.Contains(shown, "X-Api-Key") {
		t.Errorf("sources missing:\n%s", shown)
	}

	// Rotation: Reload reads the file again; a failed reload changes nothing.
	os.WriteFile(keyFile, []byte("rotated\n"), 0o600)
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	h = http.Header{}
	c.Apply(h)
	if h.Get("X-Api-Key") != "rotated" {
		t.Errorf("after reload: %v", h)
	}
	os.Remove(keyFile)
	if err := c.Reload(); err == nil {
		t.Error("reload with the file gone: no error")
	}
	h = http.Header{}
	c.Apply(h)
	if h.Get("X-Api-Key") != "rotated" {
		t.Errorf("a failed reload changed the headers: %v", h)
	}
	var none *UpstreamCredentials
	none.Apply(h) // a nil set adds nothing
}

func TestUpstreamCredentialsErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	t.Setenv("TEST_MULTILINE", "a\r\nInjected: yes")
	t.Setenv("TEST_EMPTY", "")
	for _, tc := range []struct {
		spec, want string
	}{
		{"Authorization=ghp_literalsecret", "must come from env:VARIABLE or file:PATH"},
		{"Authorization=Bearer ghp_literalsecret", "must come from env:VARIABLE or file:PATH"},
		{"ghp_literalsecret", "want NAME=env:VARIABLE"},
		{"Bad Name=env:X", "want NAME=env:VARIABLE"},
		{"Host=env:HOME", "does not set Host"},
		{"mcp-session-id=env:HOME", "does not set Mcp-Session-Id"},
		{"X-A=env:", "names nothing"},
		{"X-A=env:TEST_UNSET_VARIABLE_42", "unset or empty"},
		{"X-A=env:TEST_EMPTY", "unset or empty"},
		{"X-A=env:TEST_MULTILINE", "control characters"},
		{"X-A=file:" + empty, "is empty"},
		{"X-A=file:" + filepath.Join(dir, "missing"), "no such file"},
	} {
		_, err := ParseUpstreamHeaders([]string{tc.spec})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.spec, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "literalsecret") {
			t.Errorf("%q: the error shows the value: %v", tc.spec, err)
		}
	}
	if _, err := ParseUpstreamHeaders([]string{"X-A=env:HOME", "x-a=env:HOME"}); err == nil || !strings.Contains(err.Error(), "set twice") {
		t.Errorf("twice: err = %v", err)
	}
}

func TestLocalIdentity(t *testing.T) {
	t.Setenv(EnvIdentity, " alice ")
	t.Setenv(EnvGroups, "eng, oncall,,")
	if id := FromEnv(); id.Subject != "alice" || strings.Join(id.Groups, "|") != "eng|oncall" {
		t.Errorf("FromEnv = %+v", id)
	}
	if id := Local("bob", ""); id.Subject != "bob" || strings.Join(id.Groups, "|") != "eng|oncall" {
		t.Errorf("Local(bob) = %+v: the flag wins for the subject, the environment gives groups", id)
	}
	if id := Local("", "ops"); id.Subject != "alice" || strings.Join(id.Groups, "|") != "ops" {
		t.Errorf("Local(, ops) = %+v", id)
	}
	t.Setenv(EnvIdentity, "")
	t.Setenv(EnvGroups, "")
	if id := Local("", ""); id.Subject != "" || id.Groups != nil {
		t.Errorf("nothing set: %+v", id)
	}
}
