// Old versions of APIs the broker serves from a later version on: the
// request is read in its own schema and answered in it, every partition
// with UNSUPPORTED_VERSION, so an old client learns why instead of seeing
// its connection close. (Produce v0-2 has its own answer in Produce.swift.)

public enum OldVersionAnswer {
    /// The answer's body for `api` at `version`, below the broker's
    /// range; nil for APIs and versions without one here.
    public static func body(_ api: ApiKey, version: Int16, request reader: inout ByteReader) throws(WireError) -> [UInt8]? {
        let refused = ErrorCode.unsupportedVersion.rawValue
        var writer = ByteWriter(capacity: 64)
        switch (api, version) {
        case (.fetch, 0...3):
            _ = try reader.readInt32("replica id")
            _ = try reader.readInt32("max wait")
            _ = try reader.readInt32("min bytes")
            if version >= 3 { _ = try reader.readInt32("max bytes") }
            let topics = try partitionsByTopic(&reader) { reader throws(WireError) in
                _ = try reader.readInt64("fetch offset")
                _ = try reader.readInt32("partition max bytes")
            }
            if version >= 1 { writer.writeInt32(0) }  // throttle time
            writer.writeArray(topics) { writer, topic in
                writer.writeString(topic.name)
                writer.writeArray(topic.partitions) { writer, partition in
                    writer.writeInt32(partition)
                    writer.writeInt16(refused)
                    writer.writeInt64(-1)  // high watermark
                    writer.writeNullableBytes([])
                }
            }
        case (.listOffsets, 0):
            _ = try reader.readInt32("replica id")
            let topics = try partitionsByTopic(&reader) { reader throws(WireError) in
                _ = try reader.readInt64("timestamp")
                _ = try reader.readInt32("max offsets")
            }
            writer.writeArray(topics) { writer, topic in
                writer.writeString(topic.name)
                writer.writeArray(topic.partitions) { writer, partition in
                    writer.writeInt32(partition)
                    writer.writeInt16(refused)
                    writer.writeArrayCount(0)  // offsets
                }
            }
        case (.offsetForLeaderEpoch, 0...1):
            let topics = try partitionsByTopic(&reader) { reader throws(WireError) in
                _ = try reader.readInt32("leader epoch")
            }
            writer.writeArray(topics) { writer, topic in
                writer.writeString(topic.name)
                writer.writeArray(topic.partitions) { writer, partition in
                    writer.writeInt16(refused)
                    writer.writeInt32(partition)
                    if version >= 1 { writer.writeInt32(-1) }  // leader epoch
                    writer.writeInt64(-1)  // end offset
                }
            }
        default:
            return nil
        }
        return writer.bytes
    }

    /// `topics[name, partitions[index, …]]`, the rest of each partition read by `rest`.
    static func partitionsByTopic(_ reader: inout ByteReader, rest: (inout ByteReader) throws(WireError) -> Void) throws(WireError) -> [(name: String, partitions: [Int32])] {
        try reader.readArray(elementBytesMin: 6, "topics") { (reader: inout ByteReader) throws(WireError) -> (name: String, partitions: [Int32]) in
            let name = try reader.readString("topic")
            let partitions = try reader.readArray(elementBytesMin: 4, "partitions") { (reader: inout ByteReader) throws(WireError) -> Int32 in
                let index = try reader.readInt32("partition")
                try rest(&reader)
                return index
            } ?? []
            return (name, partitions)
        } ?? []
    }
}
