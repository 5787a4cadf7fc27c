#!/usr/bin/env bash
# Installs what the tests need beyond Go, once per machine:
#  - Debian's docker-registry (the CNCF distribution registry), for the OCI,
#    signing and CLI tests against a real registry;
#  - the cosign CLI v2.6.5, built from the Go module proxy, for the interop
#    tests that check our signatures against cosign's (test/cosign).
# `make test` runs it first; it does nothing when both are there.
set -euo pipefail

if [ ! -x /usr/bin/docker-registry ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "test-deps: installing docker-registry (apt-get)"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null
	else
		echo "test-deps: the tests need Debian's docker-registry: sudo apt-get install docker-registry" >&2
		exit 1
	fi
fi

cache="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/toolgate-test/bin"
if [ ! -x "$cache/cosign" ] || ! "$cache/cosign" version 2>/dev/null | grep -q 'v2.6.5'; then
	echo "test-deps: building the cosign CLI v2.6.5 into $cache (a few minutes, once per machine)"
	(cd /tmp && GOBIN="$cache" GOFLAGS=-mod=mod go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5)
fi
