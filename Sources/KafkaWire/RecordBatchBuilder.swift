// The fuzz build compiles Core into the same module (Tests/Fuzz/run.sh).
#if canImport(Core)
import Core
#endif


/// Builds a record batch v2, as a Kafka producer would: for tests, the chat
/// gateway and the load tool.
///
/// Records are encoded as they are appended (the batch's first timestamp is
/// its base, as the Java producer does; a later, smaller timestamp gets a
/// negative delta), so `build` only compresses, writes the header and
/// computes the CRC: a load generator appends hundreds of thousands of
/// records a second through here.
public struct RecordBatchBuilder: Sendable {
    public var baseOffset: Int64 = 0
    public var partitionLeaderEpoch: Int32 = -1
    public var compression: CompressionCodec = .none
    /// Snappy payloads in xerial framing (kafka-python) instead of raw (librdkafka).
    public var xerialSnappy = false
    public var producerID: Int64 = -1
    public var producerEpoch: Int16 = -1
    public var baseSequence: Int32 = -1
    public var isTransactional = false
    public var isControl = false
    public private(set) var recordsCount = 0
    /// Set to keep a batch's own last offset delta when records are left
    /// out (compaction keeps every record's offset); nil: the last record's.
    public var lastOffsetDelta: Int32? = nil
    /// Set for a batch stamped with the broker's clock: the attribute, and
    /// this as its max timestamp.
    public var logAppendTime: Int64? = nil
    private var baseTimestamp: Int64 = 0
    private var maxTimestamp: Int64 = 0
    /// The batch's header, zeroed until `build` writes it, then the
    /// encoded records (uncompressed): an uncompressed batch is built in
    /// place, without copying its records behind a header.
    private var payload = ByteWriter()
    /// One record's body, reused: its length prefix comes first.
    private var body = ByteWriter(capacity: 64)

    /// `capacity`: the encoded bytes expected, reserved up front so the
    /// payload is not copied as it grows.
    public init(compression: CompressionCodec = .none, capacity: Int = 0) {
        self.compression = compression
        payload = ByteWriter(capacity: RecordBatch.headerBytesCount + capacity)
        payload.bytes.append(contentsOf: repeatElement(0, count: RecordBatch.headerBytesCount))
    }

    /// Encoded bytes so far, before compression and the 61-byte header.
    public var payloadBytesCount: Int { payload.count - RecordBatch.headerBytesCount }

    /// The most records one batch holds (`append` stops the process past
    /// it): callers that take records from outside check against it first.
    public static let recordsMax = Limits.recordsPerBatchMax

    /// The bytes a record takes in a batch (its length prefix included),
    /// for reserving a builder's capacity.
    public static func encodedCount(keyCount: Int?, valueCount: Int?, headers: [RecordHeader] = []) -> Int {
        // Attributes, a timestamp delta and an offset delta of at most 10 and 5 bytes.
        var length = 1 + 10 + 5 + lengthOfNullable(keyCount) + lengthOfNullable(valueCount) + varintLength(Int32(headers.count))
        for header in headers { length += nullableLength(header.key) + nullableLength(header.value) }
        return varintLength(Int32(clamping: length)) + length
    }

    /// `offsetDelta`: the record's offset within the batch; nil for the next.
    public mutating func append(key: [UInt8]?, value: [UInt8]?, headers: [RecordHeader] = [], timestamp: Int64, offsetDelta: Int32? = nil) {
        // Copied in once, not zero-filled first: values may be a file's
        // chunks of hundreds of KiB.
        _ = append(key: key, valueCount: value?.count, headers: headers, timestamp: timestamp, offsetDelta: offsetDelta) { bytes in
            bytes.append(contentsOf: value ?? [])
            return true
        }
    }

    /// Appends a record whose value `writeValue` writes into the batch
    /// itself (`valueCount` bytes; nil: a null value): a caller whose value
    /// is encoded another way (base64 in an HTTP body) decodes it straight
    /// into place. False, with nothing appended, when `writeValue` is.
    public mutating func append(key: [UInt8]?, valueCount: Int?, headers: [RecordHeader] = [], timestamp: Int64, offsetDelta: Int32? = nil,
                                writeValue: (UnsafeMutableRawBufferPointer) -> Bool) -> Bool {
        append(key: key, valueCount: valueCount, headers: headers, timestamp: timestamp, offsetDelta: offsetDelta) { bytes in
            let at = bytes.count
            let count = valueCount ?? 0
            bytes.append(contentsOf: repeatElement(0, count: count))
            return bytes.withUnsafeMutableBytes { writeValue(UnsafeMutableRawBufferPointer(rebasing: $0[at..<(at + count)])) }
        }
    }

    /// Appends a record of a `valueCount`-byte value that `appendValue`
    /// appends to the batch's bytes itself, in as many pieces as it has: a
    /// file's chunk goes from the socket's buffers into the batch in one
    /// copy, with nothing zero-filled first. It must append exactly
    /// `valueCount` bytes.
    public mutating func appendInPlace(key: [UInt8]?, valueCount: Int, headers: [RecordHeader] = [], timestamp: Int64,
                                       appendValue: (inout [UInt8]) -> Void) {
        _ = append(key: key, valueCount: valueCount, headers: headers, timestamp: timestamp, offsetDelta: nil) { bytes in
            appendValue(&bytes)
            return true
        }
    }

