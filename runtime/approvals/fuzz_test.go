package approvals_test

import (
	"testing"

	"github.com/toolgate/toolgate/runtime/approvals"
)

// FuzzApprovalTokens: the token file parser never panics, and a file it
// accepts holds at least one token.
func FuzzApprovalTokens(f *testing.F) {
	for _, seed := range []string{
		"",
		"# comment\n",
		"0123456789abcdef0123\n",
		"0123456789abcdef0123 carol security,eng\n",
		"sha256:" + "ab12" + "\n",
		"sha256:0000000000000000000000000000000000000000000000000000000000000000 x\n\n\n",
		"a b c d\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tokens, err := approvals.ParseTokens(data)
		if (tokens == nil) == (err == nil) {
			t.Fatalf("ParseTokens = %v, %v: want exactly one", tokens, err)
		}
	})
}
