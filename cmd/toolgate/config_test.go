package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// parseProxy parses args with the proxy command's flags, then applies the
// config text (written to a temporary folder) as --config does. It returns
// the flags, the config's command, the config's folder and applyConfig's
// error.
func parseProxy(t *testing.T, config string, args ...string) (*pflag.FlagSet, []string, string, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "toolgate.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := proxyCmd().Flags()
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	command, err := applyConfig(fs, path)
	return fs, command, dir, err
}

func TestConfigSetsFlags(t *testing.T) {
	fs, command, dir, err := parseProxy(t, `
server: github
policy: policies
audit-log: /var/log/toolgate/audit.log
groups: [eng, oncall]
key: [keys/a.pub, /etc/toolgate/b.pub]
deny-as-error: true
upstream-timeout: 45s
state: memory
command: [npx, -y, "@modelcontextprotocol/server-github"]
`, "--server", "from-flag")
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) string { return fs.Lookup(name).Value.String() }
	keys, _ := fs.GetStringSlice("key")
	if get("server") != "from-flag" {
		t.Errorf("server = %q: the command line must win over the file", get("server"))
	}
	if want := filepath.Join(dir, "policies"); get("policy") != want {
		t.Errorf("policy = %q, want %q (relative to the config file)", get("policy"), want)
	}
	if get("audit-log") != "/var/log/toolgate/audit.log" {
		t.Errorf("audit-log = %q", get("audit-log"))
	}
	if want := []string{filepath.Join(dir, "keys/a.pub"), "/etc/toolgate/b.pub"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("key = %q, want %q", keys, want)
	}
	if get("groups") != "eng,oncall" || get("deny-as-error") != "true" || get("upstream-timeout") != "45s" || get("state") != "memory" {
		t.Errorf("groups %q deny-as-error %v upstream-timeout %v state %q", get("groups"), get("deny-as-error"), get("upstream-timeout"), get("state"))
	}
	if want := []string{"npx", "-y", "@modelcontextprotocol/server-github"}; !reflect.DeepEqual(command, want) {
		t.Errorf("command = %q", command)
	}
}

func TestConfigBundleReferenceNotResolved(t *testing.T) {
	for _, ref := range []string{"reg.example/acme/policies@sha256:" + strings.Repeat("ab", 32), "oci:layout@sha256:" + strings.Repeat("cd", 32)} {
		fs, _, _, err := parseProxy(t, "bundle: "+ref+"\n")
		if err != nil {
			t.Fatal(err)
		}
		if got := fs.Lookup("bundle").Value.String(); got != ref {
			t.Errorf("bundle = %q, want the reference %q as written", got, ref)
		}
	}
}

func TestConfigBundleFileResolved(t *testing.T) {
	fs, _, dir, err := parseProxy(t, "bundle: bin/policies.tar.gz\n")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fs.Lookup("bundle").Value.String(), filepath.Join(dir, "bin/policies.tar.gz"); got != want {
		t.Errorf("bundle = %q, want %q", got, want)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{"servr: github\n", `toolgate.yaml:1:1: unknown key "servr" (did you mean "server"?)`},
		{"server: a\nserver: b\n", `toolgate.yaml:2:1: "server" is set twice`},
		{"upstream-timeout: soon\n", `toolgate.yaml:1:19: upstream-timeout:`},
		{"server: [a, b]\n", "toolgate.yaml:1:9: server takes one value, not a list"},
		{"audit-log:\n  path: x\n", "toolgate.yaml:2:3: audit-log must be a value or a list, not a mapping"},
		{"command: npx\n", "toolgate.yaml:1:10: command must be a non-empty list"},
		{"- server\n", "toolgate.yaml:1:1: the config file must be a mapping"},
		{"config: other.yaml\n", `toolgate.yaml:1:1: unknown key "config"`},
		{"server: [\n", "toolgate.yaml:1:1: yaml: did not find expected node content"},
		{"state: cloud\n", `toolgate.yaml:1:8: state: must be memory, disk or redis, not "cloud"`},
		{"approval-mode: wait\n", `toolgate.yaml:1:16: approval-mode: must be async or hold, not "wait"`},
		{"deny-as-error: yes\n", `toolgate.yaml:1:16: deny-as-error must be true or false, not "yes"`},
		{"max-bundle-size: 32 lots\n", `toolgate.yaml:1:18: max-bundle-size: "32 lots" is not a size such as 100MiB`},
	} {
		_, _, _, err := parseProxy(t, tc.config)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v, want it to contain %q", tc.config, err, tc.want)
		}
	}
}

