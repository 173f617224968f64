#!/usr/bin/env bash
# Server CPU per small Produce request, as librdkafka sends them (issue
# "[2 of 8]", item 3): Benchmarks/clients/rdkafka-bench.c at RATE msgs/s,
# linger 0, one idempotent producer, acks=all, 1 KiB values over 10,000
# keys, 4 partitions, against one release broker per run in `none` mode
# (the disk is not what is measured). The broker's CPU comes from
# /proc/PID/stat, the request count from its
# postduif_requests_total{api="Produce"}.
#
#   PAIRS=3 BASELINE_BIN=/path/to/before Benchmarks/produce-cpu.sh
#
# BASELINE_BIN, a folder with another build's `postduif`, runs it in turns
# with BIN's, run for run. PERF=1 records a profile of each run's broker
# (`perf record -g`, 5 s) into OUT. Servers start on free loopback ports
# and exactly those are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-3}
RATE=${RATE:-20000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
DURABILITY=${DURABILITY:-none}
OUT=${OUT:-bench-results}
BENCH_DIR=${BENCH_DIR:-/tmp}
BIN=${BIN:-.build/release}
BASELINE_BIN=${BASELINE_BIN:-}
CLIENTS=${CLIENTS:-$BENCH_DIR/postduif-clients}
mkdir -p "$OUT" "$CLIENTS"
gcc -O2 -Wall -o "$CLIENTS/rdkafka-bench" Benchmarks/clients/rdkafka-bench.c -lrdkafka -lpthread

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
produce_requests() { curl -s "127.0.0.1:$1/metrics" | awk '/^postduif_requests_total\{api="Produce"/ { n += $2 } END { print n + 0 }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

work=$(mktemp -d "$BENCH_DIR/postduif-produce-cpu-XXXXXX")
pid=""
stop() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; pid=""; }
trap 'stop; rm -rf "$work"' EXIT

run() {  # label bin run
    local label=$1 bin=$2 n=$3
    local kafka http
    kafka=$(free_port); http=$(free_port)
    rm -rf "$work/data"
    "$bin/postduif" serve --data "$work/data" --port "$kafka" --http-port "$http" --http-proxy-port 0 \
        --durability "$DURABILITY" --log-level warning > "$work/broker.log" 2>&1 &
    pid=$!
    wait_port "$kafka"
    .venv/bin/python -c "
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({'bootstrap.servers': '127.0.0.1:$kafka'})
admin.create_topics([NewTopic('small', 4, 1)])['small'].result(30)"
    local profiler=""
    if [ "${PERF:-0}" = 1 ]; then
        (sleep 3; perf record -F 999 -g -p "$pid" -o "$OUT/produce-cpu-$label-$n.perf" -- sleep 5 > /dev/null 2>&1) &
        profiler=$!
    fi
    local ticks0 requests0 ticks1 requests1
    ticks0=$(cpu_ticks "$pid"); requests0=$(produce_requests "$http")
    "$CLIENTS/rdkafka-bench" --brokers "127.0.0.1:$kafka" --topic small --partitions 4 --rate "$RATE" \
        --seconds "$SECONDS_PER_RUN" --linger-ms 0 --json "$OUT/produce-cpu-$label-$n.json" > "$work/client.log" 2>&1 || true
    ticks1=$(cpu_ticks "$pid"); requests1=$(produce_requests "$http")
    [ -n "$profiler" ] && wait "$profiler"
    stop
    python3 - "$label" "$OUT/produce-cpu-$label-$n.json" "$((ticks1 - ticks0))" "$((requests1 - requests0))" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
label, path, ticks, requests, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
result = json.load(open(path))
seconds = ticks / hz
print(f"{label}: {requests} Produce requests, broker CPU {seconds:.2f} s, {seconds * 1e6 / max(requests, 1):.1f} us per request;"
      f" ack p50 {result['ackMilliseconds']['p50']} ms, p99 {result['ackMilliseconds']['p99']} ms")
EOF
}

for n in $(seq 1 "$PAIRS"); do
    [ -n "$BASELINE_BIN" ] && run before "$BASELINE_BIN" "$n"
    run postduif "$BIN" "$n"
done
