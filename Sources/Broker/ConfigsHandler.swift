import Cluster
import Coordination
import Core
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// DescribeConfigs, AlterConfigs and IncrementalAlterConfigs: topic configs
// and the cluster's dynamic defaults, as Kafka tools name them.
extension Broker {
    static let resourceTopic: Int8 = 2
    static let resourceBroker: Int8 = 4
    /// Where a single node keeps the cluster default configs, and its own.
    static let defaultConfigsRecord = "broker-configs"
    static let ownConfigsRecord = "broker-configs-own"

    /// The defaults a topic's settings resolve against now.
    var topicDefaults: TopicDefaults {
        let (broker, dynamic) = dynamicConfigs.withLock { ($0.broker, $0.cluster) }
        return TopicDefaults(broker: broker, dynamic: dynamic, flags: configuration.staticTopicDefaults, compactedTopics: configuration.compactedTopics)
    }

    static func loadBrokerConfigs(_ store: LogStore, record: String, logger: Logger) -> [String: String] {
        guard let stored = try? store.brokerRecord(record) else { return [:] }
        do {
            return try JSONDecoder().decode([String: String].self, from: Data(stored))
        } catch {
            logger.error("the stored broker configs cannot be read; the flags' defaults apply", metadata: ["error": "\(error)"])
            return [:]
        }
    }

    /// A topic's own configs; for a topic stored before they were kept,
    /// those its settings show (what CreateTopics could set then).
    static func overrides(of configuration: TopicConfiguration) -> [String: String] {
        if let overrides = configuration.overrides { return overrides }
        var derived: [String: String] = [:]
        if let time = configuration.retentionTime { derived["retention.ms"] = String(time.milliseconds) }
        if let bytes = configuration.retentionBytes { derived["retention.bytes"] = String(bytes) }
        if configuration.batchBytesMax != Limits.batchBytesDefaultMax { derived["max.message.bytes"] = String(configuration.batchBytesMax) }
        derived[TopicConfigs.conversationIndexName] = String(configuration.conversationIndex)
        return derived
    }

    /// A topic's own configs and what they apply to: from etcd in a
    /// cluster (this broker may hold no replica of it), else from the store.
    func configuredTopic(_ name: String) -> (overrides: [String: String], partitionCount: Int32, conversationIndexed: Bool)? {
        if let cluster {
            guard let assignment = cluster.view.snapshot.assignments[name] else { return nil }
            let indexed = assignment.configs[TopicConfigs.conversationIndexName].flatMap(Bool.init)
                ?? configuration.conversationIndexedTopics.contains(name)
            return (assignment.configs, Int32(assignment.replicas.count), indexed)
        }
        guard let topic = store.topic(named: name) else { return nil }
        return (Self.overrides(of: topic.configuration), topic.configuration.partitionCount, topic.configuration.conversationIndex)
    }

