// The fuzz build compiles Core into the same module (Tests/Fuzz/run.sh).
#if canImport(Core)
import Core
#endif


/// Why a record batch was refused. Each case maps to one Kafka error code at
/// the server boundary (see `kafkaErrorCode`).
public enum RecordBatchError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(needed: Int, available: Int)
    case lengthMismatch(declared: Int, actual: Int)
    case unsupportedMagic(Int8)
    case checksumMismatch(stored: UInt32, computed: UInt32)
    case recordCountMismatch(recordsCount: Int32, lastOffsetDelta: Int32)
    case invalidRecord(String)
    case unknownCompression(Int16)
    case decompression(CompressionError)
    case tooLarge(size: Int, max: Int)
    case controlBatchFromClient
    case transactional
    case producerWithoutSequence

    public var description: String {
        switch self {
        case .truncated(let needed, let available):
            "batch truncated: needs \(needed) bytes, \(available) present"
        case .lengthMismatch(let declared, let actual):
            "batchLength says \(declared) bytes follow the length field, \(actual) do"
        case .unsupportedMagic(let magic):
            "magic \(magic) is not supported (only record batch v2, magic 2)"
        case .checksumMismatch(let stored, let computed):
            "CRC-32C mismatch: stored \(hex(stored)), computed \(hex(computed))"
        case .recordCountMismatch(let count, let delta):
            "recordsCount \(count) does not equal lastOffsetDelta \(delta) + 1"
        case .invalidRecord(let message):
            "invalid record: \(message)"
        case .unknownCompression(let codec):
            "unknown compression codec \(codec)"
        case .decompression(let error):
            error.description
        case .tooLarge(let size, let max):
            "batch of \(size) bytes exceeds the limit of \(max)"
        case .controlBatchFromClient:
            "control batches may not be produced by clients"
        case .transactional:
            "transactional batches are not supported"
        case .producerWithoutSequence:
            "an idempotent producer's batch must carry a base sequence"
        }
    }

    /// The Kafka error code a broker answers with for this refusal.
    public var kafkaErrorCode: Int16 {
        switch self {
        case .truncated, .lengthMismatch, .checksumMismatch: 2  // CORRUPT_MESSAGE
        case .tooLarge: 10  // MESSAGE_TOO_LARGE
        case .unknownCompression: 76  // UNSUPPORTED_COMPRESSION_TYPE
        case .transactional: 48  // INVALID_TXN_STATE
        case .unsupportedMagic, .recordCountMismatch, .invalidRecord, .decompression,
            .controlBatchFromClient, .producerWithoutSequence: 87  // INVALID_RECORD
        }
    }
}

func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}

/// One record header: a key and an optional value.
public struct RecordHeader: Equatable, Sendable {
    public var key: [UInt8]
    public var value: [UInt8]?

    public init(key: [UInt8], value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}

/// One record of a batch, decoded.
public struct Record: Equatable, Sendable {
    public var attributes: Int8
    public var timestampDelta: Int64
    public var offsetDelta: Int32
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [RecordHeader]

    public init(attributes: Int8 = 0, timestampDelta: Int64, offsetDelta: Int32, key: [UInt8]?, value: [UInt8]?, headers: [RecordHeader] = []) {
        self.attributes = attributes
        self.timestampDelta = timestampDelta
        self.offsetDelta = offsetDelta
        self.key = key
        self.value = value
        self.headers = headers
    }
}

/// A Kafka record batch (magic 2), validated, with its exact bytes.
///
/// Layout (bytes): baseOffset 0–7, batchLength 8–11, partitionLeaderEpoch
/// 12–15, magic 16, crc 17–20, then the CRC-covered part from attributes at
/// 21 to the end. The broker stores and serves these bytes as they are, after
/// stamping the base offset and leader epoch, which lie outside the CRC.
public struct RecordBatch: Sendable, Equatable {
    public static let headerBytesCount = 61
    static let lengthFieldEnd = 12
    /// The bytes up to the length field's end, which the length does not count.
    public static let lengthFieldEndCount = lengthFieldEnd
    static let crcStart = 21

    public private(set) var bytes: [UInt8]
    public private(set) var baseOffset: Int64
    public private(set) var partitionLeaderEpoch: Int32
    public let attributes: Int16
    public let lastOffsetDelta: Int32
    public let baseTimestamp: Int64
    public let maxTimestamp: Int64
    public let producerID: Int64
    public let producerEpoch: Int16
    public let baseSequence: Int32
    public let recordsCount: Int32
    public let crc: UInt32

