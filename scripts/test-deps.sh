#!/usr/bin/env bash
# Installs what the tests need beyond Go, once per machine:
#  - Debian's docker-registry (the CNCF distribution registry), for the OCI,
#    signing and CLI tests against a real registry;
#  - Debian's redis-server, which the Redis counter tests start themselves on
#    a loopback port;
#  - the cosign CLI v2.6.5, built from the Go module proxy, for the interop
#    tests that check our signatures against cosign's (test/cosign);
#  - the reference MCP servers @modelcontextprotocol/server-everything and
#    @modelcontextprotocol/server-filesystem, pinned, from npm, for the proxy's
#    end-to-end tests against real servers (test/proxy/npm_test.go).
# `make test` runs it first; it does nothing, quietly, when all are there.
set -euo pipefail

# The npm packages and their pinned versions; test/proxy/npm_test.go names the
# same versions and looks for them in $npm_dir.
npm_packages=(
	@modelcontextprotocol/server-everything@2026.8.31
	@modelcontextprotocol/server-filesystem@2026.8.31
)

apt_missing=()
[ -x /usr/bin/docker-registry ] || apt_missing+=(docker-registry)
[ -x /usr/bin/redis-server ] || apt_missing+=(redis-server)
command -v npm >/dev/null || apt_missing+=(nodejs npm)
command -v python3 >/dev/null || apt_missing+=(python3) # a text-mode stdio server (TestTextModeServer)
if [ ${#apt_missing[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "test-deps: installing ${apt_missing[*]} (apt-get)"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
	else
		echo "test-deps: the tests need Debian's ${apt_missing[*]}: sudo apt-get install ${apt_missing[*]}" >&2
		exit 1
	fi
fi

cache="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/toolgate-test"
if [ ! -x "$cache/bin/cosign" ] || ! "$cache/bin/cosign" version 2>/dev/null | grep -q 'v2.6.5'; then
	echo "test-deps: building the cosign CLI v2.6.5 into $cache/bin (a few minutes, once per machine)"
	(cd /tmp && GOBIN="$cache/bin" GOFLAGS=-mod=mod go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5)
fi

# npm_installed reports whether package@version is installed in $npm_dir.
npm_dir="$cache/npm"
npm_installed() {
	local pkg="${1%@*}" version="${1##*@}"
	grep -qs "\"version\": \"$version\"" "$npm_dir/node_modules/$pkg/package.json"
}
npm_missing=()
for p in "${npm_packages[@]}"; do
	npm_installed "$p" || npm_missing+=("$p")
done
if [ ${#npm_missing[@]} -gt 0 ]; then
	echo "test-deps: installing ${npm_missing[*]} into $npm_dir (npm, once per machine)"
	mkdir -p "$npm_dir"
	npm install --prefix "$npm_dir" --save-exact --no-audit --no-fund --loglevel=error "${npm_packages[@]}" >/dev/null
	for p in "${npm_packages[@]}"; do
		npm_installed "$p" || { echo "test-deps: npm did not install $p into $npm_dir" >&2; exit 1; }
	done
fi
