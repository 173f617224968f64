import Foundation
import Testing

@testable import KafkaWire

func fixture(_ name: String) throws -> [UInt8] {
    let url = try #require(Bundle.module.resourceURL).appendingPathComponent("Fixtures/\(name)")
    return [UInt8](try Data(contentsOf: url))
}

func sampleBatch(codec: CompressionCodec = .none, count: Int = 10, producerID: Int64 = -1, baseSequence: Int32 = -1) -> [UInt8] {
    var builder = RecordBatchBuilder(compression: codec)
    builder.producerID = producerID
    builder.producerEpoch = producerID >= 0 ? 0 : -1
    builder.baseSequence = baseSequence
    for index in 0..<count {
        builder.append(
            key: Array("conversation-\(index % 3)".utf8),
            value: Array("message \(index) ".utf8) + [UInt8](repeating: UInt8(index), count: 100),
            headers: index.isMultiple(of: 2) ? [RecordHeader(key: Array("h".utf8), value: nil)] : [],
            timestamp: 1_795_000_000_000 + Int64(index))
    }
    return builder.build()
}

@Suite struct ChecksumAndVarintTests {
    @Test func crc32cMatchesTheStandardCheckValue() {
        // The CRC-32C check value for "123456789" (RFC 3720, appendix B.4).
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func hardwareAndTableChecksumsAgreeOnEveryLengthAndSplit() {
        var generator = SystemRandomNumberGenerator()
        // Lengths around the three-stripe block (3 x 4096) and its multiples.
        for length in [0, 1, 7, 8, 9, 4095, 12_287, 12_288, 12_289, 24_576, 65_536, 100_003] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(CRC32C.checksum(bytes) == CRC32C.portableChecksum(bytes), "length \(length)")
            if length > 10 {
                #expect(CRC32C.checksum(bytes, from: 3) == CRC32C.portableChecksum(Array(bytes[3...])), "offset start, length \(length)")
            }
        }
        #expect(CRC32C.portableChecksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test(arguments: [Int32.min, -65, -64, -1, 0, 1, 63, 64, 300, Int32.max])
    func zigzagVarintRoundTrips(value: Int32) throws {
        var writer = ByteWriter()
        writer.writeVarint(value)
        var reader = ByteReader(writer.bytes)
        #expect(try reader.readVarint() == value)
        #expect(reader.isAtEnd)
    }

    @Test(arguments: [Int64.min, -1, 0, 1, 1 << 40, Int64.max])
    func zigzagVarlongRoundTrips(value: Int64) throws {
        var writer = ByteWriter()
        writer.writeVarlong(value)
        var reader = ByteReader(writer.bytes)
        #expect(try reader.readVarlong() == value)
    }

    @Test func zigzagEncodesSmallNegativesInOneByte() {
        var writer = ByteWriter()
        writer.writeVarint(-1)
        writer.writeVarint(1)
        #expect(writer.bytes == [0x01, 0x02])
    }

    @Test func overlongVarintIsRefused() {
        var reader = ByteReader([UInt8](repeating: 0xff, count: 11))
        #expect(throws: WireError.self) { _ = try reader.readVarlong() }
        var short = ByteReader([0x80])
        #expect(throws: WireError.self) { _ = try short.readVarint() }
    }
}

@Suite struct CompressionTests {
    @Test(arguments: CompressionCodec.allCases)
    func codecRoundTrips(codec: CompressionCodec) throws {
        let input = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        let compressed = Compression.compress(input, codec: codec)
        if codec != .none { #expect(compressed.count < input.count) }
        #expect(try Compression.decompress(compressed[...], codec: codec) == input)
    }

    @Test func xerialSnappyFramingRoundTripsAcrossBlocks() throws {
        let input = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let framed = Compression.compress(input, codec: .snappy, xerialSnappy: true)
        #expect(Array(framed.prefix(8)) == Compression.xerialMagic)
        #expect(try Compression.decompress(framed[...], codec: .snappy) == input)
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func garbageIsRefusedWithTheCodecsMessage(codec: CompressionCodec) {
        let garbage: [UInt8] = Array("this is not compressed data at all".utf8)
        #expect(throws: CompressionError.self) { _ = try Compression.decompress(garbage[...], codec: codec) }
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func truncatedPayloadIsRefused(codec: CompressionCodec) {
        let input = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let compressed = Compression.compress(input, codec: codec)
        #expect(throws: CompressionError.self) {
            _ = try Compression.decompress(compressed[0..<(compressed.count / 2)], codec: codec)
        }
    }

    @Test(arguments: [CompressionCodec.gzip, .snappy, .lz4, .zstd])
    func decompressionBombIsRefused(codec: CompressionCodec) {
        let zeros = [UInt8](repeating: 0, count: 1 << 20)
        let compressed = Compression.compress(zeros, codec: codec)
        #expect(throws: CompressionError.self) {
            _ = try Compression.decompress(compressed[...], codec: codec, outputBytesMax: 64 << 10)
        }
    }
}

@Suite struct RecordBatchTests {
    @Test(arguments: CompressionCodec.allCases)
    func builtBatchParsesBackWithEveryRecord(codec: CompressionCodec) throws {
        let bytes = sampleBatch(codec: codec, count: 25)
        let batch = try RecordBatch(validating: bytes)
        #expect(batch.compression == codec)
        #expect(batch.recordsCount == 25)
        #expect(batch.lastOffsetDelta == 24)
        #expect(batch.baseTimestamp == 1_795_000_000_000)
        #expect(batch.maxTimestamp == 1_795_000_000_024)
        let records = try batch.records()
        #expect(records.count == 25)
        #expect(records[7].key == Array("conversation-1".utf8))
        #expect(records[7].value == Array("message 7 ".utf8) + [UInt8](repeating: 7, count: 100))
        #expect(records[7].timestampDelta == 7)
        #expect(records[8].headers == [RecordHeader(key: Array("h".utf8), value: nil)])
    }

