package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/bundles"
)

func TestClassify(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	tests := []struct {
		line   string
		kind   kind
		code   int
		id     string // "" for none
		method string // "" for none
	}{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}`, kindRequest, 0, `1`, "tools/call"},
		{` { "method" : "notifications/initialized" , "jsonrpc" : "2.0" } `, kindNotification, 0, "", "notifications/initialized"},
		{`{"jsonrpc":"2.0","id":"a","result":{}}`, kindResponse, 0, `"a"`, ""},
		{`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}`, kindResponse, 0, `null`, ""},
		{`{"jsonrpc":"2.0","id":7,"result":null}`, kindResponse, 0, `7`, ""},
		{`{"jsonrpc":"2\u002e0","id":-1.5e3,"method":"x\/y\u00e9"}`, kindRequest, 0, `-1.5e3`, "x/yé"},
		{`{"jsonrpc":"2.0","id":1,"method":"a\ud83d\ude00\ud800b"}`, kindRequest, 0, `1`, "a😀\ufffdb"},
		{"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\xffb\"}", kindRequest, 0, `1`, "a\ufffdb"},
		{`{"jsonrpc":"2.0","id":1,"\u006dethod":"tools/call"}`, kindRequest, 0, `1`, "tools/call"},
		{`{"jsonrpc":"2.0","id":1,"method":"x","params":` + deep(9999) + `}`, kindRequest, 0, `1`, "x"},
		{`{"jsonrpc":"2.0","id":1,"other":{"jsonrpc":1,"method":2,"id":{}},"method":"x"}`, kindRequest, 0, `1`, "x"},

		// Not JSON: -32700, id null.
		{`{"jsonrpc":"2.0","id":1,"method":`, kindInvalid, codeParseError, "", ""},
		{`not json`, kindInvalid, codeParseError, "", ""},
		{"\xff\xfe", kindInvalid, codeParseError, "", ""},
		{``, kindInvalid, codeParseError, "", ""},
		{`{"jsonrpc":"2.0","id":1,"method":"x"} {}`, kindInvalid, codeParseError, "", ""},
		{`{"jsonrpc":"2.0","id":01,"method":"x"}`, kindInvalid, codeParseError, "", ""},
		{`{"jsonrpc":"2.0","id":1,"method":"x\u12"}`, kindInvalid, codeParseError, "", ""},
		{"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\ty\"}", kindInvalid, codeParseError, "", ""},
		{"\v{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}", kindInvalid, codeParseError, "", ""},
		{`{"jsonrpc":"2.0","id":1,"method":"x","params":` + deep(10000) + `}`, kindInvalid, codeParseError, "", ""},
		{deep(10001), kindInvalid, codeParseError, "", ""},

		// JSON, but not a JSON-RPC 2.0 message: -32600.
		{`{"jsonrpc":"1.0","id":4,"method":"ping"}`, kindInvalid, codeInvalidRequest, `4`, "ping"},
		{`{"jsonrpc":"2.0","id":5,"method":7}`, kindInvalid, codeInvalidRequest, `5`, ""},
		{`{"jsonrpc":2,"id":5,"method":"x"}`, kindInvalid, codeInvalidRequest, `5`, ""},
		{`[{"jsonrpc":"2.0","id":6,"method":"tools/call"}]`, kindInvalid, codeInvalidRequest, "", ""},
		{`"x"`, kindInvalid, codeInvalidRequest, "", ""},
		{deep(10000), kindInvalid, codeInvalidRequest, "", ""},
		{`{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`, kindInvalid, codeInvalidRequest, "", "ping"},
		{`{"jsonrpc":"2.0","id":null,"method":"ping"}`, kindInvalid, codeInvalidRequest, "", "ping"},
		{`{"jsonrpc":"2.0","id":1,"method":"x","params":null}`, kindInvalid, codeInvalidRequest, `1`, "x"},
		{`{"jsonrpc":"2.0","id":1,"method":"x","params":"p"}`, kindInvalid, codeInvalidRequest, `1`, "x"},
		{`{"jsonrpc":"2.0","id":1,"method":""}`, kindInvalid, codeInvalidRequest, `1`, ""},
		{`{"jsonrpc":"2.0","id":1,"result":{},"error":{}}`, kindInvalid, codeInvalidRequest, `1`, ""},
		{`{"jsonrpc":"2.0","id":1}`, kindInvalid, codeInvalidRequest, `1`, ""},
		{`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}`, kindInvalid, codeInvalidRequest, "", "tools/call"},

		// Members repeated or spelled in another case read as encoding/json
		// reads them (the transports refuse them: exactNames).
		{`{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`, kindRequest, 0, `1`, "tools/call"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","Method":"ping"}`, kindRequest, 0, `1`, "ping"},
		{`{"jsonrpc":"2.0","id":1,"method":"x","re\u017fult":{}}`, kindInvalid, codeInvalidRequest, `1`, "x"},
		{`{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}`, kindRequest, 0, `2`, "x"},
		{`{"jsonrpc":"2.0","Id":1,"method":"x"}`, kindRequest, 0, `1`, "x"},
		{`{"jsonrpc":"2.0","id":1,"method":7,"method":"x"}`, kindInvalid, codeInvalidRequest, `1`, ""},
		{`{"jsonrpc":"2.0","jsonrpc":null,"id":1,"method":"x"}`, kindRequest, 0, `1`, "x"},
		{`{"jsonrpc":"2.0","id":1,"method":"x","method":null}`, kindInvalid, codeInvalidRequest, `1`, ""},
	}
	for _, tt := range tests {
		if valid := json.Valid([]byte(tt.line)); valid != (tt.code != codeParseError) {
			t.Fatalf("%.80q: json.Valid says %v", tt.line, valid)
		}
		m, k, code := classify([]byte(tt.line))
		var method string
		if m.Method != nil {
			method = *m.Method
		}
		if k != tt.kind || code != tt.code || string(m.ID) != tt.id || method != tt.method {
			t.Errorf("%.80q: got kind %d code %d id %q method %q, want %d %d %q %q", tt.line, k, code, m.ID, method, tt.kind, tt.code, tt.id, tt.method)
		}
	}
}

