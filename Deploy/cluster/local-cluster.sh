#!/usr/bin/env bash
# `make cluster` / `make cluster-stop`: a local Postduif cluster on loopback
# ports for people and tests: Debian's etcd and three brokers, with their
# data, logs and PID files in one folder; `stop` stops exactly those PIDs.
#
#   Deploy/cluster/local-cluster.sh start [DIR]   (default /tmp/postduif-cluster)
#   Deploy/cluster/local-cluster.sh stop  [DIR]
#   Deploy/cluster/local-cluster.sh restart DIR N   (broker N again, after a kill)
#   Deploy/cluster/local-cluster.sh restart-etcd DIR (etcd again, same data, after a kill)
#
# Ports: etcd 2379 (peer 2380), brokers 9092, 9093, 9094 (operations 9644,
# 9645, 9646); ETCD_PORT, KAFKA_PORT_BASE and HTTP_PORT_BASE override them.
# BINARY (default .build/release/postduif) picks the broker build.
# GATEWAY_PORT_BASE (unset by default) runs the chat gateway inside each
# broker (ADR 0016), broker N's on GATEWAY_PORT_BASE + N - 1.
# SECURE_PORT_BASE (unset by default) adds a SASL_SSL listener, broker N's
# on SECURE_PORT_BASE + N - 1, which the brokers replicate over; the
# certificate, users and authorizer come in BROKER_ARGS (Docs/security.md).
# SECURE_PROTOCOL=SSL makes it an SSL listener instead (brokers known by
# their certificates).
# RACKS (unset by default), words, gives broker N the Nth as its rack
# (`--rack`): RACKS="zone-a zone-b zone-c".
set -euo pipefail
cd "$(dirname "$0")/../.."

command=${1:-}
dir=${2:-/tmp/postduif-cluster}
etcd_port=${ETCD_PORT:-2379}
kafka_base=${KAFKA_PORT_BASE:-9092}
http_base=${HTTP_PORT_BASE:-9644}
# The HTTP proxies: 8082, 8083, 8084 (POSTDUIF_HTTP_PROXY_PORT=0 in the
# environment: free ports, as the tests ask).
proxy_base=${HTTP_PROXY_PORT_BASE:-8082}
binary=${BINARY:-.build/release/postduif}

# Broker N's own arguments: its embedded gateway, when asked for.
gateway_args() {
    [ -n "${GATEWAY_PORT_BASE:-}" ] || return 0
    echo "--with-gateway true --gateway-port $((GATEWAY_PORT_BASE + $1 - 1))"
}

# Broker N's listeners: the plaintext port alone, or with SECURE_PORT_BASE
# a SASL_SSL (or SECURE_PROTOCOL) listener beside it that replication uses.
listener_args() {
    local port=$((kafka_base + $1 - 1))
    if [ -n "${SECURE_PORT_BASE:-}" ]; then
        local protocol=${SECURE_PROTOCOL:-SASL_SSL}
        echo "--listeners PLAINTEXT://127.0.0.1:$port,$protocol://127.0.0.1:$((SECURE_PORT_BASE + $1 - 1)) --inter-broker-listener $protocol"
    else
        echo "--port $port"
    fi
}

wait_port() {
    for _ in $(seq 1 150); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1; see the logs in $dir" >&2
    return 1
}

# Until the broker's /ready says 200: registered in etcd and the cluster
# read, so a topic created right after `start` counts all three.
wait_ready() {
    for _ in $(seq 1 300); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$1" && printf 'GET /ready HTTP/1.0\r\n\r\n' >&3 && read -r status <&3 && [[ $status == *" 200 "* ]]) 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "the broker with operations port $1 is not ready after 30 s; see the logs in $dir" >&2
    return 1
}

# The HTTP proxy's port goes in the environment, not as a flag: a binary
# from before the proxy (the rolling-upgrade test's previous release)
# starts too.
# Broker N's rack: the Nth word of RACKS, or none.
rack_of() {
    local racks=(${RACKS:-})
    echo "${racks[$(($1 - 1))]:-}"
}

