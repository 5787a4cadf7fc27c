# toolgate — the two commands of the quick start are `make run` and `make test`.
GO      ?= go
BIN     := bin/toolgate
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build run test test-deps bench fuzz clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/toolgate

# run: the main job on the embedded example policy repository (policies/):
# lint, test, build the bundle, and decide a few calls through the Wasm runtime.
run: build
	$(BIN) lint policies
	$(BIN) test policies
	$(BIN) build policies -o bin/policies.tar.gz --revision "$$(git rev-parse HEAD 2>/dev/null || echo dev)"
	@for f in examples/calls/*.json; do \
		echo "── $$f: $$(tr -d '\n' < $$f | cut -c1-150)"; \
		$(BIN) eval --bundle bin/policies.tar.gz --input $$f || exit 1; \
	done

# test: every test — unit, golden, corpus, differential, fuzz seeds, and the
# race-detector runs of everything that swaps or pools; last, the proxy built
# with -race under 8 concurrent clients for 30 s while its bundle is swapped
# every 100 ms (test/proxy/load_test.go).
test: test-deps
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(GO) test -race -count=1 ./runtime/... ./bundles/...
	$(GO) test -count=1 ./test/proxy/ -run TestLoad -load-for 30s -race-binary

# test-deps: docker-registry, redis-server, the cosign CLI and the npm
# reference MCP servers, installed once per machine.
test-deps:
	@scripts/test-deps.sh

# bench: the benchmarks of BENCHMARKS.md, side by side in one run.
BENCH_COUNT ?= 8
BENCHSTAT := $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
bench:
	@mkdir -p bin
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) ./runtime/opawasm/ ./runtime/engine/ ./test/bench/ ./test/proxybench/ | tee bin/bench.txt
	@echo; echo "── our runtime vs OPA topdown vs OPA's Wasm target (one run, ratios vs toolgate)"
	$(BENCHSTAT) -filter '.name:Decision' -col /impl bin/bench.txt
	@echo; echo "── a whole decision vs the bare opa_eval call on the same module"
	$(BENCHSTAT) -filter '.name:Floor' -col /path bin/bench.txt
	@echo; echo "── a tools/call round trip over stdio: direct, through relay.c, through toolgate"
	$(BENCHSTAT) -filter '.name:StdioRoundTrip' -col /path bin/bench.txt
	@echo; echo "── everything"
	$(BENCHSTAT) bin/bench.txt

# fuzz: a longer run of each native fuzz target (the seeds run in `make test`).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./compiler/policy/
	$(GO) test -run '^$$' -fuzz FuzzCheckJSON -fuzztime $(FUZZTIME) ./runtime/opawasm/
	$(GO) test -run '^$$' -fuzz FuzzStdioToolsCall -fuzztime $(FUZZTIME) ./runtime/proxy/
	$(GO) test -run '^$$' -fuzz FuzzStdioClient -fuzztime $(FUZZTIME) ./runtime/proxy/
	$(GO) test -run '^$$' -fuzz FuzzStdioListing -fuzztime $(FUZZTIME) ./runtime/proxy/
	$(GO) test -run '^$$' -fuzz FuzzClassify -fuzztime $(FUZZTIME) ./runtime/proxy/
	$(GO) test -run '^$$' -fuzz FuzzHTTPPost -fuzztime $(FUZZTIME) ./runtime/proxy/
	$(GO) test -run '^$$' -fuzz FuzzMembers -fuzztime $(FUZZTIME) ./runtime/proxy/
	$(GO) test -run '^$$' -fuzz FuzzGrantsFile -fuzztime $(FUZZTIME) ./runtime/identity/
	$(GO) test -run '^$$' -fuzz FuzzVerify -fuzztime $(FUZZTIME) ./runtime/audit/
	$(GO) test -run '^$$' -fuzz FuzzWrite -fuzztime $(FUZZTIME) ./runtime/audit/
	$(GO) test -run '^$$' -fuzz FuzzNumbersAsFloat64 -fuzztime $(FUZZTIME) ./bundles/
	$(GO) test -run '^$$' -fuzz FuzzDecodeResult -fuzztime $(FUZZTIME) ./runtime/opawasm/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./bundles/pin/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./compiler/policytest/
	$(GO) test -run '^$$' -fuzz FuzzConfig -fuzztime $(FUZZTIME) ./cmd/toolgate/
	$(GO) test -run '^$$' -fuzz FuzzParseInput -fuzztime $(FUZZTIME) ./bundles/
	$(GO) test -run '^$$' -fuzz FuzzRead -fuzztime $(FUZZTIME) ./bundles/
	$(GO) test -run '^$$' -fuzz FuzzParseDigest -fuzztime $(FUZZTIME) ./bundles/oci/
	$(GO) test -run '^$$' -fuzz FuzzSSEReader -fuzztime $(FUZZTIME) ./runtime/proxy/
	$(GO) test -run '^$$' -fuzz FuzzProjection -fuzztime $(FUZZTIME) ./runtime/opawasm/
	$(GO) test -run '^$$' -fuzz FuzzDataEnd -fuzztime $(FUZZTIME) ./runtime/opawasm/
	$(GO) test -run '^$$' -fuzz FuzzCanonical -fuzztime $(FUZZTIME) ./runtime/audit/
	$(GO) test -run '^$$' -fuzz FuzzParseBearer -fuzztime $(FUZZTIME) ./runtime/identity/
	$(GO) test -run '^$$' -fuzz FuzzApprovalTokens -fuzztime $(FUZZTIME) ./runtime/approvals/

clean:
	rm -rf bin
