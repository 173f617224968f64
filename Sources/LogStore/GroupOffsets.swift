import Core
import KafkaWire
import RocksDB

/// A consumer group's committed position in one partition.
public struct CommittedOffset: Sendable, Equatable {
    public var offset: Int64
    public var leaderEpoch: Int32
    /// The client's metadata string, returned exactly as committed.
    public var metadata: String?

    public init(offset: Int64, leaderEpoch: Int32 = -1, metadata: String? = nil) {
        self.offset = offset
        self.leaderEpoch = leaderEpoch
        self.metadata = metadata
    }
}

/// A committed offset with where it belongs.
public struct GroupOffsetEntry: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var committed: CommittedOffset

    public init(topic: String, partition: Int32, committed: CommittedOffset) {
        self.topic = topic
        self.partition = partition
        self.committed = committed
    }
}

extension LogStore {
    /// Key: group length (uint16), group, topic length (uint16), topic,
    /// partition (int32). One prefix per group, so a group's offsets are one range.
    static func groupPrefix(_ group: String) -> [UInt8] {
        let bytes = Array(group.utf8)
        var key = [UInt8]()
        key.append(UInt8(truncatingIfNeeded: bytes.count >> 8))
        key.append(UInt8(truncatingIfNeeded: bytes.count))
        key += bytes
        return key
    }

    static func groupOffsetKey(group: String, topic: String, partition: Int32) -> [UInt8] {
        var key = groupPrefix(group)
        let topicBytes = Array(topic.utf8)
        key.append(UInt8(truncatingIfNeeded: topicBytes.count >> 8))
        key.append(UInt8(truncatingIfNeeded: topicBytes.count))
        key += topicBytes
        Keys.append(&key, UInt32(bitPattern: partition))
        return key
    }

    /// Persists a group's offsets in one write, durable under the store's
    /// durability mode before it returns.
    public func commitOffsets(group: String, _ entries: [GroupOffsetEntry]) async throws {
        guard group.utf8.count <= Int(UInt16.max) else {
            throw LogStoreError(.invalidConfiguration, "group id of \(group.utf8.count) bytes is too long")
        }
        let write = WriteBatch()
        for entry in entries {
            guard entry.topic.utf8.count <= Limits.topicNameBytesMax else {
                throw LogStoreError(.invalidTopicName, "topic name of \(entry.topic.utf8.count) bytes is too long")
            }
            var value = ByteWriter(capacity: 16)
            value.writeInt8(1)  // format version
            value.writeInt64(entry.committed.offset)
            value.writeInt32(entry.committed.leaderEpoch)
            value.writeString(entry.committed.metadata)
            write.put(Self.groupOffsetKey(group: group, topic: entry.topic, partition: entry.partition), value.bytes, in: families.groupOffsets)
        }
        try storage { try database.write(write, sync: false) }
        let ticket = groupCommit.noteWrite(nil, wal: true)
        if durability == .fsync {
            try await groupCommit.waitDurable(ticket)
        }
    }

    /// Every offset a group has committed.
    public func committedOffsets(group: String) throws(LogStoreError) -> [GroupOffsetEntry] {
        let prefix = Self.groupPrefix(group)
        let iterator = database.makeIterator(in: families.groupOffsets, lowerBound: prefix, upperBound: Keys.end(of: prefix))
        iterator.seekToFirst()
        var entries: [GroupOffsetEntry] = []
        while iterator.isValid {
            let key = iterator.key
            do {
                var keyReader = ByteReader(key, from: prefix.count)
                let topicLength = Int(UInt16(try keyReader.readUInt8()) << 8 | UInt16(try keyReader.readUInt8()))
                let topic = String(decoding: try keyReader.readBytes(topicLength), as: UTF8.self)
                let partition = try keyReader.readInt32()
                var reader = ByteReader(iterator.value)
                guard try reader.readInt8() == 1 else { throw WireError.malformed("unknown committed offset version") }
                let committed = CommittedOffset(offset: try reader.readInt64(), leaderEpoch: try reader.readInt32(), metadata: try reader.readNullableString())
                entries.append(GroupOffsetEntry(topic: topic, partition: partition, committed: committed))
            } catch {
                throw LogStoreError(.corrupt, "committed offset of group \(group) unreadable: \(error)")
            }
            iterator.next()
        }
        try storage { try iterator.checkError() }
        return entries
    }

    /// Deletes a group's committed offsets: those of `partitions`, or all
    /// when nil (DeleteGroups, OffsetDelete). Synced before it returns.
    public func deleteCommittedOffsets(group: String, partitions: [(topic: String, partition: Int32)]?) throws(LogStoreError) {
        let write = WriteBatch()
        if let partitions {
            for (topic, partition) in partitions {
                write.delete(Self.groupOffsetKey(group: group, topic: topic, partition: partition), in: families.groupOffsets)
            }
        } else {
            let prefix = Self.groupPrefix(group)
            write.deleteRange(from: prefix, to: Keys.end(of: prefix), in: families.groupOffsets)
        }
        try storage { try database.write(write, sync: true) }
    }
}
