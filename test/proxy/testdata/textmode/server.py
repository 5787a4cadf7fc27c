"""A minimal MCP server over stdio that reads its input as Python's MCP SDK
does: stdin in text mode (universal newlines, so a lone CR ends a line too).
It answers initialize, tools/list and ping, runs every tools/call by
appending the tool's name to the file named by its first argument, and
answers "RAN <name>". Used by TestTextModeServer."""
import io
import json
import sys

ran = sys.argv[1]
out = sys.stdout
for line in io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8"):
    line = line.strip()
    if not line:
        continue
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if "id" not in msg or "method" not in msg:
        continue
    method, result = msg["method"], {}
    if method == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "textmode", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "delete_repo")]}
    elif method == "tools/call":
        name = msg.get("params", {}).get("name", "")
        with open(ran, "a") as f:
            f.write(name + "\n")
        result = {"content": [{"type": "text", "text": "RAN " + name}]}
    out.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    out.flush()