    @Test(arguments: [CompressionCodec.none, .zstd])
    func recordKeysMatchTheFullDecodeWithoutCopyingValues(codec: CompressionCodec) throws {
        let batch = try RecordBatch(validating: sampleBatch(codec: codec, count: 12))
        #expect(try batch.recordKeys() == batch.records().map(\.key))
        var builder = RecordBatchBuilder()
        builder.append(key: nil, value: [1], timestamp: 0)
        #expect(try RecordBatch(validating: builder.build()).recordKeys() == [nil])
    }

    @Test(arguments: [CompressionCodec.none, .lz4])
    func recordsAtPositionsDecodeOnlyThoseRecords(codec: CompressionCodec) throws {
        let batch = try RecordBatch(validating: sampleBatch(codec: codec, count: 12))
        let all = try batch.records()
        #expect(try batch.records(at: [0, 5, 11]) == [all[0], all[5], all[11]])
        #expect(try batch.records(at: []) == [])
        #expect(throws: RecordBatchError.self) { _ = try batch.records(at: [12]) }
    }

    /// A value written into the batch by the caller (the HTTP proxy's
    /// base64) makes the same bytes as the same value given whole; a writer
    /// that fails leaves nothing behind; a builder appended to after `build`
    /// (which hands over its own buffer) leaves the batch it built as it was.
    @Test(arguments: [CompressionCodec.none, .lz4])
    func valuesWrittenInPlaceMakeTheSameBatch(codec: CompressionCodec) throws {
        let values: [[UInt8]?] = [Array(repeating: 7, count: 1024), nil, [], Array(0...255)]
        var given = RecordBatchBuilder(compression: codec)
        var written = RecordBatchBuilder(compression: codec, capacity: values.reduce(0) {
            $0 + RecordBatchBuilder.encodedCount(keyCount: 4, valueCount: $1?.count)
        })
        for (index, value) in values.enumerated() {
            let key = Array("k-\(index)".utf8) + [0]
            given.append(key: key, value: value, timestamp: 1_795_000_000_000 + Int64(index))
            // A writer that fails: nothing of the record stays.
            #expect(!written.append(key: key, valueCount: 3, timestamp: 5) { _ in false })
            #expect(written.append(key: key, valueCount: value?.count, timestamp: 1_795_000_000_000 + Int64(index)) { output in
                value?.withUnsafeBytes { output.copyMemory(from: $0) }
                return true
            })
        }
        #expect(written.payloadBytesCount == given.payloadBytesCount)
        let bytes = written.build()
        #expect(bytes == given.build())
        let records = try RecordBatch(validating: bytes).records()
        #expect(records.map(\.value) == values)
        #expect(records.map(\.offsetDelta) == [0, 1, 2, 3])
        written.append(key: nil, value: [9], timestamp: 1_795_000_000_009)
        let next = try RecordBatch(validating: written.build())
        #expect(next.recordsCount == 5 && next.maxTimestamp == 1_795_000_000_009)
        #expect(try next.records().last?.value == [9])
        // The first batch's buffer was shared with the builder: still its own, CRC and all.
        #expect(try RecordBatch(validating: bytes).recordsCount == 4)
    }

