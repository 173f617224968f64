import Core
import Foundation
import KafkaWire

/// When an append counts as done.
public enum Durability: String, Sendable, Codable, CaseIterable {
    /// The append returns once its WAL write is fsynced. Concurrent appends
    /// share one sync (group commit). The default: nothing acknowledged is
    /// lost to a crash of the process or of the machine.
    case fsync
    /// The append returns once RocksDB has it in its WAL buffer in the
    /// operating system; a machine crash may lose the newest appends. For
    /// replicated set-ups that acknowledge on replication.
    case none
}

/// A topic's settings, persisted with the topic.
public struct TopicConfiguration: Codable, Sendable, Equatable {
    public var partitionCount: Int32
    /// Keep the conversation index: every record's key is its conversation.
    public var conversationIndex: Bool
    /// Drop batches whose newest record is older than this; nil keeps them.
    public var retentionTime: Duration?
    /// Drop the oldest batches while a partition holds more than this; nil keeps them.
    public var retentionBytes: Int64?
    /// The largest batch accepted (Kafka's `max.message.bytes`).
    public var batchBytesMax: Int

    public init(
        partitionCount: Int32 = 1,
        conversationIndex: Bool = false,
        retentionTime: Duration? = nil,
        retentionBytes: Int64? = nil,
        batchBytesMax: Int = Limits.batchBytesDefaultMax
    ) {
        self.partitionCount = partitionCount
        self.conversationIndex = conversationIndex
        self.retentionTime = retentionTime
        self.retentionBytes = retentionBytes
        self.batchBytesMax = batchBytesMax
    }

    func validate() throws(LogStoreError) {
        guard partitionCount >= 1 && partitionCount <= Limits.partitionsPerTopicMax else {
            throw LogStoreError(.invalidConfiguration, "partition count \(partitionCount) is outside 1...\(Limits.partitionsPerTopicMax)")
        }
        guard batchBytesMax >= RecordBatch.headerBytesCount && batchBytesMax <= Limits.batchBytesConfigurableMax else {
            throw LogStoreError(.invalidConfiguration, "max batch size \(batchBytesMax) is outside \(RecordBatch.headerBytesCount)...\(Limits.batchBytesConfigurableMax)")
        }
        if let retentionBytes, retentionBytes < 0 {
            throw LogStoreError(.invalidConfiguration, "retention bytes \(retentionBytes) is negative")
        }
        if let retentionTime, retentionTime <= .zero {
            throw LogStoreError(.invalidConfiguration, "retention time \(retentionTime) is not positive")
        }
    }
}

/// A topic as stored: its permanent id (never reused, so a recreated topic
/// never sees an old topic's keys), name and configuration.
public struct TopicDescriptor: Codable, Sendable, Equatable {
    public var id: UInt32
    public var name: String
    public var configuration: TopicConfiguration

    /// Kafka's topic-name rule: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
    static func validate(name: String) throws(LogStoreError) {
        let legal = name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == 0x2e || byte == 0x5f || byte == 0x2d
        }
        guard !name.isEmpty, name.utf8.count <= Limits.topicNameBytesMax, legal, name != ".", name != ".." else {
            throw LogStoreError(.invalidTopicName, "topic name '\(name)' must be 1 to \(Limits.topicNameBytesMax) characters of [a-zA-Z0-9._-], not '.' or '..'")
        }
    }
}
