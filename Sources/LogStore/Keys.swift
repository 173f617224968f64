/// Key layouts of the column families. Every integer is big-endian so that
/// RocksDB's bytewise order is numeric order; every key of a partition starts
/// with the same 8-byte prefix (topic id, partition index), so a partition is
/// one contiguous key range and a topic is one too.
enum Keys {
    /// Topic id and partition index: the prefix of every per-partition key.
    static func partitionPrefix(topicID: UInt32, partition: Int32) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(24)
        append(&bytes, topicID)
        append(&bytes, UInt32(bitPattern: partition))
        return bytes
    }

    static func topicPrefix(topicID: UInt32) -> [UInt8] {
        var bytes = [UInt8]()
        append(&bytes, topicID)
        return bytes
    }

    /// Log column family: prefix + base offset → the batch's location (`BatchLocation`).
    static func batch(prefix: [UInt8], baseOffset: Int64) -> [UInt8] {
        precondition(baseOffset >= 0, "negative base offset \(baseOffset)")
        var bytes = prefix
        append(&bytes, UInt64(baseOffset))
        return bytes
    }

    /// The smallest key after every key of a prefix (for exclusive upper bounds).
    static func end(of prefix: [UInt8]) -> [UInt8] {
        var bytes = prefix
        var index = bytes.count - 1
        while index >= 0 {
            if bytes[index] != 0xff {
                bytes[index] += 1
                return Array(bytes[0...index])
            }
            index -= 1
        }
        preconditionFailure("prefix of only 0xff bytes has no end")
    }

    /// Conversation index: prefix + conversation length + conversation + sequence → offset.
    static func conversation(prefix: [UInt8], conversation: [UInt8]) -> [UInt8] {
        precondition(conversation.count <= 255, "conversation id longer than 255 bytes")
        var bytes = prefix
        bytes.append(UInt8(conversation.count))
        bytes.append(contentsOf: conversation)
        return bytes
    }

    static func conversationEntry(conversationPrefix: [UInt8], sequence: UInt64) -> [UInt8] {
        var bytes = conversationPrefix
        append(&bytes, sequence)
        return bytes
    }

    /// Epoch cache: prefix + leader epoch → start offset.
    /// A partition's compaction checkpoint (in the partition-state family,
    /// beside the state itself): the offset compaction has cleaned up to.
    static func cleanerCheckpoint(prefix: [UInt8]) -> [UInt8] { prefix + Array("/cleaned".utf8) }

    /// A compaction's swap in progress (see `PartitionLog.compact`).
    static func cleanerSwap(prefix: [UInt8]) -> [UInt8] { prefix + Array("/swap".utf8) }

    static func epoch(prefix: [UInt8], epoch: Int32) -> [UInt8] {
        precondition(epoch >= 0, "negative leader epoch \(epoch)")
        var bytes = prefix
        append(&bytes, UInt32(epoch))
        return bytes
    }

    /// Producer state: prefix + producer id → epoch and recent batches.
    static func producer(prefix: [UInt8], producerID: Int64) -> [UInt8] {
        var bytes = prefix
        append(&bytes, UInt64(bitPattern: producerID))
        return bytes
    }

    static let topicRecordPrefix: [UInt8] = Array("topic/".utf8)
    static let nextTopicIDKey: [UInt8] = Array("next-topic-id".utf8)
    static let nextProducerIDKey: [UInt8] = Array("next-producer-id".utf8)
    static let clusterIDKey: [UInt8] = Array("cluster-id".utf8)
    /// Written by a clean close, removed when the store opens.
    /// Broker-wide records (`LogStore.brokerRecord`): "broker/<name>".
    static func brokerRecord(name: String) -> [UInt8] { Array("broker/\(name)".utf8) }
    static let closedCleanlyKey: [UInt8] = Array("closed-cleanly".utf8)

    static func topicRecord(name: String) -> [UInt8] {
        topicRecordPrefix + Array(name.utf8)
    }

    // MARK: Encoding helpers

    static func append(_ bytes: inout [UInt8], _ value: UInt32) {
        bytes.append(UInt8(value >> 24)); bytes.append(UInt8(truncatingIfNeeded: value >> 16))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8)); bytes.append(UInt8(truncatingIfNeeded: value))
    }

    static func append(_ bytes: inout [UInt8], _ value: UInt64) {
        append(&bytes, UInt32(value >> 32))
        append(&bytes, UInt32(truncatingIfNeeded: value))
    }

    static func append(_ bytes: inout [UInt8], _ value: Int64) {
        append(&bytes, UInt64(bitPattern: value))
    }

    static func readUInt64(_ bytes: UnsafeRawBufferPointer, at index: Int) -> UInt64 {
        precondition(index + 8 <= bytes.count, "reading past a key")
        var value: UInt64 = 0
        for offset in 0..<8 { value = value << 8 | UInt64(bytes[index + offset]) }
        return value
    }

    static func readUInt64(_ bytes: [UInt8], at index: Int) -> UInt64 {
        bytes.withUnsafeBytes { readUInt64($0, at: index) }
    }

    static func readUInt32(_ bytes: UnsafeRawBufferPointer, at index: Int) -> UInt32 {
        precondition(index + 4 <= bytes.count, "reading past a key")
        var value: UInt32 = 0
        for offset in 0..<4 { value = value << 8 | UInt32(bytes[index + offset]) }
        return value
    }
}