    /// A value appended in pieces by the caller (an upload's received
    /// buffers) makes the same bytes as the value given whole, headers and
    /// all; records before and after it are untouched; and the batch's own
    /// bytes parse as built, without the CRC pass, as they do validated.
    @Test func valuesAppendedInPiecesMakeTheSameBatch() throws {
        let value = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let headers = [RecordHeader(key: Array("h".utf8), value: [1, 2])]
        var given = RecordBatchBuilder()
        var appended = RecordBatchBuilder()
        for builder in [0, 1] {
            func add(_ key: String, _ value: [UInt8], headers: [RecordHeader] = []) {
                if builder == 0 {
                    given.append(key: Array(key.utf8), value: value, headers: headers, timestamp: 1_795_000_000_000)
                } else {
                    appended.appendInPlace(key: Array(key.utf8), valueCount: value.count, headers: headers, timestamp: 1_795_000_000_000) { bytes in
                        for start in stride(from: 0, to: value.count, by: 7_919) { bytes += value[start..<min(start + 7_919, value.count)] }
                    }
                }
            }
            add("before", [5])
            add("file", value, headers: headers)
            add("empty", [])
        }
        let bytes = appended.build()
        #expect(bytes == given.build())
        let records = try RecordBatch(builtBytes: bytes, bytesMax: 1 << 20).records()
        #expect(records.map(\.value) == [[5], value, []])
        #expect(records[1].headers == headers)
        #expect(try RecordBatch(validating: bytes, bytesMax: 1 << 20).records() == records)
        // The size limit still holds for a built batch.
        #expect(throws: RecordBatchError.self) { _ = try RecordBatch(builtBytes: bytes, bytesMax: 1 << 10) }
    }

    /// Where each value lies in the batch's own bytes: the same values as
    /// `records()` copies out, a null value as nil; a compressed batch has
    /// none to point at; a record whose length does not fit its fields is
    /// refused as `records()` refuses it.
    @Test func valueRangesPointAtTheValuesInTheBatch() throws {
        let values: [[UInt8]?] = [Array(0...200), nil, [], [42]]
        var builder = RecordBatchBuilder()
        for (index, value) in values.enumerated() { builder.append(key: [UInt8(index)], value: value, timestamp: 1_795_000_000_000) }
        let batch = try RecordBatch(validating: builder.build())
        let ranges = try #require(try batch.valueRanges())
        #expect(ranges.map(\.offsetDelta) == [0, 1, 2, 3])
        #expect(ranges.map(\.key) == [[0], [1], [2], [3]])
        #expect(ranges.map { $0.value.map { Array(batch.bytes[$0]) } } == values)
        #expect(try batch.records().map(\.value) == values)
        var compressed = RecordBatchBuilder(compression: .lz4)
        compressed.append(key: [1], value: [1, 2, 3], timestamp: 1_795_000_000_000)
        #expect(try RecordBatch(validating: compressed.build()).valueRanges() == nil)
        var damaged = batch.bytes
        damaged[RecordBatch.headerBytesCount] = 0x7E  // the first record's length: 63, shorter than the record
        let parsed = try RecordBatch(storedBytes: damaged)
        #expect(throws: RecordBatchError.self) { _ = try parsed.valueRanges() }
        #expect(throws: RecordBatchError.self) { _ = try parsed.records() }
    }

