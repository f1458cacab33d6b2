# sluice — `make help` lists the targets. Every target that needs the local stack starts it.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

STACK   := deploy/local/stack.sh
# KAFKA_BROKERS=3 runs the local Kafka as a cluster of three KRaft nodes (make up KAFKA_BROKERS=3).
KAFKA_BROKERS ?= 1
# POSTGRES=yes starts a local PostgreSQL too (make up POSTGRES=yes), to read from.
POSTGRES ?= no
export SLUICE_KAFKA_NODES := $(KAFKA_BROKERS)
# CLICKHOUSE=cluster also runs a ClickHouse cluster of 2 shards x 2 replicas with ZooKeeper (make up
# CLICKHOUSE=cluster), beside the single server; `make test` starts it for the cluster's tests.
CLICKHOUSE ?= single
STATE   := $(or $(SLUICE_STATE_DIR),$(CURDIR)/.sluice)
BIN     := $(STATE)/bin
MODULES := $(shell go list -m 2>/dev/null)
PKGS    := $(addsuffix /...,$(MODULES))
SERVICES := planner extractor loader sluicectl demosource

# staticcheck, a Go tool fetched and cached by go run at this version.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Generated code is pinned: protoc-gen-go by the tool line in proto/go.mod, protoc to Debian's release.
PROTOC_VERSION := 3.21.12
PROTOS := $(wildcard proto/sluice/v1/*.proto)

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: up
up: ## start the local Kafka and ClickHouse (CLICKHOUSE=cluster: and a 2x2 cluster), PostgreSQL with POSTGRES=yes; show what runs where
	@SLUICE_STACK_POSTGRES=$(POSTGRES) SLUICE_STACK_CLICKHOUSE=$(CLICKHOUSE) $(STACK) up

.PHONY: demo
demo: ## the whole pipeline locally: stack, services, a RECORDS-record job (default 100000), summary
	@deploy/local/demo.sh

.PHONY: bench
bench: ## every leg against its floor, end to end against the legs, the cluster beside the single server; a table of them at the end
	@SLUICE_STACK_POSTGRES=yes SLUICE_STACK_CLICKHOUSE=cluster $(STACK) up >/dev/null
	@summary=$$(mktemp); eval "$$($(STACK) env)"; \
	  RECORDS=$${RECORDS:-500000} SLUICE_BENCH_SUMMARY=$$summary SLUICE_INTEGRATION=1 go test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 40m ./deploy/; rc=$$?; \
	  printf '\nsluice benchmarks, one run, this machine (%s cores):\n' "$$(nproc)"; \
	  printf '  %-44s %12s %12s %7s %16s %10s\n' leg rate floor ratio CPU-s/M "peak RSS"; cat $$summary; rm -f $$summary; exit $$rc

.PHONY: down
down: ## stop what `make up` and `make demo` started
	@$(STACK) down

.PHONY: status
status: ## show whether Kafka and ClickHouse answer, with their versions
	@$(STACK) status

.PHONY: install
install: ## install what a fresh machine lacks: Debian packages, Kafka jars, Go modules
	@$(STACK) install

.PHONY: build
build: ## build the services, sluicectl and the demo source into .sluice/bin
	@mkdir -p $(BIN)
	@for s in $(SERVICES); do go build -trimpath -o $(BIN)/$$s ./services/$$s; done
	@echo "built $(SERVICES) into $(BIN)"

.PHONY: test
test: lint proto-check ## the one test command: lint, proto check, unit and integration tests on the real stack
	@SLUICE_STACK_POSTGRES=yes SLUICE_STACK_CLICKHOUSE=cluster $(STACK) up
	@$(STACK) install-tools
	@rm -f $(STATE)/chaos-quick.txt
	@eval "$$($(STACK) env)"; SLUICE_INTEGRATION=1 SLUICE_CHAOS_RESULTS=$(STATE)/chaos-quick.txt go test -count=1 -timeout 18m $(PKGS)
	@echo "quick fault cases:"; cat $(STATE)/chaos-quick.txt

.PHONY: chaos
chaos: ## the whole fault suite F1–F13 on the real stack, long outages and the 3-broker cluster included; results in .sluice/chaos-results.txt
	@$(STACK) up >/dev/null
	@$(STACK) install-tools
	@eval "$$($(STACK) env)"; SLUICE_INTEGRATION=1 SLUICE_CHAOS=all SLUICE_CHAOS_RESULTS=$(STATE)/chaos-results.txt \
	  go test -count=1 -run '^TestChaos$$' -timeout 85m -v ./deploy/ >$(STATE)/chaos.log 2>&1 || \
	  { grep -E '^\s*(--- FAIL|chaos|.*_test.go:)' $(STATE)/chaos.log | tail -n 40; echo "chaos: failed; the whole log is $(STATE)/chaos.log"; exit 1; }
	@cat $(STATE)/chaos-results.txt

.PHONY: test-unit
test-unit: ## the tests that need no stack (integration tests skip)
	@go test -count=1 $(PKGS)

.PHONY: lint
lint: ## gofmt, go vet and staticcheck over every module
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@go vet $(PKGS)
	@go run $(STATICCHECK) $(PKGS)

.PHONY: proto
proto: ## regenerate the Go code of proto/sluice/v1
	@$(MAKE) --no-print-directory proto-gen OUT=proto

.PHONY: proto-check
proto-check: ## fail when the committed generated code is stale
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	  $(MAKE) --no-print-directory proto-gen OUT=$$tmp; \
	  strip() { grep -v '^// 	protoc  ' "$$1"; }; \
	  for f in $(PROTOS:.proto=.pb.go); do \
	    rel=$${f#proto/}; \
	    if [ ! -f "$$f" ] || ! diff -u <(strip "$$f") <(strip "$$tmp/$$rel") >/dev/null; then \
	      echo "proto-check: $$f is stale: run make proto and commit the result"; exit 1; fi; \
	  done; \
	  extra=$$(comm -13 <(ls $(PROTOS:.proto=.pb.go) | sort) <(ls proto/sluice/v1/*.pb.go | sort)); \
	  if [ -n "$$extra" ]; then echo "proto-check: $$extra has no .proto"; exit 1; fi; \
	  echo "proto-check: generated code is current"

.PHONY: proto-gen
proto-gen:
	@command -v protoc >/dev/null || $(STACK) install-protoc
	@v=$$(protoc --version | awk '{print $$2}'); [ "$$v" = "$(PROTOC_VERSION)" ] || \
	  echo "proto: protoc $$v differs from the pinned $(PROTOC_VERSION); only the version comment may differ"
	@mkdir -p $(BIN)
	@cd proto && go build -o $(BIN)/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	@protoc -I proto --plugin=protoc-gen-go=$(BIN)/protoc-gen-go \
	  --go_out=$(OUT) --go_opt=paths=source_relative $(PROTOS:proto/%=%)

.PHONY: tidy
tidy: ## go mod tidy in every module
	@for d in $$(go list -m -f '{{.Dir}}'); do (cd $$d && go mod tidy); done

.PHONY: clean
clean: down ## stop the stack and remove .sluice (data, logs, jars)
	@rm -rf $(STATE) "$$($(STACK) pg-dir)"
