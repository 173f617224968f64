# Postduif: the two commands are `make run` and `make test`. Both install
# what is missing first (Debian packages through apt-get, only when dpkg says
# they are absent).
SHELL := /bin/bash
SWIFT ?= swift
# The second line is for Tests/Compat/test_desktop_clients.py: the Matrix
# desktop clients Debian ships, an X server, xdotool to drive them,
# ImageMagick and tesseract to read their screens, a keyring for nheko.
DEBIAN_PACKAGES := pkg-config librocksdb-dev liblz4-dev zlib1g-dev libsnappy-dev libzstd-dev libssl-dev fio kcat python3-venv systemd nats-server etcd-server librdkafka-dev libnats-dev libgd-dev gcc openssl \
	xvfb xdotool imagemagick tesseract-ocr nheko quaternion gnome-keyring dbus-daemon prometheus \
	mmdebstrap podman uidmap chromium chromium-driver
VENV := .venv
PYTHON ?= python3
DATA ?= ./data

.PHONY: deps build release image test lint compat fuzz run inspect bench bench-tool bench-compare bench-chat-compare bench-security bench-cleaner bench-http chaos cluster cluster-stop clean

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@# kustomize comes with kubectl; Debian's is kubernetes-client (a kubectl
	@# from elsewhere, where one is installed, serves as well).
	@command -v kubectl >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq kubernetes-client; }

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product postduif

# The OCI image (Docs/operations.md, "The image"): release binaries with the
# Swift runtime linked in, on a root file system of Debian packages made
# by mmdebstrap, imported with podman; also saved as an OCI archive.
IMAGE ?= localhost/postduif:latest
IMAGE_DIR := .build/image
# Its own build folder: the static standard library's builds do not mix
# with .build/release's.
IMAGE_BUILD := .build-image
image: deps
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path $(IMAGE_BUILD) --product postduif
	$(SWIFT) build -c release --static-swift-stdlib --scratch-path $(IMAGE_BUILD) --product postduif-bench
	mkdir -p $(IMAGE_DIR)/bin
	rm -f $(IMAGE_DIR)/rootfs.tar $(IMAGE_DIR)/postduif.oci.tar
	strip -o $(IMAGE_DIR)/bin/postduif $(IMAGE_BUILD)/release/postduif
	strip -o $(IMAGE_DIR)/bin/postduif-bench $(IMAGE_BUILD)/release/postduif-bench
	Deploy/image/build-rootfs.sh $(IMAGE_DIR)/bin $(IMAGE_DIR)/rootfs.tar
	Deploy/image/import.sh $(IMAGE_DIR)/rootfs.tar $(IMAGE)
	podman save --format oci-archive -o $(IMAGE_DIR)/postduif.oci.tar $(IMAGE)
	@echo "image $(IMAGE); OCI archive $(IMAGE_DIR)/postduif.oci.tar"

# Debug builds keep the suite fast to compile on two cores; the crash test
# needs the CrashWriter executable, which --build-tests builds alongside.
# The real Kafka clients of the compatibility suite, from PyPI, in a
# virtual environment under the repository.
$(VENV)/.installed: Tests/Compat/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r Tests/Compat/requirements.txt
	touch $@

# swift-format's rules (.swift-format); Tests/Lint/lint.sh says which fail.
lint:
	Tests/Lint/lint.sh

# The lint, unit, contract and crash tests (Swift Testing; project targets
# build with warnings as errors), a short fuzz run, then the compatibility
# suite against the freshly built broker.
test: deps $(VENV)/.installed lint
	$(SWIFT) build --build-tests
	Tests/Fuzz/run.sh $(FUZZ_SECONDS)
	$(SWIFT) test --skip-build
	$(VENV)/bin/python -m pytest -q -p no:warnings Tests/Compat

compat: deps $(VENV)/.installed
	$(SWIFT) build
	$(VENV)/bin/python -m pytest -q -p no:warnings Tests/Compat

