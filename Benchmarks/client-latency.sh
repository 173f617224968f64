#!/usr/bin/env bash
# `make bench-compare`, second part: acknowledgement latency as the clients
# services use see it. librdkafka (Debian's librdkafka-dev, through
# Benchmarks/clients/rdkafka-bench.c) against Postduif, and the NATS C client
# (Debian's libnats-dev, Benchmarks/clients/nats-bench.c) against
# JetStream, in turns (Postduif, JetStream, Postduif, ...), phase by phase.
#
#   PAIRS=3 SECONDS_PER_RUN=10 OUT=bench-results BENCH_DIR=/tmp Benchmarks/client-latency.sh
#
# One idempotent producer, acks=all, 1 KiB values keyed over 10,000
# conversations, a topic (stream) of 4 partitions, latency = the produce
# call to its acknowledgement. First each side's peak (closed loop); then
# paced phases at 2,000 and 20,000 msgs/s and at half JetStream's median
# peak, librdkafka's linger.ms 0 and 5, Postduif in `none` and `fsync`
# durability; last the end-to-end case at half JetStream's peak: the
# producer's messages to a librdkafka consumer in a group, against a
# JetStream push consumer.
#
# MODE=r3: a local 3-broker cluster (`replicated` durability, replication
# factor 3) against a 3-node JetStream cluster with an R3 stream, paced at
# 10,000 msgs/s, linger 0 and 5, after the peak.
#
# DURABILITIES, RATES, LINGERS override the phases (RATES may say `half`).
# Each Postduif run also keeps librdkafka's own statistics beside its JSON
# (`…-stats.jsonl`; read with Benchmarks/clients/rdkafka-stats.py): the
# client's round trip and queueing, to set against the broker's time.
# Starts every server itself on free loopback ports, stops exactly those.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
OUT=${OUT:-bench-results}
BENCH_DIR=${BENCH_DIR:-/tmp}
MODE=${MODE:-single}
BIN=${BIN:-.build/release}
CLIENTS=${CLIENTS:-$BENCH_DIR/postduif-clients}
mkdir -p "$OUT" "$CLIENTS"

# The two clients, built with Debian's compiler against Debian's libraries.
gcc -O2 -Wall -o "$CLIENTS/rdkafka-bench" Benchmarks/clients/rdkafka-bench.c -lrdkafka -lpthread
gcc -O2 -Wall -o "$CLIENTS/nats-bench" Benchmarks/clients/nats-bench.c -lnats

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

