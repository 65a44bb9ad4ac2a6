# The developer interface. CI runs `make test` (see .ci/run).
GO        ?= go
PKGS      := ./...
FUZZTIME  ?= 20s
BENCHTIME ?= 1s
BENCHCOUNT ?= 1

.PHONY: bench-report bench-devices interop-deps all build run test race fuzz bench bench-peers check deps fmt vet conformance clean soak

all: check test

build:
	$(GO) build -o bin/tinymq ./cmd/tinymq
	$(GO) build -o bin/tinymq-bench ./cmd/tinymq-bench

run:
	$(GO) run ./cmd/tinymq

## test: every test, shuffled. Interop tests skip when their client is missing
## unless TINYMQ_REQUIRE_INTEROP=1 (CI sets it).
test:
	$(GO) test -shuffle=on -count=1 $(PKGS)

## soak: the SIGKILL crash tests (QoS 1 and QoS 2) with 20 kills instead of make test's 3
## (docs/durability.md).
soak:
	TINYMQ_CRASH_CYCLES=20 $(GO) test -count=1 -v -run '^TestPersistCrashSIGKILL(QoS2)?$$' ./engine

race:
	$(GO) test -race -shuffle=on -count=1 $(PKGS)

## fuzz: each fuzz target for FUZZTIME (go test -fuzz takes one target at a
## time); fails on a crasher, not on Go 1.26's fuzz deadline race.
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash .ci/fuzz ./codec ./topic ./engine/auth ./engine/store ./engine

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) $(PKGS)

## bench-peers: TinyMQ and Mosquitto (Debian package mosquitto) side by side
## on the same scenario set, with ratios. PEER_DURATION per scenario.
PEER_DURATION ?= 5s
MOSQUITTO ?= $(shell command -v mosquitto || echo /usr/sbin/mosquitto)
bench-peers: build
	@[ -x "$(MOSQUITTO)" ] || { echo "bench-peers needs mosquitto: apt-get install mosquitto"; exit 1; }
	bin/tinymq-bench compare --tinymq bin/tinymq --mosquitto $(MOSQUITTO) --duration $(PEER_DURATION) --plots bench/results
	@echo "plots: bench/results/*.svg"

## Peers beside Mosquitto: FlashMQ and NanoMQ join every comparison below
## when their binaries exist (../shared/peers/README.md), through
## bench/flashmq.sh and bench/nanomq.sh. DEEP=1 adds the deep-pipeline
## shape (256 in flight per publisher); SYSCALLS=strace adds a separate
## pass per broker under strace -c -f counting every system call.
FLASHMQ ?= $(abspath ../shared/peers/flashmq)
NANOMQ  ?= $(abspath ../shared/peers/nanomq)
DEEP    ?= 0
SYSCALLS ?= proc
## ROUNDS: times the load set runs, brokers taking turns row by row;
## each figure is the broker's median round (docs/benchmarks.md).
ROUNDS  ?= 3
PEER_FLAGS = --rounds $(ROUNDS) $(if $(wildcard $(FLASHMQ)),--broker 'flashmq=env FLASHMQ=$(FLASHMQ) bench/flashmq.sh {port} {dir}') \
	$(if $(wildcard $(NANOMQ)),--broker 'nanomq=env NANOMQ=$(NANOMQ) bench/nanomq.sh {port} {dir}') \
	$(if $(filter 1,$(DEEP)),--deep) --syscalls $(SYSCALLS)

## bench-devices: the device shapes alone (fan-in and fan-out with 1, 5, 10
## in flight, QoS 1 pairs, fixed 1k/10k/50k msg/s) against TinyMQ,
## Mosquitto and every peer present; prints the tables.
bench-devices: build
	@[ -x "$(MOSQUITTO)" ] || { echo "bench-devices needs mosquitto: apt-get install mosquitto"; exit 1; }
	bin/tinymq-bench compare --tinymq bin/tinymq --mosquitto $(MOSQUITTO) --duration $(PEER_DURATION) $(PEER_FLAGS)

## bench-report: the full side-by-side run recorded in docs/benchmarks.md:
## the scenario set, REPORT_CONNS idle connections and a REPORT_FLEET-device
## fleet per broker; rewrites the generated section and docs/img/*.svg.
## REPORT_TLS_CONNS > 0 adds that many idle TLS 1.3 connections per broker
## (RSS per connection, handshakes/s, CPU per handshake; 0: off).
REPORT_CONNS ?= 19000
REPORT_FLEET ?= 5000
REPORT_FLEET_DURATION ?= 60s
REPORT_TLS_CONNS ?= 0
bench-report: build
	@[ -x "$(MOSQUITTO)" ] || { echo "bench-report needs mosquitto: apt-get install mosquitto"; exit 1; }
	bin/tinymq-bench compare --tinymq bin/tinymq --mosquitto $(MOSQUITTO) --duration $(PEER_DURATION) $(PEER_FLAGS) \
		--conns $(REPORT_CONNS) --fleet $(REPORT_FLEET) --fleet-duration $(REPORT_FLEET_DURATION) \
		$(if $(filter-out 0,$(REPORT_TLS_CONNS)),--tls-conns $(REPORT_TLS_CONNS)) \
		--plots docs/img --update-doc docs/benchmarks.md

## interop-deps: the npm "mqtt" package (MQTT.js) for the WebSocket interop
## test, in ~/.cache/tinymq-node (tests skip without it unless CI requires it).
NODE_DIR ?= $(HOME)/.cache/tinymq-node
interop-deps:
	@command -v npm >/dev/null 2>&1 || { echo "interop-deps needs npm"; exit 1; }
	@[ -d $(NODE_DIR)/node_modules/mqtt ] || npm install --silent --no-audit --no-fund --prefix $(NODE_DIR) mqtt@5.14.1

## check: formatting, vet and the import-graph rule (DESIGN.md section 1).
check: fmt vet deps

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

## deps: codec/ and topic/ import only the standard library (codec/codectest,
## a test helper, may import codec); bridge/ only those two (never the engine).
deps:
	@bad=$$($(GO) list -deps ./codec ./topic | grep '\.' | grep -v '^github.com/tinymq/tinymq/\(codec\|topic\)$$' || true); \
	if [ -n "$$bad" ]; then echo "codec/topic must import only the standard library, found:"; echo "$$bad"; exit 1; fi; \
	for p in codec topic; do \
	  ours=$$($(GO) list -f '{{join .Imports "\n"}}' ./$$p | grep '^github.com/tinymq/tinymq/' || true); \
	  if [ -n "$$ours" ]; then echo "$$p must not import other TinyMQ packages: $$ours"; exit 1; fi; \
	done; \
	bad=$$($(GO) list -deps ./engine/auth | grep '^[a-z0-9.-]*\.[a-z]*/' | grep -v '^github.com/tinymq/tinymq/\(engine/auth\|topic\)$$' || true); \
	if [ -n "$$bad" ]; then echo "engine/auth must import only the standard library and topic, found:"; echo "$$bad"; exit 1; fi; \
	bad=$$($(GO) list -deps ./bridge | grep '^[a-z0-9.-]*\.[a-z]*/' | grep -v '^github.com/tinymq/tinymq/\(bridge\|codec\|topic\)$$' || true); \
	if [ -n "$$bad" ]; then echo "bridge must import only the standard library, codec and topic, found:"; echo "$$bad"; exit 1; fi; \
	echo "deps: ok"

## conformance: the spec-tagged protocol tests plus the interop clients.
conformance:
	TINYMQ_REQUIRE_INTEROP=1 $(GO) test -count=1 -run 'Interop|Conformance' ./engine/...

clean:
	rm -rf bin