    public var compression: CompressionCodec? { CompressionCodec(rawValue: attributes & 0x07) }
    public var usesLogAppendTime: Bool { attributes & 0x08 != 0 }
    public var isTransactional: Bool { attributes & 0x10 != 0 }
    public var isControl: Bool { attributes & 0x20 != 0 }
    public var lastOffset: Int64 { baseOffset + Int64(lastOffsetDelta) }
    /// The offset after this batch: where the next batch starts.
    public var nextOffset: Int64 { lastOffset + 1 }
    public var lastSequence: Int32 {
        baseSequence < 0 ? -1 : Int32(truncatingIfNeeded: (Int64(baseSequence) + Int64(lastOffsetDelta)) % (Int64(Int32.max) + 1))
    }
    public var sizeBytes: Int { bytes.count }

    /// Parses and checks one batch that must span `bytes` exactly: magic 2,
    /// length, CRC-32C, record count, size limit and a known codec.
    public init(validating bytes: [UInt8], bytesMax: Int = Limits.batchBytesDefaultMax) throws(RecordBatchError) {
        try self.init(bytes, bytesMax: bytesMax, checksum: true)
    }

    /// Parses a batch this broker validated when it stored it, skipping the
    /// CRC-32C: RocksDB checks its own block and blob checksums on every
    /// read, and a history page reads dozens of batches. Every other check
    /// stays, and every read is bounds-checked, so damaged bytes still give
    /// an error rather than a crash.
    public init(storedBytes bytes: [UInt8]) throws(RecordBatchError) {
        try self.init(bytes, bytesMax: Limits.batchBytesConfigurableMax, checksum: false)
    }

    /// Parses a batch this process has just built with
    /// `RecordBatchBuilder`, skipping the CRC-32C `build` computed from the
    /// same memory: a second pass over an upload's chunks found nothing the
    /// first could not. Every other check stays.
    public init(builtBytes bytes: [UInt8], bytesMax: Int) throws(RecordBatchError) {
        try self.init(bytes, bytesMax: bytesMax, checksum: false)
    }

    private init(_ bytes: [UInt8], bytesMax: Int, checksum: Bool) throws(RecordBatchError) {
        guard bytes.count <= bytesMax else { throw .tooLarge(size: bytes.count, max: bytesMax) }
        guard bytes.count >= Self.headerBytesCount else {
            throw .truncated(needed: Self.headerBytesCount, available: bytes.count)
        }
        var reader = ByteReader(bytes)
        do {
            baseOffset = try reader.readInt64()
            let batchLength = Int(try reader.readInt32())
            guard batchLength == bytes.count - Self.lengthFieldEnd else {
                if batchLength > bytes.count - Self.lengthFieldEnd {
                    throw RecordBatchError.truncated(needed: batchLength + Self.lengthFieldEnd, available: bytes.count)
                }
                throw RecordBatchError.lengthMismatch(declared: batchLength, actual: bytes.count - Self.lengthFieldEnd)
            }
            partitionLeaderEpoch = try reader.readInt32()
            let magic = try reader.readInt8()
            guard magic == 2 else { throw RecordBatchError.unsupportedMagic(magic) }
            crc = try reader.readUInt32()
            attributes = try reader.readInt16()
            lastOffsetDelta = try reader.readInt32()
            baseTimestamp = try reader.readInt64()
            maxTimestamp = try reader.readInt64()
            producerID = try reader.readInt64()
            producerEpoch = try reader.readInt16()
            baseSequence = try reader.readInt32()
            recordsCount = try reader.readInt32()
        } catch let error as RecordBatchError {
            throw error
        } catch {
            throw .truncated(needed: Self.headerBytesCount, available: bytes.count)
        }
        if checksum {
            let computed = CRC32C.checksum(bytes, from: Self.crcStart)
            guard computed == crc else { throw .checksumMismatch(stored: crc, computed: computed) }
        }
        // Fewer records than offsets: a compacted batch keeps its offsets
        // (a producer's batch must have one per offset: validateForProduce).
        guard recordsCount > 0, lastOffsetDelta >= 0, Int64(recordsCount) <= Int64(lastOffsetDelta) + 1 else {
            throw .recordCountMismatch(recordsCount: recordsCount, lastOffsetDelta: lastOffsetDelta)
        }
        guard recordsCount <= Limits.recordsPerBatchMax else {
            throw .invalidRecord("\(recordsCount) records exceed the limit of \(Limits.recordsPerBatchMax)")
        }
        guard CompressionCodec(rawValue: attributes & 0x07) != nil else { throw .unknownCompression(attributes & 0x07) }
        self.bytes = bytes
    }

