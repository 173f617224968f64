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
    /// The encoded records (uncompressed).
    private var payload = ByteWriter()
    /// One record's body, reused: its length prefix comes first.
    private var body = ByteWriter(capacity: 64)

    /// `capacity`: the encoded bytes expected, reserved up front so the
    /// payload is not copied as it grows.
    public init(compression: CompressionCodec = .none, capacity: Int = 0) {
        self.compression = compression
        payload = ByteWriter(capacity: capacity)
    }

    /// Encoded bytes so far, before compression and the 61-byte header.
    public var payloadBytesCount: Int { payload.count }

    /// `offsetDelta`: the record's offset within the batch; nil for the next.
    public mutating func append(key: [UInt8]?, value: [UInt8]?, headers: [RecordHeader] = [], timestamp: Int64, offsetDelta: Int32? = nil) {
        precondition(recordsCount < Limits.recordsPerBatchMax, "batch record limit reached")
        if recordsCount == 0 {
            baseTimestamp = timestamp
            maxTimestamp = timestamp
        } else if timestamp > maxTimestamp {
            maxTimestamp = timestamp
        }
        body.bytes.removeAll(keepingCapacity: true)
        body.writeInt8(0)
        body.writeVarlong(timestamp - baseTimestamp)
        body.writeVarint(offsetDelta ?? Int32(recordsCount))
        var length = body.count + Self.nullableLength(key) + Self.nullableLength(value)
        var headerBytes = ByteWriter()
        headerBytes.writeVarint(Int32(headers.count))
        for header in headers {
            Self.writeNullable(&headerBytes, header.key)
            Self.writeNullable(&headerBytes, header.value)
        }
        length += headerBytes.count
        payload.writeVarint(Int32(length))
        payload.writeBytes(body.bytes)
        Self.writeNullable(&payload, key)
        Self.writeNullable(&payload, value)
        payload.writeBytes(headerBytes.bytes)
        recordsCount += 1
    }

    /// The batch's bytes, CRC included. At least one record must have been appended.
    public func build() -> [UInt8] {
        precondition(recordsCount > 0, "a record batch needs at least one record")
        let records = compression == .none ? payload.bytes : Compression.compress(payload.bytes, codec: compression, xerialSnappy: xerialSnappy)
        var attributes = compression.rawValue
        if isTransactional { attributes |= 0x10 }
        if isControl { attributes |= 0x20 }
        if logAppendTime != nil { attributes |= 0x08 }
        var writer = ByteWriter(capacity: RecordBatch.headerBytesCount + records.count)
        writer.writeInt64(baseOffset)
        writer.writeInt32(0)  // batchLength, patched below
        writer.writeInt32(partitionLeaderEpoch)
        writer.writeInt8(2)
        writer.writeUInt32(0)  // crc, patched below
        writer.writeInt16(attributes)
        writer.writeInt32(lastOffsetDelta ?? Int32(recordsCount - 1))
        writer.writeInt64(baseTimestamp)
        writer.writeInt64(logAppendTime ?? maxTimestamp)
        writer.writeInt64(producerID)
        writer.writeInt16(producerEpoch)
        writer.writeInt32(baseSequence)
        writer.writeInt32(Int32(recordsCount))
        writer.writeBytes(records)
        writer.patchUInt32(UInt32(writer.count - RecordBatch.lengthFieldEnd), at: 8)
        writer.patchUInt32(CRC32C.checksum(writer.bytes, from: RecordBatch.crcStart), at: 17)
        return writer.bytes
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