# The record batch fuzzer: 20 seconds in `make test`, longer on request:
# `make fuzz FUZZ_SECONDS=600`.
FUZZ_SECONDS ?= 20
fuzz: deps
	Tests/Fuzz/run.sh $(FUZZ_SECONDS)

# A single node on the embedded default (127.0.0.1:9092, data in ./data,
# fsync durability, no etcd) and the chat gateway (Matrix client-server API
# on http://127.0.0.1:8008). Stop both with Ctrl-C (SIGINT) or SIGTERM.
run: release
	DATA=$(DATA) Deploy/run-local.sh

# A local cluster: etcd and three brokers on loopback ports, data in
# $(CLUSTER_DIR); `make cluster-stop` stops exactly those processes.
CLUSTER_DIR ?= /tmp/postduif-cluster
cluster: release
	Deploy/cluster/local-cluster.sh start $(CLUSTER_DIR)

cluster-stop:
	Deploy/cluster/local-cluster.sh stop $(CLUSTER_DIR)

inspect: release
	.build/release/postduif inspect --data $(DATA)

bench: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark

# The load tool, release-built: `.build/release/postduif-bench --help`.
bench-tool: deps
	$(SWIFT) build -c release --product postduif
	$(SWIFT) build -c release --product postduif-bench

# Postduif against NATS JetStream, in turns, at matched durability
# (Benchmarks/compare.sh says how; PAIRS, SECONDS_PER_RUN, E2E_RATE, OUT).
# Postduif against JetStream: first with postduif-bench (throughput, e2e),
# then as librdkafka and the NATS C client see it (Benchmarks/client-latency.sh).
bench-compare: bench-tool
	Benchmarks/compare.sh
	Benchmarks/client-latency.sh

# What TLS (SASL_SSL), SASL and the authorizer cost as librdkafka sees it
# (Benchmarks/security-compare.sh; PAIRS, SECONDS_PER_RUN, PARTS, OUT).
bench-security: deps
	$(SWIFT) build -c release --product postduif
	Benchmarks/security-compare.sh

# Retention and compaction while producing (Docs/benchmarks.md): paced at
# half the measured peak unless RATE is given; LINGER, PAIRS as there.
bench-cleaner: deps $(VENV)/.installed
	$(SWIFT) build -c release --product postduif
	$(VENV)/bin/python Benchmarks/cleaner-bench.py --rate $${RATE:-0} --linger $${LINGER:-5} --pairs $${PAIRS:-3}

# HTTP (REST Proxy v2 produce with wrk, Server-Sent Events) against the
# Kafka port in one sitting (Docs/benchmarks.md); PAIRS, BENCH_SECONDS.
bench-http: deps $(VENV)/.installed
	@command -v wrk >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; $$SUDO apt-get install -y -qq wrk; }
	$(SWIFT) build -c release --product postduif
	$(VENV)/bin/python Benchmarks/http-bench.py --pairs $${PAIRS:-3} --seconds $${BENCH_SECONDS:-5}

# The fault campaign (root, for network namespaces): ROUNDS rounds of the
# schedule SEED gives; a failing seed replays with the same SEED. JOBS
# campaigns run at once, each on a cluster of its own over its share.
chaos: deps $(VENV)/.installed
	$(SWIFT) build --product postduif
	$(VENV)/bin/python Tests/Chaos/chaos.py --rounds $${ROUNDS:-100} --seed $${SEED:-$$(date +%s)} --brokers $${BROKERS:-3} --jobs $${JOBS:-1}

clean:
	rm -rf .build

# The Matrix chat workload against Postduif (broker + gateway) and Synapse
# (from PyPI, in a virtual environment under BENCH_DIR), in turns, for
# rooms of 2, 10, 100 and 1,000 members (SIZES overrides); then a 10 MiB
# file's upload and download against the disk's own bandwidth.
bench-chat-compare: deps
	$(SWIFT) build -c release --product postduif
	$(SWIFT) build -c release --product postduif-bench
	Benchmarks/chat-compare.sh
	Benchmarks/media-bench.sh