func TestClassifyKeepsIDNotLine(t *testing.T) {
	line := []byte(`{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"x"}}`)
	m, _, _ := classify(line)
	copy(line, bytes.Repeat([]byte("#"), len(line)))
	if string(m.ID) != `"abc"` || *m.Method != "tools/call" {
		t.Fatalf("after the line changed: id %s, method %s", m.ID, *m.Method)
	}
	if !bytes.Contains(m.Params, []byte("###")) {
		t.Fatalf("params are not a view into the line: %s", m.Params)
	}
}

func TestLooksLikeNotification(t *testing.T) {
	for line, want := range map[string]bool{
		`{"jsonrpc":"1.0","method":"x"}`:         true,
		`{"jsonrpc":"1.0","method":7}`:           true,
		`{"jsonrpc":"1.0","method":"x","id":1}`:  false,
		`{"jsonrpc":"1.0","method":"x","Id":1}`:  false,
		`{"jsonrpc":"1.0","id":null,"method":1}`: false,
		`{"jsonrpc":"1.0"}`:                      false,
		`[{"method":"x"}]`:                       false,
		`{"method":`:                             false,
	} {
		if got := looksLikeNotification([]byte(line)); got != want {
			t.Errorf("%s: got %v, want %v", line, got, want)
		}
	}
}

