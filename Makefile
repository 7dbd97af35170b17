# flotta-device-worker build, test and packaging entry points.
SHELL := /bin/bash
GO ?= go
export CGO_ENABLED ?= 0
# Build tags that let the podman v4 bindings compile without cgo libraries.
PODMAN_TAGS := remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp
GOFLAGS_BUILD := -trimpath -tags "$(PODMAN_TAGS)"
BIN := $(CURDIR)/bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
VERSITYGW_VERSION := v1.8.0

CMDS := $(notdir $(wildcard cmd/*))

.PHONY: all build test test-unit lint proto proto-check tools versitygw bench clean

all: build

## build: compile every binary under cmd/ into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ ./cmd/...

## test: the full test suite (needs versitygw in bin/ and podman; see README)
test: build
	$(GO) test $(GOFLAGS_BUILD) -count=1 -timeout 45m ./...

## test-unit: tests that need no external service
test-unit:
	$(GO) test $(GOFLAGS_BUILD) -count=1 -short ./...

## lint: gofmt and go vet must be clean
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(GOFLAGS_BUILD) ./...

## tools: pinned code generators into bin/
tools:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

## proto: regenerate proto/*.pb.go with the pinned plugins
proto: tools
	protoc -I proto \
		--plugin=protoc-gen-go=$(BIN)/protoc-gen-go --go_out=proto --go_opt=paths=source_relative \
		--plugin=protoc-gen-go-grpc=$(BIN)/protoc-gen-go-grpc --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/yggdrasil.proto

## proto-check: fail when the committed generated code is stale
proto-check: proto
	@git diff --exit-code -- proto/ || { echo "proto/: generated code is stale; run 'make proto' and commit"; exit 1; }

## versitygw: the S3 server the tests run on loopback
versitygw: $(BIN)/versitygw
$(BIN)/versitygw:
	GOBIN=$(BIN) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

## bench: flotta-sync against rclone, aws s3 sync and a raw minio-go loop (see README)
BENCH_FLAGS ?=
bench: build versitygw
	$(GO) run ./bench -repo $(CURDIR) -out bench/results/$$(date -u +%Y%m%d-%H%M%S).txt $(BENCH_FLAGS)

clean:
	rm -rf $(BIN)/device-worker $(BIN)/flotta-sync $(BIN)/devdispatcher
