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

/// What happens to a topic's old records (Kafka's `cleanup.policy`).
public struct CleanupPolicy: OptionSet, Codable, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Retention drops whole batches past the topic's time or size.
    public static let delete = CleanupPolicy(rawValue: 1)
    /// Compaction keeps the newest record of each key.
    public static let compact = CleanupPolicy(rawValue: 2)
}

/// Whose clock a stored record's timestamp is (Kafka's `message.timestamp.type`).
public enum TimestampType: String, Codable, Sendable {
    /// The producer's timestamps, kept as sent.
    case createTime = "CreateTime"
    /// The leader stamps each batch with its own clock when it appends it.
    case logAppendTime = "LogAppendTime"
}

/// A topic's settings, persisted with the topic. The broker derives them
/// from the topic's own configs (`overrides`, in Kafka's names) over its
/// defaults; the log store reads only the typed fields.
public struct TopicConfiguration: Codable, Sendable, Equatable {
    public var partitionCount: Int32
    /// Keep the conversation index: every record's key is its conversation.
    /// Fixed at creation: an index begun later would miss the older records.
    public var conversationIndex: Bool
    /// Drop batches whose newest record is older than this; nil keeps them.
    public var retentionTime: Duration?
    /// Drop the oldest batches while a partition holds more than this; nil keeps them.
    public var retentionBytes: Int64?
    /// The largest batch accepted (Kafka's `max.message.bytes`).
    public var batchBytesMax: Int
    /// A segment file closes once it holds this many bytes; nil for the store's default.
    public var segmentBytes: Int64?
    /// A segment file closes once its first batch is this old, so retention
    /// and compaction can act on it; nil never closes one by age.
    public var segmentTime: Duration?
    public var cleanupPolicy: CleanupPolicy
    /// acks=all appends need this many in-sync replicas; nil for the broker's setting.
    public var minInsyncReplicas: Int?
    public var timestampType: TimestampType
    /// A record stays uncompacted at least this long after it was appended.
    public var compactionLagMin: Duration
    /// Compaction starts once this share of a partition's bytes is not yet compacted.
    public var cleanableDirtyRatioMin: Double
    /// How long compaction keeps a tombstone (a record with a null value).
    public var tombstoneRetention: Duration
    /// The topic's own configs, in Kafka's names and as they were set; what
    /// the typed fields above were made from (with the broker's defaults).
    /// Nil for a topic stored before they were kept: its typed fields say.
    public var overrides: [String: String]?

    public init(
        partitionCount: Int32 = 1,
        conversationIndex: Bool = false,
        retentionTime: Duration? = nil,
        retentionBytes: Int64? = nil,
        batchBytesMax: Int = Limits.batchBytesDefaultMax,
        segmentBytes: Int64? = nil,
        segmentTime: Duration? = nil,
        cleanupPolicy: CleanupPolicy = .delete,
        minInsyncReplicas: Int? = nil,
        timestampType: TimestampType = .createTime,
        compactionLagMin: Duration = .zero,
        cleanableDirtyRatioMin: Double = 0.5,
        tombstoneRetention: Duration = .seconds(86_400),
        overrides: [String: String]? = [:]
    ) {
        self.partitionCount = partitionCount
        self.conversationIndex = conversationIndex
        self.retentionTime = retentionTime
        self.retentionBytes = retentionBytes
        self.batchBytesMax = batchBytesMax
        self.segmentBytes = segmentBytes
        self.segmentTime = segmentTime
        self.cleanupPolicy = cleanupPolicy
        self.minInsyncReplicas = minInsyncReplicas
        self.timestampType = timestampType
        self.compactionLagMin = compactionLagMin
        self.cleanableDirtyRatioMin = cleanableDirtyRatioMin
        self.tombstoneRetention = tombstoneRetention
        self.overrides = overrides
    }

    /// Topics stored before a setting existed read it as its default.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = TopicConfiguration()
        partitionCount = try container.decode(Int32.self, forKey: .partitionCount)
        conversationIndex = try container.decode(Bool.self, forKey: .conversationIndex)
        retentionTime = try container.decodeIfPresent(Duration.self, forKey: .retentionTime)
        retentionBytes = try container.decodeIfPresent(Int64.self, forKey: .retentionBytes)
        batchBytesMax = try container.decode(Int.self, forKey: .batchBytesMax)
        segmentBytes = try container.decodeIfPresent(Int64.self, forKey: .segmentBytes)
        segmentTime = try container.decodeIfPresent(Duration.self, forKey: .segmentTime)
        cleanupPolicy = try container.decodeIfPresent(CleanupPolicy.self, forKey: .cleanupPolicy) ?? defaults.cleanupPolicy
        minInsyncReplicas = try container.decodeIfPresent(Int.self, forKey: .minInsyncReplicas)
        timestampType = try container.decodeIfPresent(TimestampType.self, forKey: .timestampType) ?? defaults.timestampType
        compactionLagMin = try container.decodeIfPresent(Duration.self, forKey: .compactionLagMin) ?? defaults.compactionLagMin
        cleanableDirtyRatioMin = try container.decodeIfPresent(Double.self, forKey: .cleanableDirtyRatioMin) ?? defaults.cleanableDirtyRatioMin
        tombstoneRetention = try container.decodeIfPresent(Duration.self, forKey: .tombstoneRetention) ?? defaults.tombstoneRetention
        overrides = try container.decodeIfPresent([String: String].self, forKey: .overrides)
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
        if let segmentBytes, segmentBytes < Limits.segmentBytesMin {
            throw LogStoreError(.invalidConfiguration, "segment size \(segmentBytes) is below \(Limits.segmentBytesMin)")
        }
        if let segmentTime, segmentTime <= .zero {
            throw LogStoreError(.invalidConfiguration, "segment time \(segmentTime) is not positive")
        }
        guard !cleanupPolicy.isEmpty else { throw LogStoreError(.invalidConfiguration, "a cleanup policy names delete, compact or both") }
        if let minInsyncReplicas, minInsyncReplicas < 1 {
            throw LogStoreError(.invalidConfiguration, "min in-sync replicas \(minInsyncReplicas) is below 1")
        }
        guard compactionLagMin >= .zero, tombstoneRetention >= .zero else {
            throw LogStoreError(.invalidConfiguration, "compaction lag and tombstone retention must not be negative")
        }
        guard cleanableDirtyRatioMin >= 0 && cleanableDirtyRatioMin <= 1 else {
            throw LogStoreError(.invalidConfiguration, "min cleanable dirty ratio \(cleanableDirtyRatioMin) is outside 0...1")
        }
    }
}

/// A topic as stored: its permanent id (never reused, so a recreated topic
/// never sees an old topic's keys), name and configuration.
public struct TopicDescriptor: Codable, Sendable, Equatable {
    public var id: UInt32
    public var name: String
    public var configuration: TopicConfiguration
    /// In a cluster, the topic's id there (a UUID, as KIP-516's topic ids):
    /// a replica of an older topic of the same name never passes for the
    /// new one. Nil on a single node and for topics made before ids.
    public var clusterTopicID: String?

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
