#!/usr/bin/env bash
# Append bandwidth as a fraction of the disk's, measured in turns (fio, then
# the log store, three times) so that both see the same disk state: the
# disk's figures drift by 20% or more between sittings on a shared VM.
#
#   fsync: "append 64KiB batches, fsync, plain topic"  vs  fio --bs=64k --fdatasync=1
#   none:  "append 64KiB batches, none, plain topic"   vs  fio --bs=64k buffered, fsync at the end
#
# Usage: Benchmarks/append-vs-fio.sh [DIRECTORY] [PAIRS]
set -euo pipefail
cd "$(dirname "$0")"
directory=${1:-${POSTDUIF_BENCH_DIR:-/tmp}}
pairs=${2:-3}
mkdir -p "$directory"

fio_mbps() {  # fio options...
    local file="$directory/postduif-fio-pair"
    fio --name=pair --filename="$file" --rw=write --ioengine=sync --output-format=json "$@" \
        | python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"]/1e6))'
    rm -f "$file"
}

append_mbps() {  # benchmark name
    POSTDUIF_BENCH_DIR="$directory" swift package --allow-writing-to-package-directory benchmark \
        --target LogStoreBenchmarks --filter "$1" --no-progress 2>&1 \
        | sed -n 's/^RESULT .*: \([0-9.]*\) MB\/s.*/\1/p'
}

for mode in fsync none; do
    if [ "$mode" = fsync ]; then fio_options="--bs=64k --size=1G --fdatasync=1"; else fio_options="--bs=64k --size=2G --end_fsync=1"; fi
    ratios=()
    for pair in $(seq "$pairs"); do
        # shellcheck disable=SC2086
        disk=$(fio_mbps $fio_options)
        store=$(append_mbps "append 64KiB batches, $mode, plain topic")
        ratio=$(python3 -c "print('%.2f' % ($store / $disk))")
        ratios+=("$ratio")
        echo "$mode pair $pair: fio $disk MB/s, append $store MB/s, ratio $ratio"
    done
    echo "$mode median ratio: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done
