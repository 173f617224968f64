#!/usr/bin/env bash
# Media upload and download of one file against the disk's own bandwidth,
# in one sitting: the issue's "at least 80% of loopback disk bandwidth".
#
#   SIZE_MIB=10 ROUNDS=6 BENCH_DIR=/tmp Benchmarks/media-bench.sh
#
# Starts one release `postduif serve --with-gateway` (as `make run` does,
# `fsync` durability) on free loopback ports with its data under BENCH_DIR,
# registers one user and then, ROUNDS times in turns:
#
#   - the disk: `dd bs=1M conv=fsync` of the file into the data folder
#     (written and synced, as an upload must be before it is answered),
#     and `dd iflag=direct` of it back (read from the device, not the
#     page cache);
#   - an upload with curl (`POST /_matrix/media/v3/upload`), answered once
#     every chunk is committed;
#   - a download of that upload with curl into /dev/null (into a file,
#     curl's own write to the page cache would add 6-8 ms of the client's
#     time to the server's), then one more, untimed, into a file whose
#     SHA-256 is checked against the upload's.
#
# Prints each round's times and the medians, and the medians as MB/s and
# as a share of the disk's. curl is the client: the figure is what a
# client we did not write sees. Stops exactly the process it started.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-10}
ROUNDS=${ROUNDS:-6}
BENCH_DIR=${BENCH_DIR:-/tmp}
BIN=${BIN:-.build/release}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

dir=$(mktemp -d "$BENCH_DIR/postduif-media-XXXXXX")
kafka=$(free_port); http=$(free_port); gateway=$(free_port)
"$BIN/postduif" serve --port "$kafka" --http-port "$http" --data "$dir/data" --log-level warning \
    --with-gateway true --gateway-port "$gateway" > "$dir/broker.log" 2>&1 &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap stop EXIT
wait_port "$gateway" || { echo "the server did not start; its log:" >&2; cat "$dir/broker.log" >&2; exit 1; }
url="http://127.0.0.1:$gateway"

head -c $((SIZE_MIB << 20)) /dev/urandom > "$dir/file"
sum=$(sha256sum "$dir/file" | cut -d' ' -f1)
token=$(curl -sf -XPOST "$url/_matrix/client/v3/register" -d '{"username":"media-bench","password":"media-bench-secret"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

: > "$dir/times"
for round in $(seq 1 "$ROUNDS"); do
    start=$(date +%s%N)
    # A new file each round, all removed at the end: this root file system
    # is mounted with `discard`, and a file removed between the steps
    # made the disk discard its blocks while the next upload wrote.
    dd if="$dir/file" of="$dir/data/dd-test-$round" bs=1M conv=fsync status=none
    disk=$(( $(date +%s%N) - start ))
    start=$(date +%s%N)
    dd if="$dir/data/dd-test-$round" of=/dev/null bs=1M iflag=direct status=none
    read=$(( $(date +%s%N) - start ))
    # `Expect:` off: curl would otherwise ask for 100 Continue first (the
    # gateway answers it at once, but it is a round trip a client need not make).
    answer=$(curl -sf -XPOST -H "Expect:" -H "Authorization: Bearer $token" -H "Content-Type: application/octet-stream" \
        --data-binary @"$dir/file" -w '\n%{time_total}' "$url/_matrix/media/v3/upload")
    up=$(tail -1 <<< "$answer")
    id=$(head -1 <<< "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["content_uri"].rsplit("/",1)[1])')
    server=$(head -1 <<< "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["content_uri"][6:].split("/")[0])')
    down=$(curl -sf -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $token" "$url/_matrix/client/v1/media/download/$server/$id")
    curl -sf -o "$dir/down" -H "Authorization: Bearer $token" "$url/_matrix/client/v1/media/download/$server/$id"
    [ "$(sha256sum "$dir/down" | cut -d' ' -f1)" = "$sum" ] || { echo "round $round: the download differs from the file" >&2; exit 1; }
    printf '%s %s %s %s\n' "$(awk -v n="$disk" 'BEGIN { printf "%.2f", n / 1e6 }')" "$(awk -v n="$read" 'BEGIN { printf "%.2f", n / 1e6 }')" \
        "$(awk -v s="$up" 'BEGIN { printf "%.2f", s * 1000 }')" "$(awk -v s="$down" 'BEGIN { printf "%.2f", s * 1000 }')" >> "$dir/times"
done

python3 - "$dir/times" "$SIZE_MIB" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1])]
mb = int(sys.argv[2]) * 1048576 / 1e6
print("round  disk write (dd conv=fsync)  disk read (dd iflag=direct)  upload  download   (ms)")
for i, (w, r, u, d) in enumerate(rows, 1):
    print("%5d  %26.2f  %27.2f  %6.2f  %8.2f" % (i, w, r, u, d))
write, read, up, down = (statistics.median(r[k] for r in rows) for k in range(4))
rate = lambda ms: mb / ms * 1e3
print("medians: disk write %.2f ms (%.0f MB/s), read %.2f ms (%.0f MB/s); upload %.2f ms (%.0f MB/s, %.0f%% of the disk's write);"
      " download %.2f ms (%.0f MB/s, %.0f%% of the disk's read)"
      % (write, rate(write), read, rate(read), up, rate(up), 100 * write / up, down, rate(down), 100 * read / down))
PY