proxy_port() {
    if [ "${POSTDUIF_HTTP_PROXY_PORT:-}" = 0 ]; then echo 0; else echo $((proxy_base + $1 - 1)); fi
}

start_etcd() {
    local peer=$((etcd_port + 1))
    etcd --name local --data-dir "$dir/etcd/data" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "local=http://127.0.0.1:$peer" >> "$dir/etcd/log.txt" 2>&1 &
    echo $! > "$dir/etcd/pid"
    wait_port "$etcd_port"
}

# SIGTERM to each process this script started (their pid files), then
# SIGKILL to any still there after 10 s.
stop_processes() {
    for pidfile in "$dir"/broker-*/pid "$dir"/etcd/pid; do
        [ -e "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
}

case "$command" in
start)
    command -v etcd > /dev/null || { echo "etcd is missing: apt-get install etcd-server" >&2; exit 1; }
    [ -x "$binary" ] || { echo "$binary is missing: build it first (make release)" >&2; exit 1; }
    if [ -e "$dir" ]; then echo "$dir exists: stop the earlier cluster first" >&2; exit 1; fi
    mkdir -p "$dir/etcd"
    start_etcd || { stop_processes; exit 1; }
    brokers=""
    for id in 1 2 3; do
        mkdir -p "$dir/broker-$id"
        port=$((kafka_base + id - 1))
        POSTDUIF_RACK=$(rack_of "$id") POSTDUIF_HTTP_PROXY_PORT=$(proxy_port "$id") "$binary" serve --node-id "$id" $(listener_args "$id") --http-port $((http_base + id - 1)) \
            --data "$dir/broker-$id/data" --etcd-endpoints "http://127.0.0.1:$etcd_port" \
            ${BROKER_ARGS:-} $(gateway_args "$id") > "$dir/broker-$id/log.txt" 2>&1 &
        echo $! > "$dir/broker-$id/pid"
        brokers="$brokers${brokers:+,}127.0.0.1:$port"
    done
    # A cluster that does not come up is stopped again (its logs stay in
    # $dir), so nothing it started outlives the failed start.
    for id in 1 2 3; do wait_port $((kafka_base + id - 1)) || { stop_processes; exit 1; }; done
    for id in 1 2 3; do wait_ready $((http_base + id - 1)) || { stop_processes; exit 1; }; done
    echo "$brokers" > "$dir/bootstrap"
    echo "Postduif cluster: etcd on http://127.0.0.1:$etcd_port, brokers on $brokers"
    echo "  produce: echo 'room-1:hello' | kcat -P -b $brokers -t conversations -K : -X topic.request.required.acks=all"
    echo "  consume: kcat -C -b $brokers -t conversations -o beginning -f '%k: %s\\n'"
    echo "  logs and data in $dir; stop with: make cluster-stop"
    ;;
restart)
    # Starts broker N of a running cluster again (after it was killed).
    id=${3:?broker id}
    port=$((kafka_base + id - 1))
    POSTDUIF_RACK=$(rack_of "$id") POSTDUIF_HTTP_PROXY_PORT=$(proxy_port "$id") "$binary" serve --node-id "$id" $(listener_args "$id") --http-port $((http_base + id - 1)) \
        --data "$dir/broker-$id/data" --etcd-endpoints "http://127.0.0.1:$etcd_port" \
        ${BROKER_ARGS:-} $(gateway_args "$id") >> "$dir/broker-$id/log.txt" 2>&1 &
    echo $! > "$dir/broker-$id/pid"
    wait_port "$port"
    ;;
restart-etcd)
    start_etcd
    ;;
stop)
    stop_processes
    rm -rf "$dir"
    ;;
*)
    sed -n '2,14p' "$0"
    exit 1
    ;;
esac
