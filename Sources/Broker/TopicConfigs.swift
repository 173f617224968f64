import Core
import Foundation
import KafkaWire
import LogStore

/// One topic config as Kafka names it, and how Postduif reads it into a
/// `TopicConfiguration`. A topic's value comes from, in order: the topic's
/// own setting, the cluster's dynamic default (AlterConfigs on the broker
/// resource ""), this broker's flags, the built-in default: the chain
/// DescribeConfigs reports as synonyms.
struct TopicConfigKey: Sendable {
    /// The topic config's name (`retention.ms`).
    let name: String
    /// The broker setting that is its default (`log.retention.ms`); nil for
    /// Postduif's own topic settings.
    let brokerName: String?
    let type: ConfigType
    let builtIn: String
    /// Set when a topic is created, never changed after.
    let fixedAtCreation: Bool
    let documentation: String
    /// Reads a value into the configuration; false when it is not valid.
    let apply: @Sendable (String, inout TopicConfiguration) -> Bool
}

enum TopicConfigs {
    static let keys: [TopicConfigKey] = [
        TopicConfigKey(name: "cleanup.policy", brokerName: "log.cleanup.policy", type: .list, builtIn: "delete", fixedAtCreation: false,
                       documentation: "delete, compact, or both (comma-separated): what happens to old records") { value, configuration in
            guard let policy = cleanupPolicy(value) else { return false }
            configuration.cleanupPolicy = policy
            return true
        },
        TopicConfigKey(name: "retention.ms", brokerName: "log.retention.ms", type: .long, builtIn: "-1", fixedAtCreation: false,
                       documentation: "batches whose newest record is older go; -1 keeps them (Postduif keeps history unless told)") { value, configuration in
            guard let milliseconds = Int64(value), milliseconds != 0, milliseconds >= -1 else { return false }
            configuration.retentionTime = milliseconds < 0 ? nil : .milliseconds(milliseconds)
            return true
        },
        TopicConfigKey(name: "retention.bytes", brokerName: "log.retention.bytes", type: .long, builtIn: "-1", fixedAtCreation: false,
                       documentation: "the oldest batches go while a partition holds more; -1 for no limit") { value, configuration in
            guard let bytes = Int64(value), bytes >= -1 else { return false }
            configuration.retentionBytes = bytes < 0 ? nil : bytes
            return true
        },
        TopicConfigKey(name: "segment.bytes", brokerName: "log.segment.bytes", type: .int, builtIn: "134217728", fixedAtCreation: false,
                       documentation: "a segment file closes once it holds this many bytes") { value, configuration in
            guard let bytes = Int64(value), bytes >= Limits.segmentBytesMin, bytes <= Int64(Int32.max) else { return false }
            configuration.segmentBytes = bytes
            return true
        },
        TopicConfigKey(name: "segment.ms", brokerName: "log.roll.ms", type: .long, builtIn: "604800000", fixedAtCreation: false,
                       documentation: "a segment file closes once its first batch is this old, so retention and compaction reach it") { value, configuration in
            guard let milliseconds = Int64(value), milliseconds >= 1 else { return false }
            configuration.segmentTime = .milliseconds(milliseconds)
            return true
        },
        TopicConfigKey(name: "min.insync.replicas", brokerName: "min.insync.replicas", type: .int, builtIn: "1", fixedAtCreation: false,
                       documentation: "acks=all produces need this many in-sync replicas, else NOT_ENOUGH_REPLICAS") { value, configuration in
            guard let count = Int(value), count >= 1 else { return false }
            configuration.minInsyncReplicas = count
            return true
        },
        TopicConfigKey(name: "max.message.bytes", brokerName: "message.max.bytes", type: .int, builtIn: String(Limits.batchBytesDefaultMax), fixedAtCreation: false,
                       documentation: "the largest record batch accepted") { value, configuration in
            guard let bytes = Int(value), bytes >= RecordBatch.headerBytesCount, bytes <= Limits.batchBytesConfigurableMax else { return false }
            configuration.batchBytesMax = bytes
            return true
        },
        TopicConfigKey(name: "message.timestamp.type", brokerName: "log.message.timestamp.type", type: .string, builtIn: "CreateTime", fixedAtCreation: false,
                       documentation: "CreateTime keeps the producer's timestamps; LogAppendTime stamps each batch with the leader's clock") { value, configuration in
            guard let type = TimestampType(rawValue: value) else { return false }
            configuration.timestampType = type
            return true
        },
        TopicConfigKey(name: "min.compaction.lag.ms", brokerName: "log.cleaner.min.compaction.lag.ms", type: .long, builtIn: "0", fixedAtCreation: false,
                       documentation: "a record stays uncompacted at least this long") { value, configuration in
            guard let milliseconds = Int64(value), milliseconds >= 0 else { return false }
            configuration.compactionLagMin = .milliseconds(milliseconds)
            return true
        },
        TopicConfigKey(name: "min.cleanable.dirty.ratio", brokerName: "log.cleaner.min.cleanable.ratio", type: .double, builtIn: "0.5", fixedAtCreation: false,
                       documentation: "compaction starts once this share of a partition is not yet compacted") { value, configuration in
            guard let ratio = Double(value), ratio >= 0, ratio <= 1 else { return false }
            configuration.cleanableDirtyRatioMin = ratio
            return true
        },
        TopicConfigKey(name: "delete.retention.ms", brokerName: "log.cleaner.delete.retention.ms", type: .long, builtIn: "86400000", fixedAtCreation: false,
                       documentation: "how long compaction keeps a tombstone after the records it deletes are gone") { value, configuration in
            guard let milliseconds = Int64(value), milliseconds >= 0 else { return false }
            configuration.tombstoneRetention = .milliseconds(milliseconds)
            return true
        },
        TopicConfigKey(name: "compression.type", brokerName: "compression.type", type: .string, builtIn: "producer", fixedAtCreation: true,
                       documentation: "batches are stored as the producer compressed them") { value, _ in
            value == "producer"
        },
        TopicConfigKey(name: conversationIndexName, brokerName: nil, type: .boolean, builtIn: "false", fixedAtCreation: true,
                       documentation: "keep the conversation index: every record's key is its conversation") { value, configuration in
            guard let flag = Bool(value) else { return false }
            configuration.conversationIndex = flag
            return true
        },
    ]

