#!/usr/bin/env bash
# `make bench-chat-compare`: the Matrix chat workload (postduif-bench
# matrix: every member long-polls /sync, one sender per room) against
# Postduif (broker + gateway, fsync durability) and Synapse (PyPI, SQLite,
# rate limits off), in turns, for rooms of each size in SIZES, ROOMS rooms
# at once (default 1; each room has its own sender). Per size:
#
#   1. closed loop (the sender sends its next message once the last is
#      acknowledged) against Synapse, then Postduif: peak messages/s,
#      deliveries/s, server CPU per delivered copy, memory;
#   2. open loop at Synapse's peak rate against Postduif, then Synapse:
#      send-to-delivery latency at that rate.
#
#   SIZES="2 10 100 1000" SECONDS_PER_RUN=10 OUT=bench-results BENCH_DIR=/tmp Benchmarks/chat-compare.sh
#
# RUNS=3 repeats each closed-loop pair (Synapse, then Postduif) three
# times and reports the median of each server's deliveries per CPU-second
# and the ratio of the medians: on a small shared machine one run moves by
# a fifth. Synapse's peak rate is then the median of its runs.
#
# One room with one sender in a closed loop leaves Postduif waiting on its
# own round trips (a message's path crosses ~10 threads, each woken from
# idle); ROOMS=20 keeps both servers busy, which is what a server's peak
# deliveries per CPU-second means. The message rate is over all rooms.
#
# GATEWAY=embedded (the default, as `make run` starts it) runs the gateway
# inside the broker's process (`postduif serve --with-gateway`, ADR 0016);
# GATEWAY=process runs it as a process of its own beside the broker, as a
# deployment with several gateways does. Server CPU counts both processes.
#
# BASELINE_BIN=/path/to/other/.build/release compares Postduif with
# another build of itself instead of Synapse (a change's before and after,
# in one sitting, run for run in turns): the baseline takes Synapse's
# place, labelled "before", and the open loop runs at half the baseline's
# peak (at the peak itself both queue, and the latency is the queue's).
#
# ENCRYPTED=1 makes every room encrypted as Element makes them: each
# member's device uploads its keys, each sender claims one-time keys and
# shares its megolm session with every member's device in olm to-device
# messages before its first message and every ROTATION messages (default
# 100, Element's), and messages are m.room.encrypted events with
# ciphertexts of megolm's size (BenchCore/MatrixEncryption.swift says why
# stand-ins of the right size make the same work for a server). Its
# results are named chat-encrypted-*.
#
# Starts every server itself on free loopback ports and stops exactly those
# processes. Synapse's virtual environment is kept in $BENCH_DIR/synapse-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-2 10 100 1000}
ROOMS=${ROOMS:-1}
RUNS=${RUNS:-1}
GATEWAY=${GATEWAY:-embedded}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
OUT=${OUT:-bench-results}
BENCH_DIR=${BENCH_DIR:-/tmp}
BIN=${BIN:-.build/release}
BASELINE_BIN=${BASELINE_BIN:-}
ENCRYPTED=${ENCRYPTED:-}
ROTATION=${ROTATION:-100}
kind=""
[ -n "$ENCRYPTED" ] && kind="encrypted-"
export SYNAPSE_VENV=${SYNAPSE_VENV:-$BENCH_DIR/synapse-venv}
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

postduif_pids=""
postduif_dir=""
start_postduif() {  # [bin]
    local bin=${1:-$BIN}
    postduif_dir=$(mktemp -d "$BENCH_DIR/postduif-chat-XXXXXX")
    local kafka http
    kafka=$(free_port); http=$(free_port); gateway_port=$(free_port)
    local serve=("$bin/postduif" serve --port "$kafka" --http-port "$http" --data "$postduif_dir/data" --log-level warning)
    if [ "$GATEWAY" = embedded ]; then
        # The load registers thousands of users: a cheaper password hash for the setup only.
        "${serve[@]}" --with-gateway true --gateway-port "$gateway_port" --password-hash-log-n 10 --registrations-per-minute 0 > "$postduif_dir/broker.log" 2>&1 &
        postduif_pids=$!
        wait_port "$gateway_port"
        postduif_url="http://127.0.0.1:$gateway_port"
        return
    fi
    "${serve[@]}" > "$postduif_dir/broker.log" 2>&1 &
    local broker=$!
    wait_port "$kafka"
    # The load registers thousands of users: a cheaper password hash for the setup only.
    "$bin/postduif" gateway --port "$gateway_port" --http-port 0 --broker "127.0.0.1:$kafka" --password-hash-log-n 10 --registrations-per-minute 0 --log-level warning > "$postduif_dir/gateway.log" 2>&1 &
    local gateway=$!
    wait_port "$gateway_port"
    postduif_pids="$broker $gateway"
    postduif_url="http://127.0.0.1:$gateway_port"
}
stop_postduif() {
    for pid in $postduif_pids; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $postduif_pids; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$postduif_dir"
    postduif_pids=""
}
start_synapse() {
    if [ -n "$BASELINE_BIN" ]; then
        start_postduif "$BASELINE_BIN"
        synapse_url=$postduif_url synapse_pid=$postduif_pids synapse_dir=""
        return
    fi
    synapse_port=$(free_port)
    synapse_dir="$BENCH_DIR/synapse-chat-$synapse_port"
    Benchmarks/peers/synapse/synapse.sh start "$synapse_dir" "$synapse_port" localhost > /dev/null
    synapse_url="http://127.0.0.1:$synapse_port"
    synapse_pid=$(cat "$synapse_dir/pid")
}
stop_synapse() {
    if [ -n "$BASELINE_BIN" ]; then stop_postduif; return; fi
    Benchmarks/peers/synapse/synapse.sh stop "$synapse_dir"
}
peer=synapse
[ -n "$BASELINE_BIN" ] && peer=before
trap 'stop_postduif; [ -n "${synapse_dir:-}" ] && stop_synapse || true' EXIT

