#!/usr/bin/env bash
# Builds the libFuzzer targets (with AddressSanitizer) and runs each.
# Usage: Tests/Fuzz/run.sh [SECONDS per target] (default 20).
#   record-batch: Tests/Fuzz/RecordBatchFuzz.swift, seeded with the real
#                 client batches of Tests/KafkaWireTests/Fixtures
#   request:      Tests/Fuzz/RequestFuzz.swift, seeded with requests the
#                 seed script below writes
# Crashes land in .build/fuzz/ as crash-* files and reproduce with
#   .build/fuzz/<target>-fuzzer .build/fuzz/crash-...
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-20}
out=.build/fuzz
mkdir -p "$out/modules/CCRC32C" "$out/corpus-record-batch" "$out/corpus-request"
clang -O1 -fsanitize=fuzzer-no-link,address -c Sources/CCRC32C/crc32c.c -I Sources/CCRC32C/include -o "$out/crc32c.o"
cat > "$out/modules/CCRC32C/module.modulemap" <<MAP
module CCRC32C {
    header "$(pwd)/Sources/CCRC32C/include/ccrc32c.h"
    export *
}
MAP
build() {  # target name, source, module name, more sources
    swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name "$3" \
        Sources/Core/*.swift Sources/KafkaWire/*.swift Sources/KafkaWire/Protocol/*.swift ${4:-} "$2" \
        -I "$out/modules" -I Sources/CLZ4 -I Sources/CZlib -I Sources/CSnappy -I Sources/CZstd \
        "$out/crc32c.o" -llz4 -lz -lsnappy -lzstd \
        -o "$out/$1-fuzzer" 2> >(grep -v "Cannot export local symbol" >&2)
}
build record-batch Tests/Fuzz/RecordBatchFuzz.swift FuzzRecordBatch
build request Tests/Fuzz/RequestFuzz.swift FuzzRequest "$(echo Sources/ChatWire/*.swift)"
cp Tests/KafkaWireTests/Fixtures/*.bin "$out/corpus-record-batch/"
# Request seeds: a header for each API at a supported version, then a few body bytes.
python3 - "$out/corpus-request" <<'PY'
import struct, sys
for key, version in [(0, 8), (1, 11), (2, 5), (3, 8), (8, 7), (9, 5), (10, 2), (11, 5), (12, 3), (13, 2),
                     (14, 3), (15, 4), (17, 1), (18, 3), (19, 4), (20, 3), (22, 1), (23, 3), (36, 1),
                     (32000, 0), (32001, 0)]:
    body = struct.pack(">hhih", key, version, 1, 4) + b"seed" + b"\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x00"
    open("%s/api-%d-v%d" % (sys.argv[1], key, version), "wb").write(body)
PY
for target in record-batch request; do
    echo "fuzzing $target for ${seconds}s"
    status=0
    "$out/$target-fuzzer" "$out/corpus-$target" -max_total_time="$seconds" -max_len=65536 \
        -artifact_prefix="$out/" -print_final_stats=1 > "$out/$target.log" 2>&1 || status=$?
    grep -E "^(Done|stat::number_of_executed_units|stat::new_units_added)|ERROR|SUMMARY" "$out/$target.log" || true
    if [ "$status" -ne 0 ]; then
        echo "the $target fuzzer failed (exit $status); see $out/$target.log" >&2
        exit "$status"
    fi
done
