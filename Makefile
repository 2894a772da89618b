# attested-runner: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
PKG := github.com/attested-runner/attested-runner
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -s -w -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)
BINARIES := attested-runner jobgate attested-verify
STATICCHECK_VERSION := v0.8.2
GOBIN := $(shell $(GO) env GOPATH)/bin
FUZZTIME ?= 5s

.PHONY: all build release-verifier test test-qemu lint fuzz-smoke bench mutate demo prereqs clean

all: build

## build: static, cgo-free production binaries in bin/
build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./cmd/,$(BINARIES))

## release-verifier: attested-verify release binaries in dist/ and their SHA-256 in
## action/verifier.sha256 (commit that file, tag, then upload dist/* to the tag's
## release: the consumer action then downloads the pinned binary instead of building)
release-verifier:
	@mkdir -p dist
	@set -e; for p in linux/amd64 linux/arm64; do \
	  CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/attested-verify-$${p%/*}-$${p#*/} ./cmd/attested-verify; \
	done
	cd dist && sha256sum attested-verify-* > ../action/verifier.sha256
	@cat action/verifier.sha256

## test: the whole suite with the race detector (needs gcc, libssl-dev, swtpm: see scripts/prereqs.sh)
test: prereqs
	$(GO) test -race -count=1 -timeout 15m ./...

## test-qemu: real measured boot under QEMU + OVMF + swtpm (-accel tcg), agent in the VM
test-qemu:
	@scripts/prereqs.sh --qemu
	ATTESTED_E2E_QEMU=1 $(GO) test -count=1 -timeout 40m ./internal/imageref/ ./e2e/qemu/

## interop: keyless bundles through Sigstore's and GitHub's own programs (real Fulcio, cosign, gh), installed from the Go module proxy
.PHONY: interop interop-tools
FULCIO_VERSION := v1.8.8
COSIGN_VERSION := v2.6.5
GH_VERSION := v2.83.1
interop-tools:
	@test -x $(GOBIN)/fulcio || $(GO) install github.com/sigstore/fulcio@$(FULCIO_VERSION)
	@test -x $(GOBIN)/cosign || $(GO) install github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN_VERSION)
	@test -x $(GOBIN)/gh || scripts/go-install-module.sh github.com/cli/cli/v2 $(GH_VERSION) ./cmd/gh $(GOBIN)/gh
interop: interop-tools
	$(GO) test -count=1 -v -run 'Keyless|Cosign|GH' ./e2e/interop/

## lint: gofmt, go vet, staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN)/staticcheck ./...

## fuzz-smoke: every fuzz target for $(FUZZTIME)
fuzz-smoke:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 50x $$pkg; \
	  done; \
	done

COSIGN_VERSION := v2.6.5

## bench: benchmarks, printed as a table; BenchmarkCLIVerify compares with cosign
## (installed here, with go install, for the comparison only)
bench:
	@test -x $(GOBIN)/cosign || $(GO) install github.com/sigstore/cosign/v2/cmd/cosign@$(COSIGN_VERSION)
	@set -o pipefail; COSIGN=$(GOBIN)/cosign $(GO) test -run '^$$' -bench . -count 1 -timeout 30m ./... | tee /tmp/attested-runner-bench.txt | scripts/benchtable.sh

## mutate: mutation testing of the security checks (gremlins + check removal; an hour or more)
mutate:
	@scripts/mutate.sh

## prereqs: install the Debian packages the demo and tests need (idempotent)
prereqs:
	@scripts/prereqs.sh

## demo: the whole flow on this machine, narrated
demo: prereqs build
	@scripts/demo.sh

clean:
	rm -rf bin