    /// The one append: a value of `valueCount` bytes (nil: a null value)
    /// that `appendValue` appends to the batch's bytes; false from it takes
    /// the record back and returns false.
    private mutating func append(key: [UInt8]?, valueCount: Int?, headers: [RecordHeader], timestamp: Int64, offsetDelta: Int32?,
                                 appendValue: (inout [UInt8]) -> Bool) -> Bool {
        precondition(recordsCount < Limits.recordsPerBatchMax, "batch record limit reached")
        body.bytes.removeAll(keepingCapacity: true)
        body.writeInt8(0)
        body.writeVarlong(timestamp - (recordsCount == 0 ? timestamp : baseTimestamp))
        body.writeVarint(offsetDelta ?? Int32(recordsCount))
        var length = body.count + Self.nullableLength(key) + Self.lengthOfNullable(valueCount) + Self.varintLength(Int32(headers.count))
        for header in headers { length += Self.nullableLength(header.key) + Self.nullableLength(header.value) }
        let mark = payload.count
        payload.writeVarint(Int32(length))
        payload.writeBytes(body.bytes)
        Self.writeNullable(&payload, key)
        if let valueCount {
            payload.writeVarint(Int32(valueCount))
            let end = payload.count + valueCount
            // Room for the headers behind the value too, so a value of
            // hundreds of KiB is not moved to grow the array after it.
            let room = mark + Self.varintLength(Int32(length)) + length
            if payload.bytes.capacity < room { payload.bytes.reserveCapacity(max(room, 2 * payload.bytes.capacity)) }
            guard appendValue(&payload.bytes) else {
                payload.bytes.removeSubrange(mark...)
                return false
            }
            precondition(payload.count == end, "appendValue appended \(payload.count - end + valueCount) bytes of \(valueCount)")
        } else {
            payload.writeVarint(-1)
        }
        payload.writeVarint(Int32(headers.count))
        for header in headers {
            Self.writeNullable(&payload, header.key)
            Self.writeNullable(&payload, header.value)
        }
        if recordsCount == 0 {
            baseTimestamp = timestamp
            maxTimestamp = timestamp
        } else if timestamp > maxTimestamp {
            maxTimestamp = timestamp
        }
        recordsCount += 1
        return true
    }

    /// Where the records end, to take back those appended after it.
    public struct Mark: Sendable {
        fileprivate let count: Int
        fileprivate let records: Int
        fileprivate let baseTimestamp: Int64
        fileprivate let maxTimestamp: Int64
    }

    public var mark: Mark { Mark(count: payload.count, records: recordsCount, baseTimestamp: baseTimestamp, maxTimestamp: maxTimestamp) }

    /// Removes the records appended after `mark`: a caller adding many
    /// records to a batch it shares takes its own back when one of them
    /// turns out bad (an HTTP request's value that is not base64).
    public mutating func rollBack(to mark: Mark) {
        payload.bytes.removeSubrange(mark.count...)
        recordsCount = mark.records
        baseTimestamp = mark.baseTimestamp
        maxTimestamp = mark.maxTimestamp
    }

    /// The batch's bytes, CRC included. At least one record must have been
    /// appended. An uncompressed batch's header is written into the
    /// builder's own buffer and that buffer returned, so its records are
    /// not copied; a builder appended to afterwards copies it then, and the
    /// batch returned stays as it was.
    public mutating func build() -> [UInt8] {
        precondition(recordsCount > 0, "a record batch needs at least one record")
        var attributes = compression.rawValue
        if isTransactional { attributes |= 0x10 }
        if isControl { attributes |= 0x20 }
        if logAppendTime != nil { attributes |= 0x08 }
        var header = ByteWriter(capacity: RecordBatch.headerBytesCount)
        func writeHeader(length: Int) {
            header.writeInt64(baseOffset)
            header.writeInt32(Int32(length - RecordBatch.lengthFieldEnd))
            header.writeInt32(partitionLeaderEpoch)
            header.writeInt8(2)
            header.writeUInt32(0)  // crc, patched below
            header.writeInt16(attributes)
            header.writeInt32(lastOffsetDelta ?? Int32(recordsCount - 1))
            header.writeInt64(baseTimestamp)
            header.writeInt64(logAppendTime ?? maxTimestamp)
            header.writeInt64(producerID)
            header.writeInt16(producerEpoch)
            header.writeInt32(baseSequence)
            header.writeInt32(Int32(recordsCount))
        }
        guard compression == .none else {
            let compressed = Compression.compress(Array(payload.bytes[RecordBatch.headerBytesCount...]), codec: compression, xerialSnappy: xerialSnappy)
            writeHeader(length: RecordBatch.headerBytesCount + compressed.count)
            header.writeBytes(compressed)
            header.patchUInt32(CRC32C.checksum(header.bytes, from: RecordBatch.crcStart), at: 17)
            return header.bytes
        }
        writeHeader(length: payload.count)
        header.bytes.withUnsafeBytes { header in payload.bytes.withUnsafeMutableBytes { $0.copyMemory(from: header) } }
        payload.patchUInt32(CRC32C.checksum(payload.bytes, from: RecordBatch.crcStart), at: 17)
        return payload.bytes
    }

    static func lengthOfNullable(_ count: Int?) -> Int {
        guard let count else { return 1 }
        return varintLength(Int32(count)) + count
    }

    static func nullableLength(_ bytes: [UInt8]?) -> Int {
        guard let bytes else { return 1 }
        return varintLength(Int32(bytes.count)) + bytes.count
    }

    static func varintLength(_ value: Int32) -> Int {
        var v = UInt32(bitPattern: (value << 1) ^ (value >> 31))
        var count = 1
        while v >= 0x80 {
            v >>= 7
            count += 1
        }
        return count
    }

    static func writeNullable(_ writer: inout ByteWriter, _ bytes: [UInt8]?) {
        guard let bytes else {
            writer.writeVarint(-1)
            return
        }
        writer.writeVarint(Int32(bytes.count))
        writer.writeBytes(bytes)
    }
}