    /// The extra rules for a batch a client produces: no control or
    /// transactional batches, and an idempotent producer's batch carries a
    /// sequence.
    /// The whole stored batches in a Fetch answer's records field, in order;
    /// a last partial batch (Kafka may cut one at the byte limit) is dropped.
    /// `checksums`: each batch's CRC-32C checked too, for a reader that
    /// serves the values as they are (a file's chunks) with no other check.
    public static func split(stored bytes: [UInt8], checksums: Bool = false) throws(RecordBatchError) -> [RecordBatch] {
        var batches: [RecordBatch] = []
        var start = 0
        while bytes.count - start >= 12 {
            let length = Int(bytes[start + 8]) << 24 | Int(bytes[start + 9]) << 16 | Int(bytes[start + 10]) << 8 | Int(bytes[start + 11])
            let end = start + 12 + length
            guard length > 0, end <= bytes.count else { break }
            let slice = Array(bytes[start..<end])
            batches.append(checksums ? try RecordBatch(validating: slice, bytesMax: Limits.batchBytesConfigurableMax) : try RecordBatch(storedBytes: slice))
            start = end
        }
        return batches
    }

    public func validateForProduce() throws(RecordBatchError) {
        guard Int64(recordsCount) == Int64(lastOffsetDelta) + 1 else {
            throw .recordCountMismatch(recordsCount: recordsCount, lastOffsetDelta: lastOffsetDelta)
        }
        if isControl { throw .controlBatchFromClient }
        if isTransactional { throw .transactional }
        if producerID >= 0 && baseSequence < 0 { throw .producerWithoutSequence }
    }

    /// Sets the base offset and partition leader epoch, which lie outside the
    /// CRC, so the checksum stays valid.
    public mutating func stamp(baseOffset: Int64, partitionLeaderEpoch: Int32) {
        self.baseOffset = baseOffset
        self.partitionLeaderEpoch = partitionLeaderEpoch
        var writer = ByteWriter()
        writer.writeInt64(baseOffset)
        writer.writeInt32(partitionLeaderEpoch)
        bytes.withUnsafeMutableBufferPointer { buffer in
            for index in 0..<8 { buffer[index] = writer.bytes[index] }
            for index in 0..<4 { buffer[12 + index] = writer.bytes[8 + index] }
        }
    }

    /// The first 16 bytes with a new base offset and leader epoch, for
    /// writing a stamped batch without copying the rest of it.
    public func stampedPrefix(baseOffset: Int64, partitionLeaderEpoch: Int32) -> [UInt8] {
        var writer = ByteWriter(capacity: 16)
        writer.writeInt64(baseOffset)
        writer.writeBytes(bytes[8..<12])
        writer.writeInt32(partitionLeaderEpoch)
        return writer.bytes
    }

    /// The batch's bytes stamped with the broker's clock (a topic's
    /// `message.timestamp.type=LogAppendTime`): the timestamp-type attribute
    /// set, the max timestamp made `time`, the CRC computed again. Readers
    /// then take `time` as every record's timestamp, as Kafka's do.
    public func withLogAppendTime(_ time: Int64) -> [UInt8] {
        var stamped = bytes
        let attributes = UInt16(bitPattern: self.attributes) | 0x08
        stamped[21] = UInt8(attributes >> 8)
        stamped[22] = UInt8(attributes & 0xff)
        let maxTimestamp = UInt64(bitPattern: time)
        for index in 0..<8 { stamped[35 + index] = UInt8((maxTimestamp >> (56 - 8 * UInt64(index))) & 0xff) }
        let crc = CRC32C.checksum(stamped, from: Self.crcStart)
        for index in 0..<4 { stamped[17 + index] = UInt8((crc >> (24 - 8 * UInt32(index))) & 0xff) }
        return stamped
    }

