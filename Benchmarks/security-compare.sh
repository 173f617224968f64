#!/usr/bin/env bash
# What TLS, SASL and the authorizer cost, as librdkafka sees it
# (Benchmarks/clients/rdkafka-bench.c, Debian's librdkafka-dev), in turns on
# one release broker, each figure the median of PAIRS turns:
#
#   PAIRS=3 SECONDS_PER_RUN=8 OUT=bench-results BENCH_DIR=/tmp Benchmarks/security-compare.sh
#   (PARTS="tls" or PARTS="authorizer" runs one part)
#
# 1. Peak produce (closed loop, linger 5) and ack latency at 20,000 msgs/s
#    (linger 0): PLAINTEXT against SASL_SSL (TLS 1.3, SCRAM-SHA-512), on one
#    broker with both listeners.
# 2. Server CPU per message at 20,000 msgs/s on PLAINTEXT, the broker
#    without the authorizer against the same broker with it (the producer's
#    principal allowed by a prefixed ACL, the way an operator would grant it).
#
# One idempotent producer, acks=all, 1 KiB values over 10,000 keys, 4
# partitions, `none` durability (the disk is not what is measured).
# Certificates are made here with openssl; servers start on free loopback
# ports and exactly those are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
OUT=${OUT:-bench-results}
BENCH_DIR=${BENCH_DIR:-/tmp}
BIN=${BIN:-.build/release}
CLIENTS=${CLIENTS:-$BENCH_DIR/postduif-clients}
mkdir -p "$OUT" "$CLIENTS"
gcc -O2 -Wall -o "$CLIENTS/rdkafka-bench" Benchmarks/clients/rdkafka-bench.c -lrdkafka -lpthread

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

work=$(mktemp -d "$BENCH_DIR/postduif-security-XXXXXX")
pid=""
stop() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; pid=""; }
trap 'stop; rm -rf "$work"' EXIT

# A CA and a broker certificate for 127.0.0.1.
(
    cd "$work"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=bench CA" 2> /dev/null
    openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=localhost" 2> /dev/null
    echo "subjectAltName=IP:127.0.0.1" > san.cnf
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem -days 2 -extfile san.cnf 2> /dev/null
    chmod 600 ca.key broker.key
)
printf 'bench-secret\n' | "$BIN/postduif" user add bench --password-stdin --users-file "$work/users.json" > /dev/null
printf 'admin-secret\n' | "$BIN/postduif" user add admin --password-stdin --users-file "$work/users.json" > /dev/null

plain_port=$(free_port)
secure_port=$(free_port)
start() {  # extra serve arguments...
    stop
    rm -rf "$work/data"
    "$BIN/postduif" serve --data "$work/data" --http-port 0 --durability none --log-level warning --users-file "$work/users.json" \
        --listeners "PLAINTEXT://127.0.0.1:$plain_port,SASL_SSL://127.0.0.1:$secure_port" \
        --tls-cert-file "$work/broker.pem" --tls-key-file "$work/broker.key" "$@" > "$work/broker.log" 2>&1 &
    pid=$!
    wait_port "$plain_port"
    wait_port "$secure_port"
}
secure=(-X security.protocol=SASL_SSL -X "ssl.ca.location=$work/ca.pem" -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=bench -X sasl.password=bench-secret)
run=0
bench() {  # label port rate linger [-X ...]
    local label=$1 port=$2 rate=$3 linger=$4; shift 4
    run=$((run + 1))
    "$CLIENTS/rdkafka-bench" --brokers "127.0.0.1:$port" --topic "latency-$run" --partitions 4 --rate "$rate" --linger-ms "$linger" \
        --seconds "$SECONDS_PER_RUN" --server-pid "$pid" --label "$label" --json "$OUT/security-$label-$run.json" "$@" || true
}

PARTS=${PARTS:-tls tool authorizer}
if [[ " $PARTS " == *" tls "* ]]; then
echo "== PLAINTEXT against SASL_SSL"
start
for _ in $(seq 1 "$PAIRS"); do
    bench peak-plaintext "$plain_port" 0 5
    bench peak-sasl-ssl "$secure_port" 0 5 "${secure[@]}"
done
for _ in $(seq 1 "$PAIRS"); do
    bench 20k-plaintext "$plain_port" 20000 0
    bench 20k-sasl-ssl "$secure_port" 20000 0 "${secure[@]}"
done
fi