func TestAppendUnquoted(t *testing.T) {
	for _, lit := range []string{
		`""`, `"plain"`, `"\"\\\/\b\f\n\r\t"`, `"\u00e9\u4e2d"`, `"\ud83d\ude00"`, `"\uD83D\uDE00"`,
		`"\ud800"`, `"\udc00x"`, `"\ud800\ud800\udc00"`, `"\ud800\u0041"`, "\"a\xffb\xc3\"", "\"\xed\xa0\x80\"",
		`"é中😀"`, `"\ufffd"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(lit), &want); err != nil {
			t.Fatalf("%s: %v", lit, err)
		}
		got, exact := appendUnquoted(nil, []byte(lit))
		if string(got) != want {
			t.Errorf("%s: got %q, want %q (encoding/json)", lit, got, want)
		}
		replaced := strings.Count(want, "\ufffd") > strings.Count(lit, "\ufffd")+strings.Count(lit, `\ufffd`)
		if exact == replaced {
			t.Errorf("%s: exact %v", lit, exact)
		}
	}
}

func TestDecideCallParams(t *testing.T) {
	var cat Catalog
	cat.set("listed", json.RawMessage(`{"readOnlyHint":true}`))
	tests := []struct {
		params string
		tool   string // decided tool, or "" when refused
		args   string
		errMsg string // the start of the -32602 message when refused
	}{
		{`{"name":"echo","arguments":{"a":1}}`, "echo", `{"a":1}`, ""},
		{`{ "arguments" : { "a" : [1] } , "name" : "echo" }`, "echo", `{ "a" : [1] }`, ""},
		{`{"name":"echo","arguments":null}`, "echo", ``, ""},
		{`{"name":"echo"}`, "echo", ``, ""},
		{`{"name":"listed","_meta":{"progressToken":1}}`, "listed", ``, ""},
		{`{"name":"ec\u0068o","other":{"name":1,"Name":2}}`, "echo", ``, ""},
		{`{"name":"日本"}`, "日本", ``, ""},
		{`{"name":"\ud83d\ude00"}`, "😀", ``, ""},
		{`{"name":"echo","_meta":null}`, "echo", ``, ""},

		{`{"arguments":{}}`, "", "", errNeedName},
		{`{"name":1}`, "", "", errNeedName},
		{`{"name":null}`, "", "", errNeedName},
		{`[]`, "", "", errNeedName},
		{`{"name":"echo","_meta":"x"}`, "", "", errNeedName},
		{`{"name":"echo","arguments":[1]}`, "", "", errArgsObject},
		{`{"name":"echo","arguments":"{}"}`, "", "", errArgsObject},
		{`{"name":"echo","name":"delete"}`, "", "", errParamsAmbiguous},
		{`{"name":"echo","Name":"delete"}`, "", "", errParamsAmbiguous},
		{`{"name":"echo","arguments":{},"ARGUMENTS":{"a":1}}`, "", "", errParamsAmbiguous},
		{`{"name":"echo","\u004eame":"delete"}`, "", "", errParamsAmbiguous},
		{"{\"name\":\"ec\xffho\"}", "", "", errNameEncoding},
		{`{"name":"ec\ud800ho"}`, "", "", errNameEncoding},
		{`{"name":"\udc00"}`, "", "", errNameEncoding},
	}
	for _, tt := range tests {
		var got *bundles.Input
		e := &Enforcer{Server: "srv", Decide: func(_ context.Context, in *bundles.Input) Verdict {
			c := *in
			c.Arguments = bytes.Clone(in.Arguments)
			got = &c
			return Verdict{Allow: true}
		}}
		line := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":` + tt.params + `}`
		m, k, _ := classify([]byte(line))
		if k != kindRequest {
			t.Fatalf("%s: kind %d", line, k)
		}
		_, errLine, _ := e.DecideCall(context.Background(), &cat, bundles.Identity{}, &m)
		if tt.errMsg != "" {
			want := `{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":` + string(appendString(nil, tt.errMsg)) + `}}`
			if got != nil || string(errLine) != want {
				t.Errorf("%s: got input %v, answer %s; want %s", tt.params, got, errLine, want)
			}
			continue
		}
		if errLine != nil || got == nil {
			t.Errorf("%s: refused: %s", tt.params, errLine)
			continue
		}
		if got.Tool != tt.tool || string(got.Arguments) != tt.args || got.Server != "srv" {
			t.Errorf("%s: got tool %q args %s, want %q %s", tt.params, got.Tool, got.Arguments, tt.tool, tt.args)
		}
		if tt.tool == "listed" && string(got.Annotations) != `{"readOnlyHint":true}` {
			t.Errorf("%s: annotations %s", tt.params, got.Annotations)
		}
	}
}

