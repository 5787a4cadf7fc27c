package registry_test

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/toolgate/toolgate/test/registry"
)

func TestStart(t *testing.T) {
	tests := []struct {
		name string
		opts registry.Options
		want int // status of an anonymous GET /v2/
	}{
		{"plain", registry.Options{}, http.StatusOK},
		{"basic auth", registry.Options{Username: "ci", Password: "s3cret"}, http.StatusUnauthorized},
		{"tls", registry.Options{TLS: true}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := registry.Start(t, tt.opts)
			client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.CAPool}}}
			resp, err := client.Get(r.URL + "/v2/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.StatusCode; got != tt.want {
				t.Errorf("GET /v2/: got %d, want %d", got, tt.want)
			}
			if tt.opts.Username == "" {
				return
			}
			req, _ := http.NewRequest(http.MethodGet, r.URL+"/v2/", nil)
			req.SetBasicAuth(tt.opts.Username, tt.opts.Password)
			resp, err = client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /v2/ with the password: got %d, want 200", resp.StatusCode)
			}
		})
	}
}
