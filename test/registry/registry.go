// Package registry starts a real OCI registry for tests: Debian's
// docker-registry (the CNCF distribution registry) on a loopback port, with a
// temporary storage folder, optionally behind htpasswd basic auth or TLS from
// a test CA. It is test machinery for the bundles/ stage of the pipeline
// (push, pull by digest, signatures); nothing in the product imports it.
//
// The binary is /usr/bin/docker-registry from the Debian package
// docker-registry. When it is missing, [Start] fails the test with the
// command that installs it: a missing registry is never a skipped test.
package registry

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry executable [Start] runs.
const Binary = "/usr/bin/docker-registry"

// Install is the command that provides [Binary] on Debian and Ubuntu.
const Install = "apt-get update && apt-get install -y docker-registry"

// Options configures [Start]. The zero value is an anonymous plain-HTTP
// registry.
type Options struct {
	// Username and Password, when Username is set, turn on htpasswd basic
	// auth with this one user.
	Username, Password string
	// TLS serves HTTPS with a server certificate for 127.0.0.1 and localhost
	// issued by a fresh test CA; [Registry.CACert] is the CA's PEM file.
	TLS bool
}

// Registry is a running registry. Its fields are read-only.
type Registry struct {
	// Host is "127.0.0.1:PORT", the registry part of a reference.
	Host string
	// URL is "http://Host" or "https://Host".
	URL string
	// CACert is the path of the test CA's PEM certificate when TLS is on.
	CACert string
	// CAPool holds the test CA when TLS is on, for clients built in the test.
	CAPool *x509.CertPool
	// Dir is the registry's storage folder.
	Dir string
}

// Repo returns "Host/repo", a repository in this registry.
func (r *Registry) Repo(repo string) string { return r.Host + "/" + repo }

// Start runs a registry for the duration of the test and stops it in
// t.Cleanup. It returns once GET /v2/ answers; the registry's own log is
// printed if the test fails.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("registry: %s is missing; install it with: %s", Binary, Install)
	}
	dir := t.TempDir()
	r := &Registry{Dir: filepath.Join(dir, "storage")}
	port, err := freePort()
	if err != nil {
		t.Fatalf("registry: finding a free port: %v", err)
	}
	r.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	r.URL = "http://" + r.Host

	config := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
http:
  addr: %q
  secret: toolgate-test-secret
`, r.Dir, r.Host)
	if opts.TLS {
		ca, err := writeTLS(dir)
		if err != nil {
			t.Fatalf("registry: making test certificates: %v", err)
		}
		r.CACert, r.CAPool = filepath.Join(dir, "ca.pem"), ca
		r.URL = "https://" + r.Host
		config += fmt.Sprintf("  tls:\n    certificate: %q\n    key: %q\n",
			filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	}
	if opts.Username != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(opts.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("registry: hashing the password: %v", err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(opts.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		config += fmt.Sprintf("auth:\n  htpasswd:\n    realm: toolgate-test\n    path: %q\n", htpasswd)
	}
	configFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	cmd := exec.Command(Binary, "serve", configFile)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("registry: starting %s: %v", Binary, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("registry log:\n%s", logs.String())
		}
	})

	client := &http.Client{Timeout: time.Second}
	if opts.TLS {
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.CAPool}}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get(r.URL + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return r
			}
		}
		select {
		case <-exited:
			t.Fatalf("registry: %s exited before answering:\n%s", Binary, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry: no answer from %s/v2/ after 15s (last error: %v):\n%s", r.URL, err, logs.String())
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeTLS writes ca.pem, server.pem and server-key.pem into dir: a fresh
// ECDSA P-256 CA and a server certificate it issued for 127.0.0.1, ::1 and
// localhost.
func writeTLS(dir string) (*x509.CertPool, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "toolgate test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	files := map[string]*pem.Block{
		"ca.pem":         {Type: "CERTIFICATE", Bytes: caDER},
		"server.pem":     {Type: "CERTIFICATE", Bytes: der},
		"server-key.pem": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	}
	for name, block := range files {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return pool, nil
}

// syncBuffer is a bytes.Buffer the registry's stdout and stderr share.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