    static let conversationIndexName = "postduif.conversation.index"

    static let byName: [String: TopicConfigKey] = Dictionary(uniqueKeysWithValues: keys.map { ($0.name, $0) })
    static let byBrokerName: [String: TopicConfigKey] = Dictionary(uniqueKeysWithValues: keys.compactMap { key in key.brokerName.map { ($0, key) } })

    /// Broker settings the cluster default (AlterConfigs on broker "") may
    /// change: the topic defaults, and the compaction I/O limit.
    static let cleanerBytesPerSecondName = "log.cleaner.io.max.bytes.per.second"
    static var dynamicBrokerNames: Set<String> {
        Set(keys.filter { !$0.fixedAtCreation }.compactMap(\.brokerName)).union([cleanerBytesPerSecondName])
    }

    static func cleanupPolicy(_ value: String) -> CleanupPolicy? {
        var policy = CleanupPolicy()
        for part in value.split(separator: ",") {
            switch part.trimmingCharacters(in: .whitespaces) {
            case "delete": policy.insert(.delete)
            case "compact": policy.insert(.compact)
            default: return nil
            }
        }
        return policy.isEmpty ? nil : policy
    }
}

/// Where a topic's settings come from besides its own: the cluster's
/// dynamic defaults and this broker's flags, by Kafka's broker names.
struct TopicDefaults: Sendable, Equatable {
    /// This broker's dynamic settings (AlterConfigs on its id).
    var broker: [String: String] = [:]
    /// The cluster's dynamic defaults (AlterConfigs on broker "").
    var dynamic: [String: String] = [:]
    var flags: [String: String] = [:]
    /// Topics compacted unless their own configs say otherwise: the
    /// composition root names those whose records are state by key.
    var compactedTopics: Set<String> = []