if [[ " $PARTS " == *" tool "* ]]; then
echo "== postduif-bench produce, closed loop, PLAINTEXT against SASL_SSL (SASL PLAIN, the tool's one mechanism)"
start
for _ in $(seq 1 "$PAIRS"); do
    run=$((run + 1))
    "$BIN/postduif-bench" run produce --target "kafka://127.0.0.1:$plain_port" --stream "tool-$run" --partitions 4 --producers 2 \
        --seconds "$SECONDS_PER_RUN" --label tool-plaintext --json "$OUT/security-tool-plaintext-$run.json" > /dev/null || true
    run=$((run + 1))
    POSTDUIF_BENCH_TLS_CA_FILE="$work/ca.pem" POSTDUIF_BENCH_SASL_USER=bench POSTDUIF_BENCH_SASL_PASSWORD=bench-secret \
        "$BIN/postduif-bench" run produce --target "kafka://127.0.0.1:$secure_port" --stream "tool-$run" --partitions 4 --producers 2 \
        --seconds "$SECONDS_PER_RUN" --label tool-sasl-ssl --json "$OUT/security-tool-sasl-ssl-$run.json" > /dev/null || true
done
fi

if [[ " $PARTS " == *" authorizer "* ]]; then
echo "== the authorizer off and on (PLAINTEXT, 20,000 msgs/s)"
for _ in $(seq 1 "$PAIRS"); do
    start
    bench 20k-authorizer-off "$plain_port" 20000 0
    start --authorizer true --super-users User:admin
    POSTDUIF_ACL_PASSWORD=admin-secret "$BIN/postduif" acl add --broker "127.0.0.1:$plain_port" --user admin --principal User:ANONYMOUS \
        --operation all --topic latency- --prefixed > /dev/null 2>&1 || {
        # The admin signs in on the SASL_SSL listener (PLAINTEXT has no SASL).
        POSTDUIF_ACL_PASSWORD=admin-secret "$BIN/postduif" acl add --broker "127.0.0.1:$secure_port" --user admin --tls --tls-ca-file "$work/ca.pem" \
            --principal User:ANONYMOUS --operation all --topic latency- --prefixed > /dev/null
    }
    bench 20k-authorizer-on "$plain_port" 20000 0
done
fi
stop

python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
def runs(label):
    return [json.load(open(f)) for f in glob.glob("%s/security-%s-*.json" % (out, label))]
def median(label, key, sub=None):
    values = [(r[key][sub] if sub else r[key]) for r in runs(label)]
    return statistics.median(values) if values else float("nan")
print("| phase | PLAINTEXT | SASL_SSL | ratio |")
print("|---|---|---|---|")
p, s = median("peak-plaintext", "sendsPerSecond"), median("peak-sasl-ssl", "sendsPerSecond")
print("| peak msgs/s (linger 5) | %.0f | %.0f | %.2f |" % (p, s, s / p))
for q in ("p50", "p99"):
    p, s = median("20k-plaintext", "ackMilliseconds", q), median("20k-sasl-ssl", "ackMilliseconds", q)
    print("| 20,000 msgs/s ack %s ms | %.2f | %.2f | +%.2f ms |" % (q, p, s, s - p))
p, s = median("20k-plaintext", "serverCPUMicrosecondsPerMessage"), median("20k-sasl-ssl", "serverCPUMicrosecondsPerMessage")
print("| 20,000 msgs/s server CPU us/msg | %.2f | %.2f | %.2f |" % (p, s, s / p))
def tool(label):
    # postduif-bench's report: acknowledged messages over the run's seconds.
    values = []
    for f in glob.glob("%s/security-%s-*.json" % (out, label)):
        for result in json.load(open(f)).get("results", []):
            figures = result["figures"]
            if figures["seconds"] > 0:
                values.append(figures["totals"].get("acknowledged", 0) / figures["seconds"])
    return statistics.median(values) if values else float("nan")
p, s = tool("tool-plaintext"), tool("tool-sasl-ssl")
print("\n| postduif-bench produce, closed loop | PLAINTEXT | SASL_SSL | ratio |")
print("|---|---|---|---|")
print("| msgs/s | %.0f | %.0f | %.2f |" % (p, s, s / p if p == p and p else float("nan")))
off, on = median("20k-authorizer-off", "serverCPUMicrosecondsPerMessage"), median("20k-authorizer-on", "serverCPUMicrosecondsPerMessage")
print("\n| 20,000 msgs/s, PLAINTEXT | authorizer off | authorizer on | change |")
print("|---|---|---|---|")
print("| server CPU us/msg | %.2f | %.2f | %+.1f%% |" % (off, on, (on / off - 1) * 100))
for q in ("p50", "p99"):
    print("| ack %s ms | %.2f | %.2f | |" % (q, median("20k-authorizer-off", "ackMilliseconds", q), median("20k-authorizer-on", "ackMilliseconds", q)))
PY