    /// The records payload, decompressed when the batch is compressed.
    public func recordsPayload(outputBytesMax: Int = Limits.decompressedBatchBytesMax) throws(RecordBatchError) -> [UInt8] {
        guard let codec = compression else { throw .unknownCompression(attributes & 0x07) }
        let payload = bytes[Self.headerBytesCount...]
        if codec == .none { return Array(payload) }
        do {
            return try Compression.decompress(payload, codec: codec, outputBytesMax: outputBytesMax)
        } catch {
            throw .decompression(error)
        }
    }

    /// Decodes every record, checking that there are exactly `recordsCount`
    /// of them with consecutive offset deltas and that each record's length
    /// matches its contents.
    public func records() throws(RecordBatchError) -> [Record] {
        var records: [Record] = []
        records.reserveCapacity(Int(recordsCount))
        try walkRecords(decodeFully: { _ in true }) { _, record, _ in records.append(record) }
        return records
    }

    /// Every record's key (nil for a null key), with the same structural
    /// checks as `records()` but without copying values or headers: the
    /// append path of a conversation topic needs only the keys.
    public func recordKeys() throws(RecordBatchError) -> [[UInt8]?] {
        var keys: [[UInt8]?] = []
        keys.reserveCapacity(Int(recordsCount))
        try walkRecords(decodeFully: { _ in false }) { _, record, _ in keys.append(record.key) }
        return keys
    }

    /// Each record's offset delta and key, and where its value lies in
    /// `bytes` (nil: a null value), with the same checks as `records()`
    /// but no value copied; nil for a compressed batch, whose values are
    /// not in its bytes. A file's chunk goes from the batch read into the
    /// buffer for the socket in one copy.
    public func valueRanges() throws(RecordBatchError) -> [(offsetDelta: Int32, key: [UInt8]?, value: Range<Int>?)]? {
        guard compression == CompressionCodec.none else { return nil }
        var found: [(offsetDelta: Int32, key: [UInt8]?, value: Range<Int>?)] = []
        found.reserveCapacity(Int(recordsCount))
        try walkRecords(decodeFully: { _ in false }) { _, record, value in found.append((record.offsetDelta, record.key, value)) }
        return found
    }

    /// The records at the given offset deltas (ascending), decoding only
    /// those: the others are walked over without copying. A history page
    /// needs one record from each of many batches. In a whole batch a
    /// record's delta is its position; a compacted batch has fewer records
    /// and is walked whole. A delta no record has (compacted away) is left out.
    public func records(at deltas: [Int]) throws(RecordBatchError) -> [Record] {
        precondition(zip(deltas, deltas.dropFirst()).allSatisfy { $0 < $1 }, "offset deltas must ascend")
        guard let last = deltas.last else { return [] }
        guard deltas.first! >= 0 && last <= Int(lastOffsetDelta) else {
            throw .invalidRecord("record \(last) asked of a batch of \(Int(lastOffsetDelta) + 1) offsets")
        }
        let wanted = Set(deltas)
        var found: [Record] = []
        found.reserveCapacity(deltas.count)
        guard Int64(recordsCount) == Int64(lastOffsetDelta) + 1 else {
            try walkRecords(decodeFully: { _ in true }) { _, record, _ in
                if wanted.contains(Int(record.offsetDelta)) { found.append(record) }
            }
            return found
        }
        try walkRecords(throughPosition: last, decodeFully: { wanted.contains($0) }) { position, record, _ in
            if wanted.contains(position) { found.append(record) }
        }
        return found
    }

    /// The one walk over the records that the three readers above share:
    /// uncompressed payloads are read in place, records that `decodeFully`
    /// does not select are passed over without copying values or headers,
    /// and offset deltas must count up from 0. A walk of the whole batch
    /// also requires the payload to end exactly after the last record.
    private func walkRecords(
        throughPosition lastPosition: Int? = nil,
        decodeFully: (Int) -> Bool,
        _ visit: (Int, Record, _ value: Range<Int>?) -> Void
    ) throws(RecordBatchError) {
        var reader: ByteReader
        if compression == CompressionCodec.none {
            reader = ByteReader(bytes, from: Self.headerBytesCount)
        } else {
            reader = ByteReader(try recordsPayload())
        }
        let end = lastPosition ?? Int(recordsCount) - 1
        // Whole batches number their records 0, 1, 2, ...; a compacted one
        // keeps the deltas of those left, rising, within the batch's range.
        let whole = Int64(recordsCount) == Int64(lastOffsetDelta) + 1
        var previousDelta: Int32 = -1
        for index in 0...end {
            let record: Record
            let value: Range<Int>?
            do {
                (record, value) = try Self.decodeRecord(&reader, keyOnly: !decodeFully(index))
            } catch {
                throw .invalidRecord("record \(index): \(error)")
            }
            guard whole ? record.offsetDelta == Int32(index) : record.offsetDelta > previousDelta && record.offsetDelta <= lastOffsetDelta else {
                throw .invalidRecord("record \(index) has offsetDelta \(record.offsetDelta)")
            }
            previousDelta = record.offsetDelta
            visit(index, record, value)
        }
        if lastPosition == nil && !reader.isAtEnd {
            throw .invalidRecord("\(reader.remainingCount) bytes after the last of \(recordsCount) records")
        }
    }