func TestConfigTooLarge(t *testing.T) {
	_, _, _, err := parseProxy(t, "# "+strings.Repeat("x", maxConfigSize)+"\n")
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("error %v, want a size error", err)
	}
}

// TestProxyDocsListEveryKey: docs/proxy.md documents every config key (every
// flag of toolgate proxy), so that the reference cannot fall behind.
func TestProxyDocsListEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/proxy.md")
	if err != nil {
		t.Fatal(err)
	}
	proxyCmd().Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "config" || f.Name == "help" {
			return
		}
		if !strings.Contains(string(doc), "`"+f.Name+"`") {
			t.Errorf("docs/proxy.md does not document the key `%s`", f.Name)
		}
	})
}

// FuzzConfig feeds arbitrary bytes to the config reader: it never panics;
// an error names the file (file:line:col where the file has a place); what
// it accepts sets only flags the proxy has, and a command of at least one
// entry.
func FuzzConfig(f *testing.F) {
	for _, s := range []string{
		"server: github\npolicy: policies\ngroups: [eng, oncall]\nkey: [a.pub, /b.pub]\ndeny-as-error: true\nupstream-timeout: 45s\ncommand: [npx, -y, server]\n",
		"bundle: oci:layout@sha256:0123\npin-file: pins/p.yaml\n",
		"listen: 127.0.0.1:0\nupstream: http://127.0.0.1:1/mcp\n",
		"server: [a, b]\n", "command: []\n", "command: [[a]]\n", "help: true\n", "config: x\n",
		"server: &a x\npolicy: *a\n", "<<: {server: x}\n", "? [a]\n: b\n", "---\n...\n", "- a\n", "server: !!binary aGVsbG8=\n",
		"upstream-timeout: forever\n", "server: a\nserver: b\n",
	} {
		f.Add([]byte(s))
	}
	const path = "/etc/toolgate/toolgate.yaml"
	f.Fuzz(func(t *testing.T, raw []byte) {
		fs := proxyCmd().Flags()
		command, err := parseConfig(fs, path, raw)
		if err != nil {
			if !strings.HasPrefix(err.Error(), path+":") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error does not name the file on one line: %q", err)
			}
			return
		}
		if command != nil && len(command) == 0 {
			t.Fatal("an empty command accepted")
		}
		fs.Visit(func(fl *pflag.Flag) {
			if fl.Name == "config" || fl.Name == "help" {
				t.Errorf("the config file set --%s", fl.Name)
			}
		})
	})
}

// TestConfigSizesAndWords: sizes take units; the word flags keep their
// defaults and take their words.
func TestConfigSizesAndWords(t *testing.T) {
	fs, _, _, err := parseProxy(t, "max-bundle-size: 64MiB\nstate: memory\napproval-mode: hold\n")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"max-bundle-size": "67108864", "state": "memory", "approval-mode": "hold"} {
		if got := fs.Lookup(name).Value.String(); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	fs, _, _, err = parseProxy(t, "")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"max-bundle-size": "33554432", "state": "disk", "approval-mode": "async"} {
		if got := fs.Lookup(name).Value.String(); got != want {
			t.Errorf("default %s = %q, want %q", name, got, want)
		}
	}
}
