// The fuzz build compiles Core into the same module (Tests/Fuzz/run.sh).
#if canImport(Core)
import Core
#endif


// libFuzzer target for the record batch decoder and the decompressors.
//
// Fault model: any bytes at all arrive as a produced batch. The decoder
// must either refuse them with an error or accept them, never crash, hang
// or allocate without bound. Built and run by `Tests/Fuzz/run.sh` (and so
// by `make test` for a short run, `make fuzz` for a long one).
//
// This file is compiled together with Sources/KafkaWire/*.swift into one
// module, hence no `import KafkaWire`.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRecordBatch(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? RecordBatch(validating: bytes, bytesMax: Limits.batchBytesDefaultMax)
    // Mutated bytes almost never carry a valid CRC, so the record decoders
    // are reached through the parse that skips it (the one history uses).
    if let batch = try? RecordBatch(storedBytes: bytes) {
        _ = try? batch.validateForProduce()
        let records = try? batch.records()
        let keys = try? batch.recordKeys()
        // The two decoders must agree on which batches are well formed.
        precondition((records == nil) == (keys == nil), "records() and recordKeys() disagree")
        if let records, let keys {
            precondition(records.map(\.key) == keys, "records() and recordKeys() return different keys")
            let positions = Array(stride(from: 0, to: records.count, by: 2))
            precondition((try? batch.records(at: positions)) == positions.map { records[$0] }, "records(at:) disagrees")
        }
    }
    // The payload decoders on their own, with a small output cap so a
    // decompression bomb is refused quickly.
    if let first = bytes.first {
        let codec = CompressionCodec(rawValue: Int16(first % 5)) ?? .none
        _ = try? Compression.decompress(bytes.dropFirst(), codec: codec, outputBytesMax: 1 << 20)
    }
    _ = try? RecordBatch.batches(in: bytes)
    return 0
}