work=$(mktemp -d "$BENCH_DIR/postduif-latency-XXXXXX")
postduif_pids=""
postduif_brokers=""
cluster_env=()
stop_postduif() {
    if [ "$MODE" = r3 ]; then
        [ -n "$postduif_brokers" ] && env "${cluster_env[@]}" Deploy/cluster/local-cluster.sh stop "$work/cluster" > /dev/null || true
    else
        for pid in $postduif_pids; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    fi
    postduif_pids=""
    postduif_brokers=""
}
start_postduif() {  # durability
    stop_postduif
    rm -rf "$work/postduif" "$work/cluster"
    if [ "$MODE" = r3 ]; then
        cluster_env=(ETCD_PORT=$(free_port) KAFKA_PORT_BASE=$(python3 -c 'import random; print(random.randint(20000, 30000))') HTTP_PORT_BASE=$(python3 -c 'import random; print(random.randint(30001, 40000))'))
        env "${cluster_env[@]}" BINARY="$BIN/postduif" BROKER_ARGS="--durability replicated --log-level warning" \
            Deploy/cluster/local-cluster.sh start "$work/cluster" > /dev/null
        postduif_brokers=$(cat "$work/cluster/bootstrap")
        postduif_pids=$(cat "$work"/cluster/broker-*/pid | tr '\n' ' ')
    else
        local port http
        port=$(free_port); http=$(free_port)
        "$BIN/postduif" serve --port "$port" --http-port "$http" --data "$work/postduif" --durability "$1" --log-level warning > "$work/postduif.log" 2>&1 &
        postduif_pids=$!
        wait_port "$port"
        postduif_brokers="127.0.0.1:$port"
    fi
}
nats_dir="$work/nats"
nats_pids=""
start_nats() {
    if [ "$MODE" = r3 ]; then
        Benchmarks/peers/nats/nats.sh start cluster "$nats_dir" > /dev/null
        nats_url=nats://127.0.0.1:4222
    else
        local port
        port=$(free_port)
        NATS_PORT=$port Benchmarks/peers/nats/nats.sh start single "$nats_dir" > /dev/null
        nats_url=nats://127.0.0.1:$port
    fi
    nats_pids=$(cat "$nats_dir"/*/pid | tr '\n' ' ')
}
trap 'stop_postduif; Benchmarks/peers/nats/nats.sh stop "$nats_dir" > /dev/null 2>&1 || true; rm -rf "$work"' EXIT

replicas=1
[ "$MODE" = r3 ] && replicas=3
run=0
kafka_run() {  # name rate linger [--e2e]
    local name=$1 rate=$2 linger=$3; shift 3
    run=$((run + 1))
    local args=(--brokers "$postduif_brokers" --topic "latency-$run" --partitions 4 --replicas "$replicas" --rate "$rate" --linger-ms "$linger"
                --seconds "$SECONDS_PER_RUN" --label "postduif $name" --json "$OUT/latency-$name-postduif-$run.json"
                --stats "$OUT/latency-$name-postduif-$run-stats.jsonl")
    for pid in $postduif_pids; do args+=(--server-pid "$pid"); done
    "$CLIENTS/rdkafka-bench" "${args[@]}" "$@" || true
}
nats_run() {  # name rate [--e2e]
    local name=$1 rate=$2; shift 2
    run=$((run + 1))
    local args=(--url "$nats_url" --stream "latency$run" --replicas "$replicas" --rate "$rate"
                --seconds "$SECONDS_PER_RUN" --label "jetstream $name" --json "$OUT/latency-$name-jetstream-$run.json")
    for pid in $nats_pids; do args+=(--server-pid "$pid"); done
    "$CLIENTS/nats-bench" "${args[@]}" "$@" || true
}
# Phase NAME: PAIRS turns of Postduif then JetStream.
phase() {  # name rate linger [--e2e]
    local name=$1 rate=$2 linger=$3; shift 3
    echo "== $name"
    for _ in $(seq 1 "$PAIRS"); do
        kafka_run "$name" "$rate" "$linger" "$@"
        nats_run "$name" "$rate" "$@"
    done
}

start_nats
if [ "$MODE" = r3 ]; then
    DURABILITIES=${DURABILITIES:-replicated}
    RATES=${RATES:-10000}
else
    DURABILITIES=${DURABILITIES:-none fsync}
    RATES=${RATES:-2000 20000 half}
fi
LINGERS=${LINGERS:-0 5}

first=${DURABILITIES%% *}
start_postduif "$first"
phase "peak-$first-linger5" 0 5
half=$(python3 - "$OUT" "peak-$first-linger5" <<'PY'
import glob, json, statistics, sys
runs = [json.load(open(f)) for f in glob.glob("%s/latency-%s-jetstream-*.json" % (sys.argv[1], sys.argv[2]))]
print(int(statistics.median(r["sendsPerSecond"] for r in runs) / 2) if runs else 10000)
PY
)
echo "   JetStream's median peak: $((half * 2)) msgs/s; half: $half"
# The peak phase leaves gigabytes in the page cache; the kernel writing
# them back disturbed whichever paced run came next (both servers' p99 went
# to tens of milliseconds). Each later phase starts once they are on disk.
settle() { sync; }
for durability in $DURABILITIES; do
    settle
    start_postduif "$durability"
    for rate in $RATES; do
        [ "$rate" = half ] && rate=$half
        for linger in $LINGERS; do
            phase "$durability-$rate-linger$linger" "$rate" "$linger"
        done
    done
    # Each durability's own peak (the first's was taken above).
    if [ "$durability" != "$first" ]; then phase "peak-$durability-linger5" 0 5; fi
done
settle
start_postduif "$first"
phase "e2e-$first-$half-linger5" "$half" 5 --e2e
stop_postduif

python3 - "$OUT" <<'PY'
import glob, json, re, statistics, sys
out = sys.argv[1]
phases = {}
for path in sorted(glob.glob("%s/latency-*.json" % out)):
    match = re.match(r".*/latency-(.+)-(postduif|jetstream)-(\d+)\.json$", path)
    phases.setdefault(match.group(1), {}).setdefault(match.group(2), []).append(json.load(open(path)))
def med(runs, field, key):
    values = [r[field][key] for r in runs if field in r]
    return statistics.median(values) if values else float("nan")
print("\n| phase | Postduif ack p50 / p99 / p99.9 ms | JetStream ack p50 / p99 / p99.9 ms | p99 ratio | Postduif / JetStream msgs/s | server CPU µs/msg P / J |")
print("|---|---|---|---|---|---|")
for name, sides in phases.items():
    p, j = sides.get("postduif", []), sides.get("jetstream", [])
    if not p or not j:
        continue
    field = "e2eMilliseconds" if name.startswith("e2e") else "ackMilliseconds"
    pp = [med(p, field, k) for k in ("p50", "p99", "p99.9")]
    jj = [med(j, field, k) for k in ("p50", "p99", "p99.9")]
    rate = lambda runs: statistics.median(r["sendsPerSecond"] for r in runs)
    cpu = lambda runs: statistics.median(r["serverCPUMicrosecondsPerMessage"] for r in runs)
    print("| %s%s | %.2f / %.2f / %.2f | %.2f / %.2f / %.2f | %.2f | %.0f / %.0f | %.1f / %.1f |" % (
        name, " (end to end)" if field == "e2eMilliseconds" else "", *pp, *jj, pp[1] / jj[1] if jj[1] else float("nan"), rate(p), rate(j), cpu(p), cpu(j)))
PY
