# Postduif: the two commands are `make run` and `make test`. Both install
# what is missing first (Debian packages through apt-get, only when dpkg says
# they are absent).
SHELL := /bin/bash
SWIFT ?= swift
DEBIAN_PACKAGES := pkg-config librocksdb-dev liblz4-dev zlib1g-dev libsnappy-dev libzstd-dev fio
DATA ?= ./data

.PHONY: deps build release test fuzz run inspect bench clean

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product postduif

# Debug builds keep the suite fast to compile on two cores; the crash test
# needs the CrashWriter executable, which --build-tests builds alongside.
# The fuzzer runs before the tests so that the test runner's summary is the
# last thing printed.
test: deps
	$(SWIFT) build --build-tests
	Tests/Fuzz/run.sh $(FUZZ_SECONDS)
	$(SWIFT) test --skip-build

# The record batch fuzzer: 20 seconds in `make test`, longer on request:
# `make fuzz FUZZ_SECONDS=600`.
FUZZ_SECONDS ?= 20
fuzz: deps
	Tests/Fuzz/run.sh $(FUZZ_SECONDS)

# The broker (`postduif serve`) is the next issue; until it lands this shows
# what the binary offers rather than pretending to start a server.
run: release
	.build/release/postduif --help
	@echo
	@echo "postduif serve (the Kafka broker) is not built yet; inspect a data directory with:"
	@echo "  .build/release/postduif inspect --data $(DATA)"

inspect: release
	.build/release/postduif inspect --data $(DATA)

bench: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark

clean:
	rm -rf .build