    @Test func storedBytesSkipTheChecksumButKeepTheOtherChecks() throws {
        var bytes = sampleBatch(count: 3)
        bytes[bytes.count - 1] ^= 0x01  // a value byte: only the CRC notices
        #expect(throws: RecordBatchError.self) { _ = try RecordBatch(validating: bytes) }
        #expect(try RecordBatch(storedBytes: bytes).records().count == 3)
        bytes[16] = 1
        #expect(throws: RecordBatchError.unsupportedMagic(1)) { _ = try RecordBatch(storedBytes: bytes) }
    }

    @Test func stampedPrefixEqualsTheFirstSixteenBytesOfAStampedBatch() throws {
        let batch = try RecordBatch(validating: sampleBatch())
        var stamped = batch
        stamped.stamp(baseOffset: 99, partitionLeaderEpoch: 3)
        #expect(batch.stampedPrefix(baseOffset: 99, partitionLeaderEpoch: 3) == Array(stamped.bytes.prefix(16)))
    }

    @Test func stampingOffsetAndEpochKeepsTheChecksumValid() throws {
        var batch = try RecordBatch(validating: sampleBatch())
        batch.stamp(baseOffset: 1_000_000, partitionLeaderEpoch: 7)
        let reparsed = try RecordBatch(validating: batch.bytes)
        #expect(reparsed.baseOffset == 1_000_000)
        #expect(reparsed.partitionLeaderEpoch == 7)
        #expect(reparsed.lastOffset == 1_000_009)
    }

    @Test func corruptChecksumIsRefused() {
        var bytes = sampleBatch()
        bytes[bytes.count - 3] ^= 0xff
        #expect {
            _ = try RecordBatch(validating: bytes)
        } throws: { error in
            guard case RecordBatchError.checksumMismatch = error else { return false }
            return (error as! RecordBatchError).kafkaErrorCode == 2
        }
    }

    @Test func truncatedBatchIsRefused() {
        let bytes = sampleBatch()
        #expect(throws: RecordBatchError.truncated(needed: bytes.count, available: bytes.count - 10)) {
            _ = try RecordBatch(validating: Array(bytes.dropLast(10)))
        }
        #expect(throws: RecordBatchError.truncated(needed: 61, available: 20)) {
            _ = try RecordBatch(validating: Array(bytes.prefix(20)))
        }
    }

    @Test func wrongMagicIsRefused() {
        var bytes = sampleBatch()
        bytes[16] = 1
        #expect(throws: RecordBatchError.unsupportedMagic(1)) { _ = try RecordBatch(validating: bytes) }
    }

    @Test func recordCountThatDisagreesWithLastOffsetDeltaIsRefused() {
        var bytes = sampleBatch(count: 10)
        // recordsCount lives at 57; changing it needs a fresh CRC so that the
        // count check, not the checksum, is what refuses the batch.
        bytes[60] = 11
        let crc = CRC32C.checksum(bytes, from: 21)
        var writer = ByteWriter()
        writer.writeUInt32(crc)
        bytes.replaceSubrange(17..<21, with: writer.bytes)
        #expect(throws: RecordBatchError.recordCountMismatch(recordsCount: 11, lastOffsetDelta: 9)) {
            _ = try RecordBatch(validating: bytes)
        }
    }

    @Test func oversizedBatchIsRefusedBeforeParsing() {
        let bytes = sampleBatch(count: 100)
        #expect(throws: RecordBatchError.tooLarge(size: bytes.count, max: 1000)) {
            _ = try RecordBatch(validating: bytes, bytesMax: 1000)
        }
    }

    @Test func extraBytesAfterTheDeclaredLengthAreRefused() {
        let bytes = sampleBatch() + [0, 0, 0]
        #expect(throws: RecordBatchError.lengthMismatch(declared: bytes.count - 15, actual: bytes.count - 12)) {
            _ = try RecordBatch(validating: bytes)
        }
    }

    @Test func controlAndTransactionalBatchesAreRefusedForProduce() throws {
        var builder = RecordBatchBuilder()
        builder.append(key: nil, value: [1], timestamp: 0)
        builder.isControl = true
        #expect(throws: RecordBatchError.controlBatchFromClient) {
            try RecordBatch(validating: builder.build()).validateForProduce()
        }
        builder.isControl = false
        builder.isTransactional = true
        #expect(throws: RecordBatchError.transactional) {
            try RecordBatch(validating: builder.build()).validateForProduce()
        }
    }

    @Test func recordLengthThatLiesAboutItsContentsIsRefused() throws {
        var builder = RecordBatchBuilder()
        builder.append(key: [1, 2, 3], value: [4, 5, 6], timestamp: 0)
        var bytes = builder.build()
        // The first record's length varint is at 61; claim one byte more.
        bytes[61] += 2
        let crc = CRC32C.checksum(bytes, from: 21)
        var writer = ByteWriter()
        writer.writeUInt32(crc)
        bytes.replaceSubrange(17..<21, with: writer.bytes)
        let batch = try RecordBatch(validating: bytes)
        #expect(throws: RecordBatchError.self) { _ = try batch.records() }
    }

    @Test func concatenatedBatchesSplitAndIgnoreATrailingPartialBatch() throws {
        var first = try RecordBatch(validating: sampleBatch(count: 3))
        first.stamp(baseOffset: 0, partitionLeaderEpoch: 0)
        var second = try RecordBatch(validating: sampleBatch(count: 4))
        second.stamp(baseOffset: 3, partitionLeaderEpoch: 0)
        let bytes = first.bytes + second.bytes + Array(first.bytes.prefix(30))
        let batches = try RecordBatch.batches(in: bytes)
        #expect(batches.map(\.baseOffset) == [0, 3])
        #expect(batches.last?.nextOffset == 7)
    }
}

