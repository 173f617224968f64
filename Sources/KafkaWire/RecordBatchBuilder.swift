/// Builds a record batch v2, as a Kafka producer would: for tests, the chat
/// gateway and the load tool.
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
    private var records: [(timestamp: Int64, key: [UInt8]?, value: [UInt8]?, headers: [RecordHeader])] = []

    public init(compression: CompressionCodec = .none) {
        self.compression = compression
    }

    public var recordsCount: Int { records.count }

    public mutating func append(key: [UInt8]?, value: [UInt8]?, headers: [RecordHeader] = [], timestamp: Int64) {
        precondition(records.count < Limits.recordsPerBatchMax, "batch record limit reached")
        records.append((timestamp, key, value, headers))
    }

    /// The batch's bytes, CRC included. At least one record must have been appended.
    public func build() -> [UInt8] {
        precondition(!records.isEmpty, "a record batch needs at least one record")
        let baseTimestamp = records.map(\.timestamp).min()!
        let maxTimestamp = records.map(\.timestamp).max()!
        var payload = ByteWriter(capacity: records.reduce(0) { $0 + ($1.value?.count ?? 0) + ($1.key?.count ?? 0) + 16 })
        var body = ByteWriter(capacity: 256)
        for (index, record) in records.enumerated() {
            body.bytes.removeAll(keepingCapacity: true)
            body.writeInt8(0)
            body.writeVarlong(record.timestamp - baseTimestamp)
            body.writeVarint(Int32(index))
            Self.writeNullable(&body, record.key)
            Self.writeNullable(&body, record.value)
            body.writeVarint(Int32(record.headers.count))
            for header in record.headers {
                Self.writeNullable(&body, header.key)
                Self.writeNullable(&body, header.value)
            }
            payload.writeVarint(Int32(body.count))
            payload.writeBytes(body.bytes)
        }
        let records = compression == .none ? payload.bytes : Compression.compress(payload.bytes, codec: compression, xerialSnappy: xerialSnappy)
        var attributes = compression.rawValue
        if isTransactional { attributes |= 0x10 }
        if isControl { attributes |= 0x20 }
        var writer = ByteWriter(capacity: RecordBatch.headerBytesCount + records.count)
        writer.writeInt64(baseOffset)
        writer.writeInt32(0)  // batchLength, patched below
        writer.writeInt32(partitionLeaderEpoch)
        writer.writeInt8(2)
        writer.writeUInt32(0)  // crc, patched below
        writer.writeInt16(attributes)
        writer.writeInt32(Int32(self.records.count - 1))
        writer.writeInt64(baseTimestamp)
        writer.writeInt64(maxTimestamp)
        writer.writeInt64(producerID)
        writer.writeInt16(producerEpoch)
        writer.writeInt32(baseSequence)
        writer.writeInt32(Int32(self.records.count))
        writer.writeBytes(records)
        writer.patchUInt32(UInt32(writer.count - RecordBatch.lengthFieldEnd), at: 8)
        writer.patchUInt32(CRC32C.checksum(writer.bytes, from: RecordBatch.crcStart), at: 17)
        return writer.bytes
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