    /// Topic settings (resource type 2) and this broker's (type 4; the
    /// empty name for the cluster's dynamic defaults alone).
    func describeConfigs(_ request: DescribeConfigsRequest) -> DescribeConfigsResponse {
        let defaults = topicDefaults
        return DescribeConfigsResponse(results: request.resources.map { resource in
            var configs: [DescribeConfigsResponse.Config]
            switch resource.type {
            case Self.resourceTopic:
                guard let topic = configuredTopic(resource.name) else {
                    return .init(errorCode: ErrorCode.unknownTopicOrPartition.rawValue, errorMessage: "topic \(resource.name) does not exist", resourceType: 2, resourceName: resource.name, configs: [])
                }
                configs = TopicConfigs.keys.map { key in
                    let (value, source, synonyms) = defaults.resolve(key, overrides: topic.overrides, topicName: resource.name,
                                                                     conversationIndexed: topic.conversationIndexed)
                    var config = DescribeConfigsResponse.Config(name: key.name, value: value, readOnly: key.fixedAtCreation, source: source)
                    config.type = key.type
                    if request.includeSynonyms { config.synonyms = synonyms }
                    if request.includeDocumentation { config.documentation = key.documentation }
                    return config
                }
            case Self.resourceBroker:
                if resource.name.isEmpty {
                    // Kafka lists only the defaults set.
                    configs = defaults.dynamic.sorted { $0.key < $1.key }.map { name, value in
                        DescribeConfigsResponse.Config(name: name, value: value, readOnly: false, source: .dynamicDefaultBroker)
                    }
                    break
                }
                guard resource.name == String(configuration.nodeID) else {
                    return .init(errorCode: ErrorCode.invalidRequest.rawValue, errorMessage: "this is broker \(configuration.nodeID); ask broker \(resource.name) itself",
                                 resourceType: resource.type, resourceName: resource.name, configs: [])
                }
                configs = brokerConfigs(defaults, synonyms: request.includeSynonyms)
                if let keys = resource.keys, !keys.isEmpty { configs = configs.filter { keys.contains($0.name) } }
                // Kafka lists a broker's settings with their own documentation off unless asked.
                if request.includeDocumentation {
                    configs = configs.map { config in
                        var documented = config
                        documented.documentation = TopicConfigs.byBrokerName[config.name]?.documentation
                        return documented
                    }
                }
                return .init(errorCode: 0, errorMessage: nil, resourceType: resource.type, resourceName: resource.name, configs: configs)
            default:
                return .init(errorCode: ErrorCode.invalidRequest.rawValue, errorMessage: "resource type \(resource.type) is not described", resourceType: resource.type, resourceName: resource.name, configs: [])
            }
            if let keys = resource.keys, !keys.isEmpty { configs = configs.filter { keys.contains($0.name) } }
            return .init(errorCode: 0, errorMessage: nil, resourceType: resource.type, resourceName: resource.name, configs: configs)
        })
    }

    /// This broker's settings: fixed ones, then each topic default by its
    /// broker name with where it comes from.
    private func brokerConfigs(_ defaults: TopicDefaults, synonyms: Bool) -> [DescribeConfigsResponse.Config] {
        func fixed(_ name: String, _ value: String, _ type: ConfigType) -> DescribeConfigsResponse.Config {
            var config = DescribeConfigsResponse.Config(name: name, value: value, readOnly: true, source: .staticBroker)
            config.type = type
            return config
        }
        var configs = [
            fixed("broker.id", String(configuration.nodeID), .int),
            fixed("num.partitions", String(configuration.defaultPartitionCount), .int),
            fixed("auto.create.topics.enable", String(configuration.autoCreateTopics), .boolean),
            fixed("log.dirs", configuration.dataDirectory, .string),
            fixed("log.retention.check.interval.ms", String(configuration.retentionCheckInterval.milliseconds), .long),
            fixed("postduif.durability", configuration.durability.rawValue, .string),
        ]
        let cleanerChain = defaults.chain(brokerName: TopicConfigs.cleanerBytesPerSecondName, builtIn: String(configuration.cleanerBytesPerSecond))
        var limit = DescribeConfigsResponse.Config(name: TopicConfigs.cleanerBytesPerSecondName, value: cleanerChain[0].value, readOnly: false,
                                                   source: cleanerChain[0].source == .defaultValue ? .staticBroker : cleanerChain[0].source)
        limit.type = .double
        if synonyms { limit.synonyms = cleanerChain }
        configs.append(limit)
        for key in TopicConfigs.keys {
            guard let brokerName = key.brokerName else { continue }
            let chain = defaults.chain(brokerName: brokerName, builtIn: key.builtIn)
            var config = DescribeConfigsResponse.Config(name: brokerName, value: chain[0].value, readOnly: key.fixedAtCreation, source: chain[0].source)
            config.type = key.type
            if synonyms { config.synonyms = chain }
            configs.append(config)
        }
        return configs
    }

