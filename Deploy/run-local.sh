#!/usr/bin/env bash
# `make run`: a single broker on the embedded default (127.0.0.1:9092, data
# in $DATA, fsync, no etcd) and the chat gateway in front of it
# (http://127.0.0.1:8008), in the broker's process. Ctrl-C or SIGTERM stops
# it, gateway first.
set -euo pipefail
binary=${BINARY:-.build/release/postduif}
data=${DATA:-./data}
gateway_port=${GATEWAY_PORT:-8008}

# One process: the gateway runs inside the broker (ADR 0016).
"$binary" serve --data "$data" --with-gateway true --gateway-port "$gateway_port" &
broker=$!
stop() {
    kill -TERM "$broker" 2>/dev/null && wait "$broker" 2>/dev/null || true
}
trap stop INT TERM EXIT

for _ in $(seq 1 300); do
    (exec 3<>/dev/tcp/127.0.0.1/"$gateway_port") 2>/dev/null && break
    kill -0 "$broker" 2>/dev/null || { echo "the broker did not start" >&2; exit 1; }
    sleep 0.1
done

cat <<TEXT
Postduif on 127.0.0.1:9092 (data in $data); chat gateway on http://127.0.0.1:$gateway_port
  Kafka produce: echo 'room-1:hello' | kcat -P -b 127.0.0.1:9092 -t events -K :
  Kafka consume: kcat -C -b 127.0.0.1:9092 -t events -o beginning -f '%k: %s\\n'
  Matrix: point any Matrix client (Element, matrix-nio, ...) at http://127.0.0.1:$gateway_port,
          or: curl -XPOST http://127.0.0.1:$gateway_port/_matrix/client/v3/register -d '{"username":"minister","password":"..."}'
Stop with Ctrl-C.
TEXT
wait "$broker"
