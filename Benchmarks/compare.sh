#!/usr/bin/env bash
# `make bench-compare`: the same workloads against Postduif and NATS
# JetStream, in turns (A B A B ...), on this machine, with matched
# durability: Postduif acknowledges on write (`--durability none`) and
# Debian's nats-server 2.9.10 acknowledges once a message is written to the
# operating system. Prints each pair's ratio and the median; writes JSON
# results and HTML reports to OUT.
#
#   PAIRS=3 SECONDS_PER_RUN=10 PRODUCERS=2 OUT=bench-results BENCH_DIR=/tmp Benchmarks/compare.sh
#
# MODE=r3 runs replication factor 3 instead: a local Postduif cluster
# (Deploy/cluster/local-cluster.sh, `replicated` durability) against a
# three-node JetStream cluster (R3).
#
# First a closed-loop produce (peak throughput), then e2e at half of NATS's
# median peak (E2E_RATE overrides); WORKLOADS="produce e2e consume chat"
# adds a consume from the start (CONSUME_COUNT messages) and the chat
# workload at CHAT_RATE messages/s. Starts both servers itself on free
# loopback ports and stops exactly those processes.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
PRODUCERS=${PRODUCERS:-2}
OUT=${OUT:-bench-results}
BENCH_DIR=${BENCH_DIR:-/tmp}
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

data=$(mktemp -d "$BENCH_DIR/postduif-compare-XXXXXX")
nats_state="$data-nats"
kafka_port=$(free_port)
http_port=$(free_port)
nats_port=$(free_port)
postduif_pid=""

cleanup() {
    [ -n "$postduif_pid" ] && kill "$postduif_pid" 2>/dev/null && wait "$postduif_pid" 2>/dev/null || true
    Benchmarks/peers/nats/nats.sh stop "$nats_state" || true
    rm -rf "$data"
}
trap cleanup EXIT

MODE=${MODE:-single}
replicas=1
if [ "$MODE" = r3 ]; then
    # Replication factor 3: a local Postduif cluster (etcd, three brokers,
    # `replicated` durability) against a three-node JetStream cluster (R3).
    replicas=3
    cluster_env=(ETCD_PORT=$(free_port) KAFKA_PORT_BASE=$(python3 -c 'import random; print(random.randint(20000, 30000))') HTTP_PORT_BASE=$(python3 -c 'import random; print(random.randint(30001, 40000))'))
    env "${cluster_env[@]}" BROKER_ARGS="--durability replicated --default-partitions 8 --log-level warning" \
        Deploy/cluster/local-cluster.sh start "$data/cluster"
    kafka_port=$(cut -d, -f1 "$data/cluster/bootstrap" | cut -d: -f2)
    Benchmarks/peers/nats/nats.sh start cluster "$nats_state"
    nats_port=4222
    cleanup_cluster() { env "${cluster_env[@]}" Deploy/cluster/local-cluster.sh stop "$data/cluster" || true; }
    trap 'cleanup_cluster; cleanup' EXIT
else
    .build/release/postduif serve --port "$kafka_port" --http-port "$http_port" --data "$data/store" \
        --durability none --default-partitions 8 --log-level warning &
    postduif_pid=$!
    NATS_PORT=$nats_port Benchmarks/peers/nats/nats.sh start single "$nats_state"
fi
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$kafka_port") 2>/dev/null && break; sleep 0.1; done

common=(--a "kafka://127.0.0.1:$kafka_port" --b "nats://127.0.0.1:$nats_port" --pairs "$PAIRS"
        --seconds "$SECONDS_PER_RUN" --producers "$PRODUCERS" --replicas "$replicas")

WORKLOADS=${WORKLOADS:-produce e2e}

echo "== produce, closed loop, 1 KiB messages over 10,000 conversations, acks all"
.build/release/postduif-bench compare produce "${common[@]}" --json "$OUT/produce.json" --html "$OUT/produce.html"

if [ -z "${E2E_RATE:-}" ]; then
    E2E_RATE=$(python3 - "$OUT/produce.json" <<'PY'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
nats = [r["figures"]["totals"]["acknowledged"] / r["figures"]["seconds"] for r in results if r["label"].startswith("nats")]
print(int(statistics.median(nats) / 2))
PY
)
fi
# The produce phase leaves gigabytes of both servers' data in the page cache;
# the kernel writing it back took CPU from whichever e2e run came next.
# Each later workload starts once that data is on disk.
settle() { sync; }
if [[ " $WORKLOADS " == *" e2e "* ]]; then
    settle
    echo "== e2e at $E2E_RATE msgs/s (half of NATS JetStream's median peak), latency from intended send to receipt"
    .build/release/postduif-bench compare e2e "${common[@]}" --rate "$E2E_RATE" --json "$OUT/e2e.json" --html "$OUT/e2e.html"
fi
if [[ " $WORKLOADS " == *" consume "* ]]; then
    settle
    echo "== consume from the start of a topic filled with ${CONSUME_COUNT:-1000000} messages"
    .build/release/postduif-bench compare consume "${common[@]}" --count "${CONSUME_COUNT:-1000000}" --stream consume \
        --json "$OUT/consume.json" --html "$OUT/consume.html"
fi
if [[ " $WORKLOADS " == *" chat "* ]]; then
    settle
    echo "== chat: ${CHAT_RATE:-5000} messages/s over 10,000 rooms (Zipf sizes up to 500, 20% online)"
    .build/release/postduif-bench compare chat "${common[@]}" --rate "${CHAT_RATE:-5000}" --stream conversations \
        --json "$OUT/chat.json" --html "$OUT/chat.html"
fi
echo "reports in $OUT"
