#!/usr/bin/env bash
# Starts Debian's nats-server with JetStream file storage in a temporary
# folder on loopback, as the peer the load tool compares Postduif with;
# stops exactly what it started.
#
#   Benchmarks/peers/nats/nats.sh start [single|cluster] [STATE_DIR]
#   Benchmarks/peers/nats/nats.sh stop  [STATE_DIR]
#
# single: one server, client port 4222 (NATS_PORT overrides).
# cluster: three servers in one JetStream cluster (streams with
#   --replicas 3 are R3), client ports 4222, 4223, 4224, route ports
#   6222-6224.
# STATE_DIR (default /tmp/postduif-nats) holds each server's store, log
# and PID file; `stop` kills those PIDs only and removes the folder.
#
# Debian's nats-server 2.9.10 acknowledges a JetStream publish once it is
# written to the operating system and syncs about once a minute (sync per
# write arrived only in 2.10): compare it with Postduif in `none` mode, or
# `replicated` for R3.
set -euo pipefail

command=${1:-}
shift || true

start_server() {
    local dir=$1 name=$2 port=$3 cluster_port=${4:-} routes=${5:-}
    mkdir -p "$dir/$name"
    local config="$dir/$name/server.conf"
    {
        echo "server_name: $name"
        echo "listen: 127.0.0.1:$port"
        echo "jetstream { store_dir: \"$dir/$name/store\" }"
        if [ -n "$cluster_port" ]; then
            echo "cluster { name: postduif-peer, listen: 127.0.0.1:$cluster_port, routes: [$routes] }"
        fi
    } > "$config"
    nats-server -c "$config" > "$dir/$name/log.txt" 2>&1 &
    echo $! > "$dir/$name/pid"
}

wait_ready() {
    local port=$1
    for _ in $(seq 1 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nats-server on port $port did not start" >&2
    return 1
}

case "$command" in
start)
    mode=${1:-single}
    dir=${2:-/tmp/postduif-nats}
    command -v nats-server > /dev/null || { echo "nats-server is missing: apt-get install nats-server" >&2; exit 1; }
    if [ -e "$dir" ]; then echo "$dir exists: stop the earlier peer first" >&2; exit 1; fi
    mkdir -p "$dir"
    if [ "$mode" = single ]; then
        port=${NATS_PORT:-4222}
        start_server "$dir" n1 "$port"
        wait_ready "$port"
        echo "NATS JetStream (single node) on nats://127.0.0.1:$port, state in $dir"
    elif [ "$mode" = cluster ]; then
        routes="nats-route://127.0.0.1:6222, nats-route://127.0.0.1:6223, nats-route://127.0.0.1:6224"
        for i in 1 2 3; do
            start_server "$dir" "n$i" $((4221 + i)) $((6221 + i)) "$routes"
        done
        for port in 4222 4223 4224; do wait_ready "$port"; done
        # JetStream needs its meta group to elect a leader before streams can be made.
        sleep 3
        echo "NATS JetStream cluster (3 nodes) on nats://127.0.0.1:4222 (and 4223, 4224), state in $dir"
    else
        echo "unknown mode $mode: single or cluster" >&2
        exit 1
    fi
    ;;
stop)
    dir=${1:-/tmp/postduif-nats}
    for pidfile in "$dir"/*/pid; do
        [ -e "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    rm -rf "$dir"
    ;;
*)
    sed -n '2,18p' "$0"
    exit 1
    ;;
esac
