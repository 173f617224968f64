#!/usr/bin/env bash
# The kernel's floor on this machine for the two things every chat message
# costs a server, whatever the server is written in: a loopback request and
# answer that wakes a sleeping thread (an HTTP exchange, one at a time), and
# a small append made durable with fdatasync. Docs/benchmarks.md uses them to
# tell what no server could go below.
#
#   Benchmarks/floor/kernel.sh [EXCHANGES] [APPENDS]     (defaults 50000 5000)
#
# Needs a C compiler (Debian: gcc). The durable appends go to a file under
# BENCH_DIR (default /tmp), which should be on the disk the broker uses.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/loopback-exchange" "$here/loopback-exchange.c"
cc -O2 -o "$work/durable-append" "$here/durable-append.c"
"$work/loopback-exchange" "${1:-50000}"
data=$(mktemp "${BENCH_DIR:-/tmp}/durable-append.XXXXXX")
"$work/durable-append" "${2:-5000}" "$data"
rm -f "$data"
