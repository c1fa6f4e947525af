# Go 1.27.3 for every target: go1.26.8's standard library has known
# vulnerabilities (crypto/x509, net/http, html/template; make check runs
# govulncheck). The go command fetches that toolchain from the Go module
# proxy on first use (about 76 MB). Plain go commands outside make need
# the same export: export GOTOOLCHAIN=go1.27.3.
export GOTOOLCHAIN := go1.27.3
GO ?= go
PKGS := ./...

.PHONY: build test test-race test-full check demo demo-transport bench bench-quick bench-reference proto fuzz

build:
	$(GO) build $(PKGS)

# What CI runs, in two passes. test-race runs every test with the race
# detector (goleak runs in each TestMain). There the randomized tests of
# sim, flowstest and recovery run a tenth or a fifth of their cases
# (sim/race_test.go says why); test-full runs those packages again without
# the race detector, every case: 1,000 fault schedules, rapid's hundred
# checks, ten rounds of network faults, 400 seeds of the alert log. Both passes are the test, and they run at the
# same time: the race pass leaves the cores idle for long stretches (tests
# that wait on processes, failure detection and rates), which the full
# pass's half-minute of CPU fills; one after the other they took that much
# longer. Each go test prints a package's result once the package ends, so
# the two passes' lines interleave but do not mix; either pass failing
# fails make test. -vet=off: make check (which CI runs first) vets every package
# with all of vet's analyzers, of which go test's default is a subset, run
# again (40 s of CPU). -parallel 4: the example packages' parallel tests
# start processes and mostly wait on them (rates, failure detection);
# examples/wordcount's use 100 s of CPU in all, and two at a time left the
# cores idle.
#
# go test starts packages in the order it is given them (./... repeats
# none), two at a time: SLOWFIRST are the packages that take longest,
# started first, so that the short ones fill the other slot around them
# rather than one of them starting last and running alone. (Their results
# print first too, so the others' wait for them.)
#
# -ldflags=-w leaves DWARF out of the test binaries (race reports and
# panics symbolise from the binary's own tables): a fifth less CPU to link
# some thirty race-instrumented binaries.
FULLPKGS := ./sim ./flowstest ./recovery
SLOWFIRST := ./examples/wordcount ./examples/visitors ./actor ./internal/browsertest ./bench
test:
	@$(MAKE) --no-print-directory -j2 test-race test-full

test-race:
	$(GO) test -race -vet=off -ldflags=-w -parallel 4 -count=1 -timeout 20m $(SLOWFIRST) $(PKGS)

test-full:
	$(GO) test -vet=off -ldflags=-w -count=1 -timeout 20m $(FULLPKGS)

# Static checks: formatting, vet, a tidy go.mod, staticcheck and govulncheck
# (tool lines in go.mod; scripts/govulncheck.sh builds the vulnerability
# database from the module proxy, since vuln.go.dev is out of CI's reach)
# and current generated code.
check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@$(GO) mod tidy -diff || (echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1)
	$(GO) tool staticcheck $(PKGS)
	./scripts/govulncheck.sh
	@$(MAKE) --no-print-directory proto && git diff --exit-code -- internal/wire || (echo "generated code is stale: run make proto"; exit 1)

# A three-node word-count cluster on the unbounded generator, HTTP on
# 127.0.0.1:8080-8082; Ctrl-C stops all three.
demo:
	./scripts/demo.sh

# The transport example on three nodes (2M simulated pings at 100k/s):
# its page at http://127.0.0.1:8080/transport.
demo-transport:
	EXAMPLE=transport ./scripts/demo.sh -events 2000000 -rate 100000

# Every workload on the engine against plain-Go baselines, in one process:
# a table, and latest.json and plots in bench/results/local/ (ignored by
# git, so a run leaves the work tree clean). `make bench ARGS=-quick` (or
# `make bench-quick`) runs the small version.
bench:
	$(GO) run ./bench $(ARGS)

bench-quick:
	$(GO) run ./bench -quick

# The full suite into bench/results/, the committed reference run that the
# README's table quotes: refresh it on purpose, on a quiet machine, and
# commit it with the table. (-quick refuses to write there.)
bench-reference:
	$(GO) run ./bench -out bench/results $(ARGS)

# Regenerates the protobuf code of internal/wire (needs protoc on PATH;
# protoc-gen-go comes from go.mod's tool line).
proto:
	protoc --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" --go_out=. --go_opt=module=github.com/tessera-streams/tessera internal/wire/*.proto

# A few minutes of coverage-guided fuzzing of every decoder.
fuzz:
	for f in FuzzDecodeInt64 FuzzDecodeUint16 FuzzDecodeFloat FuzzDecodeBool FuzzDecodeJSON FuzzDecodeStruct FuzzDecodeProto FuzzDecodeBatch FuzzDecodeAnswer FuzzDecodeKeyedWindowAnswer FuzzExchangeRestore; do \
	  $(GO) test ./internal/flowcore -run '^$$' -fuzz "^$$f$$" -fuzztime 20s || exit 1; done
	$(GO) test ./connectors/file -run '^$$' -fuzz '^FuzzDecodeJSON$$' -fuzztime 20s
	$(GO) test ./connectors/ingest -run '^$$' -fuzz '^FuzzSplitBody$$' -fuzztime 20s
	$(GO) test ./splice -run '^$$' -fuzz '^FuzzParseQuery$$' -fuzztime 20s
	$(GO) test ./splice -run '^$$' -fuzz '^FuzzParseWindowQuery$$' -fuzztime 20s
	$(GO) test ./splice -run '^$$' -fuzz '^FuzzParseWindowedKeyedQuery$$' -fuzztime 20s
	$(GO) test ./recovery -run '^$$' -fuzz '^FuzzDecodeManifest$$' -fuzztime 20s
	$(GO) test ./recovery -run '^$$' -fuzz '^FuzzDecodeCheckpoint$$' -fuzztime 20s
	$(GO) test ./recovery -run '^$$' -fuzz '^FuzzDecodePreparedAlert$$' -fuzztime 20s
	$(GO) test ./cluster -run '^$$' -fuzz '^FuzzDecodeBeat$$' -fuzztime 20s
