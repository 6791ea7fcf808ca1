# Run `make` or `make help` for the list of targets.

.DEFAULT_GOAL := help
SHELL := /bin/bash

# How long `make fuzz` runs each fuzz target.
FUZZTIME ?= 30s
# Packages for test, bench and lint.
PKGS ?= ./...

.PHONY: help
help: ## Show this list of targets.
	@awk 'BEGIN {FS = ":.*?## "} /^[a-zA-Z0-9_\/-]+:.*?## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: FUZZTIME=$(FUZZTIME) PKGS=$(PKGS) (and DATABASE_URL to use an existing PostgreSQL)"

.PHONY: test
test: ## Run the tests (real NATS and PostgreSQL, started by the tests).
	go test -count=1 -timeout 20m $(PKGS)

.PHONY: test/race
test/race: ## Run the tests with the race detector, as CI does.
	go test -race -count=1 -timeout 20m $(PKGS)

.PHONY: lint
lint: ## go vet, and fail if any file needs gofmt.
	go vet $(PKGS)
	@unformatted="$$(gofmt -l .)"; if [[ -n "$$unformatted" ]]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi

.PHONY: bench
bench: ## Run the benchmarks (no tests).
	go test -run '^$$' -bench . -benchmem -timeout 60m $(PKGS)

.PHONY: fuzz
fuzz: ## Run each fuzz target in ./events for FUZZTIME (default 30s).
	@set -e; targets="$$(go test -list '^Fuzz' ./events | grep '^Fuzz' || true)"; \
	if [[ -z "$$targets" ]]; then echo "no fuzz targets in ./events"; exit 1; fi; \
	for t in $$targets; do \
		echo "+ fuzz $$t for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) ./events; \
	done

.PHONY: demo
demo: ## Run the bank-transfer demo (embedded NATS and PostgreSQL).
	go run ./cmd/jetsaga demo

.PHONY: ci
ci: ## Run what CI runs (.ci/run).
	.ci/run
