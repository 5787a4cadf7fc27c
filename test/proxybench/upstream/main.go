// Command upstream is the benchmark's MCP server: it answers each JSON-RPC
// request line on stdin with a fixed tools/call result carrying the same id,
// as fast as Go's buffered I/O allows, so that what a benchmark measures is
// the path in front of it.
package main

import (
	"bufio"
	"bytes"
	"os"
)

func main() {
	in := bufio.NewReaderSize(os.Stdin, 1<<16)
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return
		}
		// The id sits between `"id":` and the next comma in the requests the
		// benchmark sends.
		i := bytes.Index(line, []byte(`"id":`))
		if i < 0 {
			continue
		}
		j := bytes.IndexByte(line[i:], ',')
		out.WriteString(`{"jsonrpc":"2.0","id":`)
		out.Write(line[i+5 : i+j])
		out.WriteString(`,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}` + "\n")
		out.Flush()
	}
}