    /// A broker setting's chain: this broker's, the cluster's, the flag, the built-in value.
    func chain(brokerName: String, builtIn: String) -> [DescribeConfigsResponse.Synonym] {
        var chain: [DescribeConfigsResponse.Synonym] = []
        if let value = broker[brokerName] { chain.append(.init(name: brokerName, value: value, source: .dynamicBroker)) }
        if let value = dynamic[brokerName] { chain.append(.init(name: brokerName, value: value, source: .dynamicDefaultBroker)) }
        if let value = flags[brokerName] { chain.append(.init(name: brokerName, value: value, source: .staticBroker)) }
        chain.append(.init(name: brokerName, value: builtIn, source: .defaultValue))
        return chain
    }

    /// A topic config's value for a topic with `overrides`, its source,
    /// and the whole chain (for DescribeConfigs' synonyms).
    func resolve(_ key: TopicConfigKey, overrides: [String: String], topicName: String, conversationIndexed: Bool) -> (value: String, source: ConfigSource, synonyms: [DescribeConfigsResponse.Synonym]) {
        var chain: [DescribeConfigsResponse.Synonym] = []
        if let own = overrides[key.name] { chain.append(.init(name: key.name, value: own, source: .topic)) }
        // The composition root names the topics indexed by default.
        let builtIn = key.name == TopicConfigs.conversationIndexName ? String(conversationIndexed) : key.builtIn
        if key.name == "cleanup.policy" && compactedTopics.contains(topicName) {
            // State by key (group offsets, the chat's accounts and sessions):
            // compacted whatever the broker's default policy.
            chain.append(.init(name: key.name, value: "compact", source: .defaultValue))
            return (chain[0].value ?? "compact", chain[0].source, chain)
        }
        chain += self.chain(brokerName: key.brokerName ?? key.name, builtIn: builtIn)
        return (chain[0].value ?? builtIn, chain[0].source, chain)
    }

    /// A topic's settings from its own configs over these defaults; refuses
    /// unknown names and invalid values with INVALID_CONFIG.
    func configuration(name: String, partitionCount: Int32, overrides: [String: String], conversationIndexed: Bool) throws(Broker.TopicRequestError) -> TopicConfiguration {
        for key in overrides.keys where TopicConfigs.byName[key] == nil {
            throw Broker.TopicRequestError(code: .invalidConfig, message: "unknown topic config \(key)")
        }
        var result = TopicConfiguration(partitionCount: partitionCount)
        for key in TopicConfigs.keys {
            let (value, source, _) = resolve(key, overrides: overrides, topicName: name, conversationIndexed: conversationIndexed)
            guard key.apply(value, &result) else {
                let origin = source == .topic ? key.name : (key.brokerName ?? key.name)
                throw Broker.TopicRequestError(code: .invalidConfig, message: "invalid value '\(value)' for \(origin)")
            }
        }
        result.overrides = overrides
        return result
    }
}

extension BrokerConfiguration {
    /// Refuses topic defaults that would give a topic an invalid setting.
    public func checkTopicDefaults() throws {
        do {
            _ = try TopicDefaults(flags: staticTopicDefaults, compactedTopics: []).configuration(name: "", partitionCount: 1, overrides: [:], conversationIndexed: false)
        } catch {
            throw TopicDefaultsError(description: error.message)
        }
    }
}

/// Topic defaults a broker's flags set that no topic could have.
public struct TopicDefaultsError: Error, CustomStringConvertible {
    public var description: String
}

/// Dynamic broker configs: this broker's own (AlterConfigs on its id) and
/// the cluster's defaults (AlterConfigs on broker "").
struct DynamicConfigs: Sendable, Equatable {
    var broker: [String: String] = [:]
    var cluster: [String: String] = [:]
}