    /// A record, and where its value lies in the reader's bytes (nil: a
    /// null value); `keyOnly` leaves the value and headers uncopied.
    static func decodeRecord(_ reader: inout ByteReader, keyOnly: Bool = false) throws(WireError) -> (Record, value: Range<Int>?) {
        let length = Int(try reader.readVarint("record length"))
        guard length >= 0 else { throw .malformed("negative record length \(length)") }
        try reader.require(length, "record")
        let recordEnd = reader.position + length
        var inner = ByteReader(reader.bytes, from: reader.position, to: recordEnd)
        let attributes = try inner.readInt8("record attributes")
        let timestampDelta = try inner.readVarlong("timestampDelta")
        let offsetDelta = try inner.readVarint("offsetDelta")
        let key = try readNullableBytes(&inner, "key")
        let valueLength = Int(try inner.readVarint("value"))
        guard valueLength >= -1 else { throw .malformed("value length \(valueLength)") }
        let valueRange = valueLength == -1 ? nil : try inner.skip(valueLength, "value")
        let value = valueRange.map { keyOnly ? [] : Array(inner.bytes[$0]) }
        let headerCount = Int(try inner.readVarint("header count"))
        guard headerCount >= 0, headerCount <= Limits.headersPerRecordMax else {
            throw .malformed("header count \(headerCount) outside 0...\(Limits.headersPerRecordMax)")
        }
        var headers: [RecordHeader] = []
        if !keyOnly { headers.reserveCapacity(headerCount) }
        for _ in 0..<headerCount {
            guard let headerKey = try readNullableBytes(&inner, "header key", skip: keyOnly) else {
                throw .malformed("null header key")
            }
            let headerValue = try readNullableBytes(&inner, "header value", skip: keyOnly)
            if !keyOnly { headers.append(RecordHeader(key: headerKey, value: headerValue)) }
        }
        guard inner.isAtEnd else { throw .malformed("record length \(length) leaves \(inner.remainingCount) bytes unread") }
        _ = try reader.skip(length)
        return (Record(attributes: attributes, timestampDelta: timestampDelta, offsetDelta: offsetDelta, key: key, value: value, headers: headers), valueRange)
    }

    /// Reads a varint-length byte string; with `skip`, checks and passes it,
    /// returning an empty array for a present value.
    static func readNullableBytes(_ reader: inout ByteReader, _ what: StaticString, skip: Bool = false) throws(WireError) -> [UInt8]? {
        let length = Int(try reader.readVarint(what))
        if length == -1 { return nil }
        guard length >= 0 else { throw .malformed("\(what) length \(length)") }
        if skip {
            _ = try reader.skip(length, what)
            return []
        }
        return try reader.readBytes(length, what)
    }

    /// Splits a run of concatenated batches (a log read or a Fetch response)
    /// into validated batches. A trailing partial batch, which Fetch may
    /// return, is ignored.
    public static func batches(in bytes: [UInt8], bytesMax: Int = Limits.batchBytesConfigurableMax) throws(RecordBatchError) -> [RecordBatch] {
        var result: [RecordBatch] = []
        var position = 0
        while bytes.count - position >= lengthFieldEnd {
            let declared = Int(Int32(bitPattern: UInt32(bytes[position + 8]) << 24 | UInt32(bytes[position + 9]) << 16 | UInt32(bytes[position + 10]) << 8 | UInt32(bytes[position + 11])))
            guard declared >= 0 else { throw .lengthMismatch(declared: declared, actual: bytes.count - position - lengthFieldEnd) }
            let end = position + lengthFieldEnd + declared
            guard end <= bytes.count else { break }
            result.append(try RecordBatch(validating: Array(bytes[position..<end]), bytesMax: bytesMax))
            position = end
        }
        return result
    }
}
