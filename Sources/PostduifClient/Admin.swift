import KafkaNIO
import KafkaWire

/// Topics, configs, ACLs, partition moves and leader elections, as
/// Kafka's admin clients manage them.
public struct Admin: Sendable {
    public let client: KafkaClient

    public init(client: KafkaClient) {
        self.client = client
    }

    static let createTopicsVersion: Int16 = 4
    static let deleteTopicsVersion: Int16 = 3
    static let aclsVersion: Int16 = 1
    static let describeConfigsVersion: Int16 = 3
    static let alterConfigsVersion: Int16 = 0

    /// A topic and its partitions as Metadata gives them.
    public struct TopicDescription: Sendable, Equatable {
        public struct Partition: Sendable, Equatable {
            public var index: Int32
            public var leader: Int32
            public var replicas: [Int32]
            public var inSync: [Int32]
        }

        public var name: String
        public var partitions: [Partition]
    }

    /// Creates a topic; replication factor -1 takes the broker's default.
    /// A topic that exists already is an error (`.topicAlreadyExists`).
    public func createTopic(_ name: String, partitions: Int32, replicationFactor: Int16 = -1, configs: [String: String] = [:]) async throws {
        let request = CreateTopicsRequest(topics: [.init(name: name, partitionCount: partitions, replicationFactor: replicationFactor,
                                                         configs: configs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })])
        let response = try await client.anyBroker { address in
            try await client.call(address, .createTopics, version: Self.createTopicsVersion, { request.encode(&$0, version: Self.createTopicsVersion) },
                                  decode: { try CreateTopicsResponse.decode(&$0, version: Self.createTopicsVersion) })
        }
        if let result = response.topics.first, result.errorCode != 0 {
            throw ClientError(code: result.errorCode, "creating topic \(name)\(result.errorMessage.map { ": \($0)" } ?? "")")
        }
    }

    public func deleteTopic(_ name: String) async throws {
        let request = DeleteTopicsRequest(topicNames: [name])
        let response = try await client.anyBroker { address in
            try await client.call(address, .deleteTopics, version: Self.deleteTopicsVersion, { request.encode(&$0, version: Self.deleteTopicsVersion) },
                                  decode: { try DeleteTopicsResponse.decode(&$0, version: Self.deleteTopicsVersion) })
        }
        if let result = response.results.first, result.errorCode != 0 {
            throw ClientError(code: result.errorCode, "deleting topic \(name)")
        }
    }

    /// Every topic the caller may describe, with its partitions.
    public func topics(_ names: [String]? = nil) async throws -> [TopicDescription] {
        let response = try await client.metadata(names)
        return response.topics.filter { $0.errorCode == 0 }.map { topic in
            TopicDescription(name: topic.name, partitions: topic.partitions.sorted { $0.index < $1.index }.map {
                .init(index: $0.index, leader: $0.leaderID, replicas: $0.replicaNodes, inSync: $0.isrNodes)
            })
        }.sorted { $0.name < $1.name }
    }

    /// The brokers' ids.
    public func brokers() async throws -> [Int32] {
        try await client.metadata([]).brokers.map(\.nodeID).sorted()
    }

    public func createAcls(_ entries: [AclEntry]) async throws {
        let request = CreateAclsRequest(creations: entries)
        let response = try await client.anyBroker { address in
            try await client.call(address, .createAcls, version: Self.aclsVersion, { request.encode(&$0, version: Self.aclsVersion) },
                                  decode: { try CreateAclsResponse.decode(&$0, version: Self.aclsVersion) })
        }
        if let refused = response.results.first(where: { $0.errorCode != 0 }) {
            throw ClientError(code: refused.errorCode, "creating ACLs\(refused.errorMessage.map { ": \($0)" } ?? "")")
        }
    }

    public func describeAcls(_ filter: AclEntryFilter) async throws -> [AclEntry] {
        let request = DescribeAclsRequest(filter: filter)
        let response = try await client.anyBroker { address in
            try await client.call(address, .describeAcls, version: Self.aclsVersion, { request.encode(&$0, version: Self.aclsVersion) },
                                  decode: { try DescribeAclsResponse.decode(&$0, version: Self.aclsVersion) })
        }
        guard response.errorCode == 0 else { throw ClientError(code: response.errorCode, "describing ACLs") }
        return response.acls
    }

    /// A topic's configs: value and where it comes from (the topic's own,
    /// a broker setting, Kafka's default), sensitive ones without value.
    public func topicConfigs(_ topic: String) async throws -> [String: (value: String?, source: ConfigSource)] {
        let request = DescribeConfigsRequest(resources: [.init(type: 2, name: topic, keys: nil)])
        let response = try await client.anyBroker { address in
            try await client.call(address, .describeConfigs, version: Self.describeConfigsVersion, { request.encode(&$0, version: Self.describeConfigsVersion) },
                                  decode: { try DescribeConfigsResponse.decode(&$0, version: Self.describeConfigsVersion) })
        }
        guard let result = response.results.first else { throw ClientError("an empty DescribeConfigs answer") }
        guard result.errorCode == 0 else { throw ClientError(code: result.errorCode, "describing the configs of \(topic)\(result.errorMessage.map { ": \($0)" } ?? "")") }
        return Dictionary(result.configs.map { ($0.name, (value: $0.value, source: $0.source)) }, uniquingKeysWith: { first, _ in first })
    }

    /// Sets and removes configs of a topic (IncrementalAlterConfigs).
    public func alterTopicConfigs(_ topic: String, set: [String: String] = [:], remove: [String] = []) async throws {
        let changes = set.sorted { $0.key < $1.key }.map { AlterConfigsRequest.Change(name: $0.key, value: $0.value, operation: .set) }
            + remove.map { AlterConfigsRequest.Change(name: $0, value: nil, operation: .delete) }
        let request = AlterConfigsRequest(resources: [.init(type: 2, name: topic, changes: changes)], incremental: true)
        let response = try await client.anyBroker { address in
            try await client.call(address, .incrementalAlterConfigs, version: Self.alterConfigsVersion, { request.encode(&$0, version: Self.alterConfigsVersion) },
                                  decode: { try AlterConfigsResponse.decode(&$0, version: Self.alterConfigsVersion) })
        }
        if let refused = response.results.first(where: { $0.errorCode != 0 }) {
            throw ClientError(code: refused.errorCode, "altering the configs of \(topic)\(refused.errorMessage.map { ": \($0)" } ?? "")")
        }
    }

    static let reassignmentsVersion: Int16 = 0
    static let electLeadersVersion: Int16 = 2

    /// A partition being moved: its replicas during the move (old and new),
    /// those being added and those to be removed.
    public typealias Reassignment = ListPartitionReassignmentsResponse.Partition

    /// Every partition being moved (ListPartitionReassignments).
    public func partitionReassignments() async throws -> [TopicPartition: Reassignment] {
        let request = ListPartitionReassignmentsRequest(topics: nil)
        let response = try await client.anyBroker { address in
            try await client.call(address, .listPartitionReassignments, version: Self.reassignmentsVersion, { request.encode(&$0, version: Self.reassignmentsVersion) },
                                  decode: { try ListPartitionReassignmentsResponse.decode(&$0, version: Self.reassignmentsVersion) })
        }
        guard response.errorCode == 0 else { throw ClientError(code: response.errorCode, "listing reassignments\(response.errorMessage.map { ": \($0)" } ?? "")") }
        var moving: [TopicPartition: Reassignment] = [:]
        for topic in response.topics {
            for partition in topic.partitions { moving[TopicPartition(topic.name, partition.index)] = partition }
        }
        return moving
    }

    /// Moves partitions to new replica lists, or cancels their move (nil),
    /// as Kafka's AlterPartitionReassignments: added replicas catch up and
    /// join the ISR, then removed ones leave. Each partition's outcome.
    public func alterPartitionReassignments(_ targets: [TopicPartition: [Int32]?]) async throws -> [TopicPartition: Result<Void, ClientError>] {
        let byTopic = Dictionary(grouping: targets.keys, by: \.topic)
        let request = AlterPartitionReassignmentsRequest(topics: byTopic.keys.sorted().map { topic in
            TopicPartitions(name: topic, partitions: byTopic[topic]!.sorted().map { .init(index: $0.partition, replicas: targets[$0]!) })
        })
        let response = try await client.anyBroker { address in
            try await client.call(address, .alterPartitionReassignments, version: Self.reassignmentsVersion, { request.encode(&$0, version: Self.reassignmentsVersion) },
                                  decode: { try AlterPartitionReassignmentsResponse.decode(&$0, version: Self.reassignmentsVersion) })
        }
        guard response.errorCode == 0 else { throw ClientError(code: response.errorCode, "reassigning partitions\(response.errorMessage.map { ": \($0)" } ?? "")") }
        return Self.outcomes(response.topics)
    }

    /// Elects preferred leaders (or, `unclean`, any live replica of a
    /// partition without a leader) for `partitions` (nil: all). Each
    /// partition's outcome; `.electionNotNeeded` where the preferred
    /// replica leads already.
    public func electLeaders(unclean: Bool = false, _ partitions: [TopicPartition]? = nil) async throws -> [TopicPartition: Result<Void, ClientError>] {
        let topics = partitions.map { chosen in
            Dictionary(grouping: chosen, by: \.topic).sorted { $0.key < $1.key }.map { TopicPartitions(name: $0.key, partitions: $0.value.map(\.partition).sorted()) }
        }
        let request = ElectLeadersRequest(electionType: unclean ? 1 : 0, topics: topics)
        let response = try await client.anyBroker { address in
            try await client.call(address, .electLeaders, version: Self.electLeadersVersion, { request.encode(&$0, version: Self.electLeadersVersion) },
                                  decode: { try ElectLeadersResponse.decode(&$0, version: Self.electLeadersVersion) })
        }
        guard response.errorCode == 0 else { throw ClientError(code: response.errorCode, "electing leaders") }
        return Self.outcomes(response.topics)
    }

    static func outcomes(_ topics: [TopicPartitions<PartitionOutcome>]) -> [TopicPartition: Result<Void, ClientError>] {
        var outcomes: [TopicPartition: Result<Void, ClientError>] = [:]
        for topic in topics {
            for partition in topic.partitions {
                let place = TopicPartition(topic.name, partition.index)
                outcomes[place] = partition.errorCode == 0 ? .success(())
                    : .failure(ClientError(code: partition.errorCode, partition.errorMessage ?? "refused"))
            }
        }
        return outcomes
    }

    /// Removes the ACLs `filter` matches; returns those removed.
    public func deleteAcls(_ filter: AclEntryFilter) async throws -> [AclEntry] {
        let request = DeleteAclsRequest(filters: [filter])
        let response = try await client.anyBroker { address in
            try await client.call(address, .deleteAcls, version: Self.aclsVersion, { request.encode(&$0, version: Self.aclsVersion) },
                                  decode: { try DeleteAclsResponse.decode(&$0, version: Self.aclsVersion) })
        }
        guard let result = response.results.first else { return [] }
        guard result.errorCode == 0 else { throw ClientError(code: result.errorCode, "deleting ACLs") }
        return result.deleted
    }
}