bench() {  # label url pids members rate-or-empty [run]
    local label=$1 url=$2 pids=$3 members=$4 rate=${5:-} run=${6:-1}
    local name="chat-$kind$label-$members${rate:+-rate}"
    [ "$run" -gt 1 ] && name="$name-run$run"
    local args=(matrix --url "$url" --rooms "$ROOMS" --members "$members" --setup-concurrency 32 --seconds "$SECONDS_PER_RUN" --label "$label" --json "$OUT/$name.json")
    [ -n "$rate" ] && args+=(--rate "$rate")
    [ -n "$ENCRYPTED" ] && args+=(--encrypted --rotation-messages "$ROTATION")
    for pid in $pids; do args+=(--server-pid "$pid"); done
    "$BIN/postduif-bench" "${args[@]}" 2> /dev/null
}

for members in $SIZES; do
    echo "== ${kind:+encrypted }rooms of $members members, $ROOMS at once"
    for run in $(seq 1 "$RUNS"); do
        start_synapse
        bench "$peer" "$synapse_url" "$synapse_pid" "$members" "" "$run"
        stop_synapse
        start_postduif
        bench postduif "$postduif_url" "$postduif_pids" "$members" "" "$run"
        stop_postduif
    done
    peak=$(python3 - "$OUT" "$members" "$RUNS" "$peer" "$kind" <<'PY'
import json, statistics, sys
out, members, runs, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[5]
names = ["%s/chat-%s%s-%s%s.json" % (out, kind, sys.argv[4], members, "" if run == 1 else "-run%d" % run) for run in range(1, runs + 1)]
peak = statistics.median(json.load(open(name))["sendsPerSecond"] for name in names)
# Against another build, the open loop runs at half the peak: at the peak
# itself both queue, and the latency measured is the queue's.
print(max(peak if sys.argv[4] == "synapse" else peak / 2, 0.5))
PY
)
    echo "   at $peer's peak rate (half of it against another build), $peak messages/s:"
    start_postduif
    bench postduif "$postduif_url" "$postduif_pids" "$members" "$peak"
    stop_postduif
    start_synapse
    bench "$peer" "$synapse_url" "$synapse_pid" "$members" "$peak"
    stop_synapse
    python3 - "$OUT" "$members" "$RUNS" "$peer" "$kind" <<'PY'
import json, statistics, sys
out, members, runs, peer, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
name = "Synapse" if peer == "synapse" else "before"
def runs_of(label):
    return [json.load(open("%s/chat-%s%s-%s%s.json" % (out, kind, label, members, "" if run == 1 else "-run%d" % run))) for run in range(1, runs + 1)]
s, p = runs_of(peer), runs_of("postduif")
ps = json.load(open("%s/chat-%spostduif-%s-rate.json" % (out, kind, members)))
ss = json.load(open("%s/chat-%s%s-%s-rate.json" % (out, kind, peer, members)))
def per_cpu(r): return r["deliveriesPerCPUSecond"] or 0
p_cpu, s_cpu = statistics.median(map(per_cpu, p)), statistics.median(map(per_cpu, s))
line = "   deliveries per CPU-second: Postduif %.0f, %s %.0f: %.2fx" % (p_cpu, name, s_cpu, p_cpu / max(s_cpu, 1e-9))
if runs > 1:
    line += " (medians of %d runs; run by run: %s)" % (runs, ", ".join("%.2fx" % (per_cpu(a) / max(per_cpu(b), 1e-9)) for a, b in zip(p, s)))
print(line)
print("   peak deliveries/s: Postduif %.0f, %s %.0f" % (statistics.median(r["deliveriesPerSecond"] for r in p), name, statistics.median(r["deliveriesPerSecond"] for r in s)))
print("   p50 / p99 send-to-delivery at %s's peak rate: Postduif %.1f / %.1f ms, %s %.1f / %.1f ms" % (name, ps["deliveryLatencyMilliseconds"]["p50"], ps["deliveryLatencyMilliseconds"]["p99"], name, ss["deliveryLatencyMilliseconds"]["p50"], ss["deliveryLatencyMilliseconds"]["p99"]))
PY
done