/// Batches captured from real clients (see the scripts beside the fixtures).
@Suite struct RealClientBatchTests {
    struct ExpectedRecord: Decodable {
        var key: String
        var value: String
        var timestamp: Int64
        var headers: [[String]]
    }

    @Test(arguments: ["none", "gzip", "snappy", "lz4", "zstd", "idempotent"])
    func kafkaPythonBatchesDecodeToTheRecordsItWrote(name: String) throws {
        let batch = try RecordBatch(validating: try fixture("kafka-python-\(name).bin"))
        try batch.validateForProduce()
        let expected = try JSONDecoder().decode([ExpectedRecord].self, from: Data(try fixture("kafka-python-\(name).json")))
        let records = try batch.records()
        #expect(records.count == expected.count)
        for (record, want) in zip(records, expected) {
            #expect(record.key == Array(want.key.utf8))
            #expect(record.value == Array(want.value.utf8))
            #expect(batch.baseTimestamp + record.timestampDelta == want.timestamp)
            #expect(record.headers.map { [String(decoding: $0.key, as: UTF8.self), String(decoding: $0.value ?? [], as: UTF8.self)] } == want.headers)
        }
        if name == "idempotent" {
            #expect(batch.producerID == 4242 && batch.producerEpoch == 3 && batch.baseSequence == 17)
            #expect(batch.lastSequence == 36)
        } else {
            #expect(batch.compression?.description == name)
        }
    }

    @Test(arguments: ["none", "gzip", "snappy", "lz4", "zstd", "idempotent"])
    func kcatBatchesDecodeToTheLinesItWasGiven(name: String) throws {
        let batch = try RecordBatch(validating: try fixture("kcat-\(name).bin"))
        try batch.validateForProduce()
        let records = try batch.records()
        #expect(records.count == 20)
        for (index, record) in records.enumerated() {
            #expect(record.key == Array("conversation-\(index % 3)".utf8))
            #expect(record.value == Array("message \(index) \(String(repeating: "x", count: 40))".utf8))
        }
        if name == "idempotent" {
            #expect(batch.producerID == 4242 && batch.baseSequence == 0)
        } else {
            #expect(batch.compression?.description == name)
        }
    }
}
