# The single entry point for people and CI. `make help` lists the targets.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO       ?= go
BIN      := $(CURDIR)/bin
MODULE   := github.com/metamcp/metamcp
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -X $(MODULE)/pkg/version.Version=$(VERSION) -X $(MODULE)/pkg/version.Commit=$(COMMIT)
DATA_DIR ?= .metamcp
IMAGE    ?= metamcp:$(VERSION)

# Code generators and linters, pinned in tools/go.mod and built into ./bin.
TOOL_PKG_buf                := github.com/bufbuild/buf/cmd/buf
TOOL_PKG_protoc-gen-go      := google.golang.org/protobuf/cmd/protoc-gen-go
TOOL_PKG_protoc-gen-go-grpc := google.golang.org/grpc/cmd/protoc-gen-go-grpc
TOOL_PKG_golangci-lint      := github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: help run build test services lint proto tools helm bench pgo docker docker-stdio clean

help: ## List the targets
	@echo "Usage: make TARGET"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: build ## Build, then start `metamcp dev` (state in DATA_DIR=.metamcp; flags in ARGS='--http-listen 127.0.0.1:8080'; needs only Go)
	$(BIN)/metamcp dev --data-dir $(DATA_DIR) $(ARGS)

build: ## Build metamcp and mmctl into ./bin, stamped with the version
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/metamcp ./cmd/mmctl

test: services $(BIN)/helm ## Start Postgres and Redis if needed, build helm if needed, then go vet and every test with -race
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

services: ## Make sure Postgres, Redis, docker-compose and node are there and running
	scripts/ensure-services.sh

lint: $(BIN)/golangci-lint ## gofmt check, go vet, golangci-lint, and a build for macOS and Windows
	@unformatted=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(BIN)/golangci-lint run ./...
	GOOS=darwin $(GO) build ./...
	GOOS=windows $(GO) build ./...

proto: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Lint the .proto files and regenerate the Go code
	PATH="$(BIN):$$PATH" buf lint
	PATH="$(BIN):$$PATH" buf generate

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/golangci-lint ## Build the pinned generators and linters into ./bin

$(BIN)/%: tools/go.mod tools/go.sum
	cd tools && GOBIN=$(BIN) $(GO) install $(TOOL_PKG_$*)

# helm, for the chart's test (deploy/helm): a module of its own, so that its
# Kubernetes dependencies never move the other tools' versions. The first
# build takes about 3 minutes of CPU.
$(BIN)/helm: tools/helm/go.mod tools/helm/go.sum
	cd tools/helm && GOBIN=$(BIN) $(GO) install helm.sh/helm/v4/cmd/helm

helm: $(BIN)/helm ## Lint and render the Helm chart (deploy/helm/metamcp) with the pinned helm
	$(BIN)/helm lint deploy/helm/metamcp --set postgres.bundled.enabled=true --set redis.bundled.enabled=true
	$(BIN)/helm template metamcp deploy/helm/metamcp --set postgres.bundled.enabled=true --set redis.bundled.enabled=true >/dev/null

bench: ## Run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

PGO_DIR ?= $(CURDIR)/.pgo

pgo: ## Regenerate cmd/metamcp/default.pgo (profile-guided optimization): CPU profiles of the data plane under the benchmark load, 32 session and 32 stateless clients, merged
	rm -rf $(PGO_DIR) && mkdir -p $(PGO_DIR)
	$(GO) test -run '^$$' -bench '^BenchmarkCPUPerCall$$/^(session|stateless)$$/^clients=32$$' -benchtime 1x -timeout 30m ./test/bench/ -dpprofile=$(PGO_DIR) -dpprofilesecs=30
	$(GO) tool pprof -proto $(PGO_DIR)/*.pprof > cmd/metamcp/default.pgo
	rm -rf $(PGO_DIR)

docker: ## Build the container image (IMAGE=metamcp:VERSION)
	docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

docker-stdio: ## Build the image with Node (npx) and uv (uvx) for stdio servers (IMAGE=metamcp:VERSION, tagged -stdio)
	docker build -f deploy/Dockerfile --target stdio --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE)-stdio .

clean: ## Remove built binaries (not the tools in ./bin) and dist/
	rm -rf $(BIN)/metamcp $(BIN)/mmctl dist