func TestToolNameFromCatalogNotCopied(t *testing.T) {
	var cat Catalog
	cat.set("echo", nil)
	allocs := testing.AllocsPerRun(100, func() {
		if name, _, _, ok := toolName(&cat, []byte(`"echo"`)); !ok || name != "echo" {
			t.Fatal(name, ok)
		}
	})
	if allocs != 0 {
		t.Errorf("a listed tool's name costs %v allocations", allocs)
	}
}

// BenchmarkExactNames is the member-names check of a tools/call: reading
// every name again (exactNames), and after classify found the envelope's
// names plain (message.exactNames: the params only).
func BenchmarkExactNames(b *testing.B) {
	line := []byte(`{"jsonrpc":"2.0","id":1042,"method":"tools/call","params":{"name":"echo","arguments":{"path":"/srv/a","text":"hello"}}}`)
	m, k, _ := classifyView(line)
	if k != kindRequest || !m.plainNames {
		b.Fatalf("kind %d, plain names %v", k, m.plainNames)
	}
	b.Run("path=reread", func(b *testing.B) {
		for b.Loop() {
			if !exactNames(line, true) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("path=after-classify", func(b *testing.B) {
		for b.Loop() {
			if !m.exactNames(line, true) {
				b.Fatal("refused")
			}
		}
	})
}

// BenchmarkClassify compares the scanner with the encoding/json reading it
// replaced, on a tools/call request, its response, and a call with 1 MiB
// of arguments.
func BenchmarkClassify(b *testing.B) {
	for _, bc := range []struct{ name, line string }{
		{"msg=call", `{"jsonrpc":"2.0","id":1042,"method":"tools/call","params":{"name":"echo","arguments":{"path":"/srv/a","text":"hello"}}}`},
		{"msg=result", `{"jsonrpc":"2.0","id":1042,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}`},
		{"msg=call-1MiB", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + strings.Repeat("abcdefgh", 1<<17) + `"}}}`},
	} {
		line := []byte(bc.line)
		b.Run(bc.name+"/impl=scanner", func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			for b.Loop() {
				if _, k, _ := classifyView(line); k == kindInvalid {
					b.Fatal("invalid")
				}
			}
		})
		b.Run(bc.name+"/impl=encoding-json", func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			for b.Loop() {
				if _, k, _ := classifyReference(line); k == kindInvalid {
					b.Fatal("invalid")
				}
			}
		})
	}
}

// BenchmarkDecideCall is what the proxy adds to a decision: reading the
// tools/call params and building the input (Decide itself does nothing
// here).
func BenchmarkDecideCall(b *testing.B) {
	var cat Catalog
	cat.set("echo", json.RawMessage(`{"readOnlyHint":true}`))
	e := &Enforcer{Server: "srv", Decide: func(context.Context, *bundles.Input) Verdict { return Verdict{Allow: true} }}
	m, _, _ := classify([]byte(`{"jsonrpc":"2.0","id":1042,"method":"tools/call","params":{"name":"echo","arguments":{"path":"/srv/a","text":"hello"}}}`))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, errLine, _ := e.DecideCall(ctx, &cat, bundles.Identity{Subject: "alice"}, &m); errLine != nil {
			b.Fatal(string(errLine))
		}
	}
}
