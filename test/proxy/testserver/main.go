// Command testserver is the upstream MCP server of the proxy's end-to-end
// tests: a real go-sdk server on stdio with tools that cover the proxy's
// paths.
//
//   - echo (readOnlyHint): returns its "text" argument; sends a progress
//     notification first when the call carries a progress token.
//   - limited: like echo; the test policy rate-limits it.
//   - delete_repo (destructiveHint): the test policy denies it.
//   - secret_tool: the test policy hides it.
//   - fail: answers with a JSON-RPC error (-32001).
//   - sleep: answers after its "ms" argument in milliseconds.
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type textArgs struct {
	Text string `json:"text,omitempty"`
}

type sleepArgs struct {
	MS int `json:"ms"`
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

func main() {
	s := mcp.NewServer(&mcp.Implementation{Name: "testserver", Version: "1.0.0"}, nil)
	yes := true
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "echo text", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *mcp.CallToolRequest, in textArgs) (*mcp.CallToolResult, any, error) {
			if tok := req.Params.GetProgressToken(); tok != nil {
				req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Total: 1, Message: "echoing"})
			}
			return text("echo: " + in.Text), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "limited", Description: "rate-limited echo"},
		func(ctx context.Context, req *mcp.CallToolRequest, in textArgs) (*mcp.CallToolResult, any, error) {
			return text("limited: " + in.Text), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_repo", Description: "delete a repository", Annotations: &mcp.ToolAnnotations{DestructiveHint: &yes}},
		func(ctx context.Context, req *mcp.CallToolRequest, in textArgs) (*mcp.CallToolResult, any, error) {
			return text("deleted " + in.Text), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "secret_tool", Description: "hidden by policy"},
		func(ctx context.Context, req *mcp.CallToolRequest, in textArgs) (*mcp.CallToolResult, any, error) {
			return text("secret"), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "fail", Description: "always a JSON-RPC error"},
		func(ctx context.Context, req *mcp.CallToolRequest, in textArgs) (*mcp.CallToolResult, any, error) {
			return nil, nil, &jsonrpc.Error{Code: -32001, Message: "upstream failure"}
		})
	mcp.AddTool(s, &mcp.Tool{Name: "sleep", Description: "answers after ms milliseconds"},
		func(ctx context.Context, req *mcp.CallToolRequest, in sleepArgs) (*mcp.CallToolResult, any, error) {
			time.Sleep(time.Duration(in.MS) * time.Millisecond)
			return text(fmt.Sprintf("slept %d ms", in.MS)), nil, nil
		})
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		log.Fatal(err)
	}
}
