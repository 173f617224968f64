#!/usr/bin/env bash
# Synapse, the reference Matrix homeserver, as the chat benchmark's peer:
# installed from PyPI into a virtual environment, SQLite, registration
# open, rate limits off, listening on 127.0.0.1 only; stops exactly what
# it started.
#
#   Benchmarks/peers/synapse/synapse.sh start STATE_DIR PORT [SERVER_NAME]
#   Benchmarks/peers/synapse/synapse.sh stop  STATE_DIR
#
# The virtual environment lives in $SYNAPSE_VENV (default
# $STATE_DIR/../synapse-venv), so repeated runs install once.
set -euo pipefail

command=${1:-}
dir=${2:?state directory}
venv=${SYNAPSE_VENV:-$(dirname "$dir")/synapse-venv}
version=${SYNAPSE_VERSION:-1.163.*}

case "$command" in
start)
    port=${3:?port}
    server_name=${4:-localhost}
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import synapse' 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "matrix-synapse==$version"
    fi
    if [ -e "$dir" ]; then echo "$dir exists: stop the earlier Synapse first" >&2; exit 1; fi
    mkdir -p "$dir"
    "$venv/bin/python" -m synapse.app.homeserver --server-name "$server_name" --config-path "$dir/homeserver.yaml" \
        --data-directory "$dir" --generate-config --report-stats=no > "$dir/generate.log" 2>&1
    "$venv/bin/python" - "$dir/homeserver.yaml" "$port" <<'PY'
import sys, yaml
path, port = sys.argv[1], int(sys.argv[2])
config = yaml.safe_load(open(path))
config["listeners"] = [{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                        "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}]
config["enable_registration"] = True
config["enable_registration_without_verification"] = True
config["bcrypt_rounds"] = 4          # setup speed only: the measured path never hashes
config["presence"] = {"enabled": False}
config["suppress_key_server_warning"] = True
unlimited = {"per_second": 1000000, "burst_count": 1000000}
for key in ["rc_message", "rc_registration", "rc_joins_per_room", "rc_3pid_validation", "rc_admin_redaction",
            "rc_room_creation", "rc_presence", "rc_delayed_event_mgmt", "rc_reports"]:
    config[key] = dict(unlimited)
config["rc_login"] = {"address": dict(unlimited), "account": dict(unlimited), "failed_attempts": dict(unlimited)}
config["rc_joins"] = {"local": dict(unlimited), "remote": dict(unlimited)}
config["rc_invites"] = {"per_room": dict(unlimited), "per_user": dict(unlimited), "per_issuer": dict(unlimited)}
config["log_config"] = None
yaml.safe_dump(config, open(path, "w"))
PY
    "$venv/bin/python" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" > "$dir/log.txt" 2>&1 &
    echo $! > "$dir/pid"
    for _ in $(seq 1 600); do
        (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && { echo "Synapse on http://127.0.0.1:$port (pid $(cat "$dir/pid"))"; exit 0; }
        kill -0 "$(cat "$dir/pid")" 2>/dev/null || { echo "Synapse exited; see $dir/log.txt" >&2; tail -20 "$dir/log.txt" >&2; exit 1; }
        sleep 0.1
    done
    echo "Synapse did not listen within 60 s" >&2
    exit 1
    ;;
stop)
    if [ -e "$dir/pid" ]; then
        pid=$(cat "$dir/pid")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start STATE_DIR PORT [SERVER_NAME] | stop STATE_DIR" >&2
    exit 2
    ;;
esac
