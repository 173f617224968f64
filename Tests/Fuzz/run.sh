#!/usr/bin/env bash
# Builds the record batch fuzzer with libFuzzer and AddressSanitizer and runs
# it. Usage: Tests/Fuzz/run.sh [SECONDS] (default 20). Seeds are the real
# client batches of Tests/KafkaWireTests/Fixtures; crashes land in
# .build/fuzz/ as crash-* files, which reproduce with
#   .build/fuzz/record-batch-fuzzer .build/fuzz/crash-...
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-20}
out=.build/fuzz
mkdir -p "$out/modules/CCRC32C" "$out/corpus"
clang -O1 -fsanitize=fuzzer-no-link,address -c Sources/CCRC32C/crc32c.c -I Sources/CCRC32C/include -o "$out/crc32c.o"
cat > "$out/modules/CCRC32C/module.modulemap" <<MAP
module CCRC32C {
    header "$(pwd)/Sources/CCRC32C/include/ccrc32c.h"
    export *
}
MAP
swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name FuzzRecordBatch \
    Sources/KafkaWire/*.swift Tests/Fuzz/RecordBatchFuzz.swift \
    -I "$out/modules" -I Sources/CLZ4 -I Sources/CZlib -I Sources/CSnappy -I Sources/CZstd \
    "$out/crc32c.o" -llz4 -lz -lsnappy -lzstd \
    -o "$out/record-batch-fuzzer" 2> >(grep -v "Cannot export local symbol" >&2)
cp Tests/KafkaWireTests/Fixtures/*.bin "$out/corpus/"
"$out/record-batch-fuzzer" "$out/corpus" -max_total_time="$seconds" -max_len=65536 \
    -artifact_prefix="$out/" -print_final_stats=1 2>&1 | tail -15
