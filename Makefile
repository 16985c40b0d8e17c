# Everything starts from a fresh Debian machine as root: each target installs
# what it needs first (see deps).

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
export CGO_ENABLED := 0

GO          ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The whole suite, e2e included, is sized to finish in well under 20 minutes
# on 2 cores; the timeout only catches a hang.
TEST_TIMEOUT ?= 25m
# Where `make bench` puts its volume and its ext4 directory: one disk, so the
# ratios compare the filesystems, not the disks.
BENCH_DIR ?= /var/tmp/ohm-bench
BENCH_ROOTDISK_DIR ?= /var/tmp/ohm-rootbench

# Debian packages the code and the suites use: fuse3 (fusermount3, /dev/fuse),
# runc and debootstrap (computers and templates), e2fsprogs (root disk images),
# busybox-static (the minimal template), util-linux (mount, losetup, unshare),
# iproute2 (computer networking), python3 (the acceptance script), git (the
# bench's real tree), procps and psmisc (process tools in tests), python3-venv
# and nodejs (the SDKs' suites in tests/sdk: pip installs the Python SDK into
# a virtual environment, node runs the TypeScript one), btrfs-progs and
# xfsprogs (kernel filesystems on ohmfs device images: internal/disk,
# tests/crash), chromium (the real browser of the preview URL test,
# internal/api: headless, a screenshot).
APT_PACKAGES := fuse3 runc debootstrap e2fsprogs busybox-static util-linux \
	iproute2 python3 git procps psmisc ca-certificates coreutils mount kmod slirp4netns \
	python3-venv nodejs btrfs-progs xfsprogs chromium

.PHONY: all deps deps-apt deps-s3 deps-sdk build test demo bench bench-rootdisk clean

all: build

# The S3-compatible server the ohmfs S3 tests run on loopback (versitygw,
# posix backend), built from the Go module proxy: about 3 minutes on a fresh
# module and build cache, nothing when already installed.
VERSITYGW := github.com/versity/versitygw/cmd/versitygw@v1.8.0

deps-s3:
	@command -v versitygw >/dev/null || [ -x "$$($(GO) env GOPATH)/bin/versitygw" ] || \
		{ echo "deps: installing versitygw"; $(GO) install $(VERSITYGW); }

# The TypeScript SDK's build and test dependencies (TypeScript, the types of
# Node.js, and its runtime ones, ws and tar) from npm, as package-lock.json
# pins them; again only when the lock file changed. npm itself comes with
# NodeSource's nodejs and is a package of its own in Debian.
SDK_TS := sdk/typescript

$(SDK_TS)/node_modules/.installed: $(SDK_TS)/package-lock.json | deps-apt
	@command -v npm >/dev/null || { echo "deps: installing npm"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm; }
	cd $(SDK_TS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

deps-sdk: $(SDK_TS)/node_modules/.installed

deps: deps-s3 deps-sdk

deps-apt:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@[ -e /dev/fuse ] || modprobe fuse || true
	@[ -x /usr/local/go/bin/go ] || command -v go >/dev/null || { echo "deps: no Go toolchain at /usr/local/go"; exit 1; }

build:
	$(GO) build -o bin/ohm ./cmd/ohm

test: deps build
	@OHM_BIN=$(CURDIR)/bin/ohm TEST_TIMEOUT=$(TEST_TIMEOUT) STATICCHECK=$(STATICCHECK) scripts/test.sh

demo: deps build
	@OHM_BIN=$(CURDIR)/bin/ohm scripts/demo.sh

bench: deps build
	bin/ohm bench $(BENCH_DIR) --module $(CURDIR) --out docs/benchmarks.md

# Package work (dpkg -i, pip) on a root disk in the volume against a local
# image, in one run; its numbers go by hand into docs/benchmarks.md's
# "Root disk" section (below the marker that `make bench` keeps).
bench-rootdisk: deps build
	scripts/bench-rootdisk.sh bin/ohm $(BENCH_ROOTDISK_DIR)

clean:
	rm -rf bin
