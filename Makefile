# The checks CI runs (.ci/run calls `make check`). Each target works alone.
GO        ?= go
LINT      := $(GO) tool -modfile=tools/go.mod golangci-lint
PLATFORMS := linux/amd64 linux/arm64

.PHONY: check fmt vet lint test cross build bench load

check: fmt vet lint cross test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o gateway ./cmd/gateway

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

lint:
	$(LINT) run ./...

# The README's test command.
test:
	$(GO) test -race -count=1 ./...

# Static builds for the Docker image's platforms (no Docker engine here).
cross:
	@for p in $(PLATFORMS); do \
	  echo "CGO_ENABLED=0 $$p"; \
	  CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -trimpath -o /dev/null ./cmd/gateway || exit 1; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

load:
	$(GO) run ./cmd/gwload help
