# flotta-device-worker build, test and packaging entry points.
SHELL := /bin/bash
GO ?= go
export CGO_ENABLED ?= 0
# Build tags that let the podman v4 bindings compile without cgo libraries.
PODMAN_TAGS := remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp
# The version the binaries print (device-worker --version, flotta-sync version):
# the spec's Version; the RPM's %build stamps Version-Release the same way.
VERSION := $(shell sed -n 's/^Version:[[:space:]]*//p' flotta-device-worker.spec)
GOFLAGS_BUILD := -trimpath -tags "$(PODMAN_TAGS)"
LDFLAGS_VERSION := -X main.version=$(VERSION)
BIN := $(CURDIR)/bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
VERSITYGW_VERSION := v1.8.0
# toxiproxy: the link the edge bench compares on (bench/edge.go); a test tool only.
TOXIPROXY_VERSION := v2.12.0
# deadcode (golang.org/x/tools) reports functions no main or test reaches.
DEADCODE_VERSION := v0.52.0
# MinIO for the S3 matrix, notification and fleet tests (AGPL: a test tool only, never linked).
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c

CMDS := $(notdir $(wildcard cmd/*))

.PHONY: all build demo test test-unit test-race lint proto proto-check tools versitygw minio toxiproxy bench bench-fleet bench-edge clean man completions
.PHONY: rpm-tarball rpm install uninstall clean-rpm

all: build

## build: compile every binary under cmd/ into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build $(GOFLAGS_BUILD) -ldflags "$(LDFLAGS_VERSION)" -o $(BIN)/ ./cmd/...

## man: flotta-sync's man pages (generated from its commands and flags) into bin/man/man1
man: build
	rm -rf $(BIN)/man/man1
	$(BIN)/flotta-sync gen-man $(BIN)/man/man1

## completions: flotta-sync's bash, zsh and fish completion scripts into bin/completions
completions: build
	@mkdir -p $(BIN)/completions
	$(BIN)/flotta-sync completion bash > $(BIN)/completions/flotta-sync.bash
	$(BIN)/flotta-sync completion zsh > $(BIN)/completions/_flotta-sync
	$(BIN)/flotta-sync completion fish > $(BIN)/completions/flotta-sync.fish

## demo: one device end to end on this machine (S3, podman, dispatcher, worker)
DEMO_FLAGS ?=
demo: build versitygw
	$(BIN)/flotta-demo $(DEMO_FLAGS)

## test: the full test suite (needs versitygw in bin/ and podman; see README)
test: build
	$(GO) test $(GOFLAGS_BUILD) -count=1 -timeout 45m ./...

## test-unit: tests that need no external service
test-unit:
	$(GO) test $(GOFLAGS_BUILD) -count=1 -short ./...

## test-race: the sync engine and the worker under the race detector (needs cgo: gcc)
test-race:
	CGO_ENABLED=1 $(GO) test $(GOFLAGS_BUILD) -race -count=1 -timeout 20m ./sync/... ./worker/...

## lint: gofmt, go vet and deadcode must be clean, and no build output is tracked
lint:
	@bash .ci/check-tracked
	@python3 .ci/check-links
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(GOFLAGS_BUILD) ./...
	@# Example functions are documentation that tests compile but may not run.
	@out=$$($(GO) run golang.org/x/tools/cmd/deadcode@$(DEADCODE_VERSION) -test -tags "$(PODMAN_TAGS)" ./...) || exit 1; \
		out=$$(printf '%s\n' "$$out" | grep -Ev '_test\.go:[0-9]+:[0-9]+: unreachable func: Example' || true); \
		if [ -n "$$out" ]; then echo "unreachable code (deadcode -test): remove it"; echo "$$out"; exit 1; fi

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

## toxiproxy: the network simulator the edge bench runs beside fault/linksim (bin/toxiproxy-server)
toxiproxy: $(BIN)/toxiproxy-server
$(BIN)/toxiproxy-server:
	@mkdir -p $(BIN)
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	GOBIN=$$tmp $(GO) install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION); \
	mv $$tmp/server $(BIN)/toxiproxy-server

## minio: MinIO for the tests (a long build), both from the pinned module in one step so
## that the second build reuses the first one's packages:
##   bin/minio       MinIO as released (its notification stream sends nothing until 4 KiB
##                   pile up: upstream PR 21651 dropped Flush), the matrix's MinIO
##   bin/minio-push  the same plus .ci/minio-flush.patch, for the push-ingress tests only: it
##                   stands in for the releases before PR 21651, which the module proxy refuses
minio: $(BIN)/minio $(BIN)/minio-push
$(BIN)/minio $(BIN)/minio-push &: .ci/minio-flush.patch
	@mkdir -p $(BIN)
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	src=$$(cd "$$tmp" && $(GO) mod download -json github.com/minio/minio@$(MINIO_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	test -d "$$src"; cp -r "$$src" "$$tmp/minio"; chmod -R u+w "$$tmp/minio"; \
	cd "$$tmp/minio"; \
	$(GO) build -trimpath -o $(BIN)/minio.tmp .; \
	git apply $(CURDIR)/.ci/minio-flush.patch; \
	$(GO) build -trimpath -o $(BIN)/minio-push.tmp .; \
	mv $(BIN)/minio.tmp $(BIN)/minio; mv $(BIN)/minio-push.tmp $(BIN)/minio-push

## bench: flotta-sync against rclone, aws s3 sync and a raw minio-go loop (see bench/README.md)
BENCH_FLAGS ?=
bench: build versitygw
	$(GO) run ./bench -repo $(CURDIR) -out bench/results/$$(date -u +%Y%m%d-%H%M%S).txt $(BENCH_FLAGS)

## bench-fleet: 200 simulated devices (the real engine) against one MinIO, and a model of the original agent (see bench/README.md)
bench-fleet: minio
	$(GO) run ./bench fleet -repo $(CURDIR) -out bench/results/$$(date -u +%Y%m%d-%H%M%S)-fleet.txt $(FLEET_FLAGS)

## bench-edge: flotta-sync against rclone through a slow, long, buffering link (toxiproxy and fault/linksim), and pushes under resets
bench-edge: build versitygw toxiproxy
	$(GO) run ./bench edge -repo $(CURDIR) -out bench/results/$$(date -u +%Y%m%d-%H%M%S)-edge.txt $(EDGE_FLAGS)

clean:
	rm -rf $(BIN)/device-worker $(BIN)/flotta-sync $(BIN)/devdispatcher

# ---- packaging (flotta-device-worker.spec, packaging/) ----
SPEC := flotta-device-worker.spec
RPM_NAME := flotta-device-worker
RPM_VERSION := $(VERSION)
# What goes into the tarball: a committed tree (uncommitted changes are not packaged).
RPM_REF ?= HEAD
DIST := $(CURDIR)/dist
RPM_TARBALL := $(DIST)/$(RPM_NAME)-$(RPM_VERSION).tar.gz
RPM_TOPDIR := $(CURDIR)/rpmbuild
RPMBUILD_FLAGS ?=
GO_CMD_PATH = $(shell command -v $(GO))

## rpm-tarball: dist/flotta-device-worker-<version>.tar.gz = git archive $(RPM_REF) + vendor/
rpm-tarball:
	@git cat-file -e $(RPM_REF):cmd/device-worker 2>/dev/null || { echo "rpm-tarball: cmd/device-worker is not in $(RPM_REF) (the tarball packages committed files only)"; exit 1; }
	rm -rf $(DIST)/$(RPM_NAME)-$(RPM_VERSION) $(RPM_TARBALL)
	@mkdir -p $(DIST)/$(RPM_NAME)-$(RPM_VERSION)
	git archive --format=tar $(RPM_REF) | tar -x -C $(DIST)/$(RPM_NAME)-$(RPM_VERSION)
	cd $(DIST)/$(RPM_NAME)-$(RPM_VERSION) && $(GO) mod vendor
	tar -C $(DIST) --sort=name --owner=0 --group=0 --numeric-owner \
		--mtime="@$$(git log -1 --format=%ct $(RPM_REF))" \
		-czf $(RPM_TARBALL) $(RPM_NAME)-$(RPM_VERSION)
	rm -rf $(DIST)/$(RPM_NAME)-$(RPM_VERSION)
	@echo "$(RPM_TARBALL)"

## rpm: binary and source RPMs into rpmbuild/{RPMS,SRPMS} (--nodeps: Go is not an rpm on Debian)
rpm: rpm-tarball
	@mkdir -p $(RPM_TOPDIR)
	rpmbuild -ba --nodeps \
		--define "_topdir $(RPM_TOPDIR)" \
		--define "_sourcedir $(DIST)" \
		--define "gobin $(GO_CMD_PATH)" \
		$(RPMBUILD_FLAGS) $(SPEC)

# install/uninstall lay out the same files as the RPM. The data dir is left
# to tmpfiles.d (created at boot, or now when installing to the live system).
DESTDIR ?=
PREFIX ?= /usr
BINDIR ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec
SYSCONFDIR ?= /etc
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
UNITDIR ?= $(PREFIX)/lib/systemd/system
WORKER_BIN := $(LIBEXECDIR)/yggdrasil/device-worker
SYNC_BIN := $(BINDIR)/flotta-sync
WORKER_TOML := $(SYSCONFDIR)/yggdrasil/workers/device.toml
TMPFILES_CONF := $(TMPFILESDIR)/$(RPM_NAME).conf
MAN1DIR ?= $(PREFIX)/share/man/man1
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
# The podman.socket drop-in, for both names of yggd's unit (see the spec).
YGG_UNITS := yggd.service yggdrasil.service
DROPINS := $(foreach u,$(YGG_UNITS),$(UNITDIR)/$(u).d/$(RPM_NAME).conf)

## install: device-worker, flotta-sync with its man pages and bash completion, the worker toml,
## tmpfiles.d conf and yggd's podman.socket drop-ins under DESTDIR/PREFIX
install: build man completions
	install -D -m 0755 $(BIN)/device-worker $(DESTDIR)$(WORKER_BIN)
	install -D -m 0755 $(BIN)/flotta-sync $(DESTDIR)$(SYNC_BIN)
	install -d $(DESTDIR)$(MAN1DIR) && install -m 0644 $(BIN)/man/man1/*.1 $(DESTDIR)$(MAN1DIR)/
	install -D -m 0644 $(BIN)/completions/flotta-sync.bash $(DESTDIR)$(BASHCOMPDIR)/flotta-sync
	install -D -m 0644 packaging/$(RPM_NAME).tmpfiles.conf $(DESTDIR)$(TMPFILES_CONF)
	for d in $(DROPINS); do install -D -m 0644 packaging/$(RPM_NAME).yggd-dropin.conf $(DESTDIR)$$d || exit 1; done
	@# The toml's exec must name the installed binary; like %config(noreplace),
	@# an edited toml is kept and the new one written next to it as .new.
	@mkdir -p $(DESTDIR)$(SYSCONFDIR)/yggdrasil/workers
	sed 's|^exec = .*|exec = "$(WORKER_BIN)"|' packaging/device.toml > $(DESTDIR)$(WORKER_TOML).tmp
	@if [ -e $(DESTDIR)$(WORKER_TOML) ] && ! cmp -s $(DESTDIR)$(WORKER_TOML) $(DESTDIR)$(WORKER_TOML).tmp; then \
		mv $(DESTDIR)$(WORKER_TOML).tmp $(DESTDIR)$(WORKER_TOML).new; chmod 0644 $(DESTDIR)$(WORKER_TOML).new; \
		echo "install: kept $(DESTDIR)$(WORKER_TOML); new version in $(DESTDIR)$(WORKER_TOML).new"; \
	else \
		mv $(DESTDIR)$(WORKER_TOML).tmp $(DESTDIR)$(WORKER_TOML); chmod 0644 $(DESTDIR)$(WORKER_TOML); \
	fi
	@if [ -z "$(DESTDIR)" ] && command -v systemd-tmpfiles >/dev/null; then \
		echo "systemd-tmpfiles --create $(TMPFILES_CONF)"; systemd-tmpfiles --create $(TMPFILES_CONF) || true; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		echo "systemctl daemon-reload (the drop-ins); restart yggd to run the new worker"; systemctl daemon-reload || true; \
	fi

## uninstall: remove what install laid out; the data dir (/var/local/yggdrasil/device) is kept
uninstall:
	rm -f $(DESTDIR)$(WORKER_BIN) $(DESTDIR)$(SYNC_BIN) $(DESTDIR)$(WORKER_TOML) $(DESTDIR)$(WORKER_TOML).new $(DESTDIR)$(TMPFILES_CONF)
	rm -f $(addprefix $(DESTDIR),$(DROPINS))
	-rmdir $(foreach u,$(YGG_UNITS),$(DESTDIR)$(UNITDIR)/$(u).d) 2>/dev/null
	rm -f $(DESTDIR)$(MAN1DIR)/flotta-sync*.1 $(DESTDIR)$(BASHCOMPDIR)/flotta-sync

## clean-rpm: remove rpmbuild/ and dist/
clean-rpm:
	rm -rf $(RPM_TOPDIR) $(DIST)
