#!/usr/bin/env bash
# The disk's own sequential-write bandwidth, measured with fio the way the
# log store's benchmarks write, so Docs/benchmarks.md can give append speed
# as a fraction of what the disk allows:
#   fsync mode  <->  fio --rw=write --bs=<batch> --fdatasync=1
#   none mode   <->  fio --rw=write --bs=64k (buffered), one fsync at the end
# Usage: Benchmarks/fio-baseline.sh [DIRECTORY] [RUNS]. DIRECTORY must be on
# the disk the benchmarks use (POSTDUIF_BENCH_DIR). Prints the median of RUNS.
set -euo pipefail
directory=${1:-${POSTDUIF_BENCH_DIR:-/tmp}}
runs=${2:-3}
mkdir -p "$directory"
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }

measure() {  # name, then fio options; prints MB/s
    local name=$1; shift
    local file="$directory/postduif-fio-$name"
    fio --name="$name" --filename="$file" --rw=write --ioengine=sync --output-format=json "$@" \
        | python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["write"]; print("%.1f %.0f" % (j["bw_bytes"]/1e6, j["iops"]))'
    rm -f "$file"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for job in "fdatasync-64k:--bs=64k --size=1G --fdatasync=1" \
           "fdatasync-16k:--bs=16k --size=256M --fdatasync=1" \
           "buffered-64k:--bs=64k --size=2G --end_fsync=1"; do
    name=${job%%:*}; options=${job#*:}
    results=()
    for _ in $(seq "$runs"); do
        # shellcheck disable=SC2086
        results+=("$(measure "$name" $options | cut -d' ' -f1)")
    done
    printf '%-16s median %s MB/s  (runs: %s)\n' "$name" "$(printf '%s\n' "${results[@]}" | median)" "${results[*]}"
done
