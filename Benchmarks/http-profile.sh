#!/bin/bash
# Batched HTTP produce alone, for comparing broker builds and profiling
# the proxy: one release broker (`none` durability) with a topic of 4
# partitions, wrk POSTing 100 records of 1 KiB per request in the REST
# Proxy's binary format, and the broker's CPU over the run.
#
#   BIN=.build/release/postduif SECONDS_PER_RUN=8 [PERF=1] Benchmarks/http-profile.sh
#
# PERF=1 records the broker with `perf record -g` into $WORK/perf.data.
# Ports are fixed (19492 Kafka, 19493 HTTP); the broker started here is
# the one stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release/postduif}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
WORK=${WORK:-$(mktemp -d "${BENCH_DIR:-/tmp}/postduif-http-profile-XXXXXX")}
"$BIN" serve --data "$WORK/data" --port 19492 --http-port 0 --http-proxy-port 19493 --durability none --log-level warning > "$WORK/broker.log" 2>&1 &
pid=$!
# The data folder goes with the broker (a run writes gigabytes; runs left
# behind fill the page cache and slow the runs after them); the rest of
# $WORK (the perf data, the broker's log) stays.
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$WORK/data"' EXIT
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/19493) 2>/dev/null && break; sleep 0.1; done
WORK=$WORK .venv/bin/python - <<'PY'
import base64, json, os
from confluent_kafka.admin import AdminClient, NewTopic
work = os.environ["WORK"]
admin = AdminClient({"bootstrap.servers": "127.0.0.1:19492"})
admin.create_topics([NewTopic("http", 4, 1)])["http"].result(30)
with open(os.path.join(work, "body.json"), "w") as f:
    json.dump({"records": [{"key": base64.b64encode(b"room-%d" % i).decode(), "value": base64.b64encode(os.urandom(1024)).decode()}
                           for i in range(100)]}, f)
with open(os.path.join(work, "body.lua"), "w") as f:
    f.write('local f = io.open("%s", "rb")\nwrk.body = f:read("*a")\nf:close()\n' % os.path.join(work, "body.json"))
    f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/vnd.kafka.binary.v2+json"\n')
PY
if [ "${PERF:-0}" = 1 ]; then
    perf record -F 999 -g -p "$pid" -o "$WORK/perf.data" -- sleep "$SECONDS_PER_RUN" > /dev/null 2>&1 &
    perf_pid=$!
fi
before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
wrk -t2 -c32 -d"${SECONDS_PER_RUN}s" --latency -s "$WORK/body.lua" http://127.0.0.1:19493/topics/http | grep -E "Requests/sec|50%|99%|Non-2xx"
after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
echo "broker CPU: $(( (after - before) * 100 / $(getconf CLK_TCK) / SECONDS_PER_RUN ))% of one core; work in $WORK"
if [ "${PERF:-0}" = 1 ]; then wait "$perf_pid"; fi