    /// AlterConfigs (each resource's configs replaced by those given) and
    /// IncrementalAlterConfigs (each given config set, deleted, appended to
    /// or subtracted from). Topics change in etcd in a cluster, where every
    /// replica's watch applies them; the cluster default (broker "") too.
    func alterConfigs(_ request: AlterConfigsRequest) async -> AlterConfigsResponse {
        var results: [AlterConfigsResponse.Result] = []
        for resource in request.resources {
            func result(_ code: ErrorCode, _ message: String?) -> AlterConfigsResponse.Result {
                .init(errorCode: code.rawValue, errorMessage: message, resourceType: resource.type, resourceName: resource.name)
            }
            do {
                switch resource.type {
                case Self.resourceTopic:
                    try await alterTopicConfigs(resource, incremental: request.incremental, validateOnly: request.validateOnly)
                case Self.resourceBroker:
                    guard resource.name.isEmpty || resource.name == String(configuration.nodeID) else {
                        throw TopicRequestError(code: .invalidRequest, message: "this is broker \(configuration.nodeID); ask broker \(resource.name) itself")
                    }
                    try await alterBrokerConfigs(resource, ownOnly: !resource.name.isEmpty, incremental: request.incremental, validateOnly: request.validateOnly)
                default:
                    throw TopicRequestError(code: .invalidRequest, message: "resource type \(resource.type) has no configs to alter")
                }
                results.append(result(.none, nil))
            } catch let error as TopicRequestError {
                results.append(result(error.code, error.message))
            } catch let error as LogStoreError {
                results.append(result(Self.errorCode(for: error), error.message))
            } catch {
                results.append(result(.unknownServerError, "\(error)"))
            }
        }
        return AlterConfigsResponse(results: results)
    }

    /// A config map after a request's changes: replaced whole (AlterConfigs)
    /// or changed one name at a time (IncrementalAlterConfigs).
    static func changed(_ current: [String: String], by changes: [AlterConfigsRequest.Change], incremental: Bool, isList: (String) -> Bool) throws(TopicRequestError) -> [String: String] {
        guard incremental else {
            var replaced: [String: String] = [:]
            for change in changes { if let value = change.value { replaced[change.name] = value } }
            return replaced
        }
        var result = current
        for change in changes {
            switch change.operation {
            case .set:
                guard let value = change.value else { throw TopicRequestError(code: .invalidRequest, message: "SET of \(change.name) has no value") }
                result[change.name] = value
            case .delete:
                result[change.name] = nil
            case .append, .subtract:
                guard isList(change.name) else {
                    throw TopicRequestError(code: .invalidConfig, message: "\(change.name) is not a list: APPEND and SUBTRACT apply to lists only")
                }
                let given = (change.value ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                var items = (result[change.name] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                if change.operation == .append {
                    items += given.filter { !items.contains($0) }
                } else {
                    items.removeAll { given.contains($0) }
                }
                result[change.name] = items.isEmpty ? nil : items.joined(separator: ",")
            }
        }
        return result
    }

    private func alterTopicConfigs(_ resource: AlterConfigsRequest.Resource, incremental: Bool, validateOnly: Bool) async throws {
        guard let topic = configuredTopic(resource.name) else {
            throw TopicRequestError(code: .unknownTopicOrPartition, message: "topic \(resource.name) does not exist")
        }
        let current = topic.overrides
        var overrides = try Self.changed(current, by: resource.changes, incremental: incremental) { TopicConfigs.byName[$0]?.type == .list }
        // Settings fixed at creation keep their value whatever the request says
        // of them, unless it tries to change them.
        for key in TopicConfigs.keys where key.fixedAtCreation {
            let before = current[key.name] ?? (key.name == TopicConfigs.conversationIndexName ? String(topic.conversationIndexed) : key.builtIn)
            let after = overrides[key.name] ?? before
            guard after == before else {
                throw TopicRequestError(code: .invalidConfig, message: "\(key.name) is set when a topic is created and cannot change")
            }
            overrides[key.name] = current[key.name]
        }
        let updated = try topicDefaults.configuration(name: resource.name, partitionCount: topic.partitionCount, overrides: overrides,
                                                      conversationIndexed: topic.conversationIndexed)
        guard !validateOnly else { return }
        if let cluster {
            try await cluster.changeTopicConfigs(resource.name, to: overrides)
        }
        if store.topic(named: resource.name) != nil { try store.reconfigureTopic(resource.name, to: updated) }
        logger.info("changed topic configs", metadata: ["topic": "\(resource.name)", "configs": "\(overrides.sorted { $0.key < $1.key })"])
    }

    /// The cluster's defaults (broker "") or this broker's own settings
    /// (its id; Kafka's per-broker dynamic configs).
    private func alterBrokerConfigs(_ resource: AlterConfigsRequest.Resource, ownOnly: Bool, incremental: Bool, validateOnly: Bool) async throws {
        let current = dynamicConfigs.withLock { ownOnly ? $0.broker : $0.cluster }
        let changed = try Self.changed(current, by: resource.changes, incremental: incremental) { TopicConfigs.byBrokerName[$0]?.type == .list }
        var next = dynamicConfigs.withLock { $0 }
        if ownOnly { next.broker = changed } else { next.cluster = changed }
        try checkDefaults(next)
        guard !validateOnly else { return }
        if let cluster {
            try await cluster.changeBrokerConfigs(ownOnly: ownOnly, to: changed)
        } else {
            try brokerConfigWrites.withLock { _ throws in
                try store.setBrokerRecord(ownOnly ? Self.ownConfigsRecord : Self.defaultConfigsRecord, Array(try JSONEncoder().encode(changed)))
            }
        }
        applyDynamicConfigs { if ownOnly { $0.broker = changed } else { $0.cluster = changed } }
        logger.info("changed dynamic broker configs", metadata: ["scope": "\(ownOnly ? "broker \(configuration.nodeID)" : "cluster default")",
                                                                "configs": "\(changed.sorted { $0.key < $1.key })"])
    }

    /// Refuses defaults that are not dynamic broker settings, or that would
    /// give some topic an invalid setting.
    func checkDefaults(_ configs: DynamicConfigs) throws(TopicRequestError) {
        let allowed = TopicConfigs.dynamicBrokerNames
        for layer in [configs.broker, configs.cluster] {
            for name in layer.keys where !allowed.contains(name) {
                throw TopicRequestError(code: .invalidConfig, message: "\(name) is not a dynamic broker config; these are: \(allowed.sorted().joined(separator: ", "))")
            }
            if let limit = layer[TopicConfigs.cleanerBytesPerSecondName], (Double(limit) ?? -1) <= 0 {
                throw TopicRequestError(code: .invalidConfig, message: "invalid value '\(limit)' for \(TopicConfigs.cleanerBytesPerSecondName)")
            }
        }
        _ = try TopicDefaults(broker: configs.broker, dynamic: configs.cluster, flags: configuration.staticTopicDefaults)
            .configuration(name: "", partitionCount: 1, overrides: [:], conversationIndexed: false)
    }

    /// Changes the dynamic configs and re-derives every topic's settings.
    func applyDynamicConfigs(_ change: (inout DynamicConfigs) -> Void, assignments: [String: TopicAssignment]? = nil) {
        dynamicConfigs.withLock { change(&$0) }
        reconfigureTopics(assignments: assignments)
    }

    /// Compaction's I/O limit now, in bytes a second.
    var cleanerBytesPerSecond: Double {
        let (broker, cluster) = dynamicConfigs.withLock { ($0.broker, $0.cluster) }
        let name = TopicConfigs.cleanerBytesPerSecondName
        return (broker[name] ?? cluster[name]).flatMap(Double.init) ?? configuration.cleanerBytesPerSecond
    }

    /// Re-derives every local topic's settings from its own configs (in a
    /// cluster, those in etcd) and the defaults; applies what changed.
    func reconfigureTopics(assignments: [String: TopicAssignment]? = nil) {
        let defaults = topicDefaults
        for descriptor in store.topicDescriptors {
            let overrides = assignments?[descriptor.name]?.configs ?? Self.overrides(of: descriptor.configuration)
            do {
                let updated = try defaults.configuration(name: descriptor.name, partitionCount: descriptor.configuration.partitionCount, overrides: overrides,
                                                         conversationIndexed: descriptor.configuration.conversationIndex)
                if updated != descriptor.configuration { try store.reconfigureTopic(descriptor.name, to: updated) }
            } catch {
                logger.error("cannot apply a topic's configs", metadata: ["topic": "\(descriptor.name)", "error": "\(error)"])
            }
        }
    }
}
