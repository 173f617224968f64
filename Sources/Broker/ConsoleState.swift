import Cluster
import Core
import Foundation
import LogStore
import Security

/// What the operator console shows of the cluster, as this broker sees it:
/// the brokers, the controller, every topic's partitions with their
/// leaders and in-sync replicas (and offsets and sizes where this broker
/// holds a replica), and the consumer groups it coordinates with their
/// lag. Read from the cluster view and the store, without a request.
public struct ConsoleState: Codable, Sendable {
    public struct Broker: Codable, Sendable {
        public var id: Int32
        public var address: String
        public var rack: String?
        public var isController: Bool
        public var isThisBroker: Bool
        public var isStopping: Bool
    }

    public struct Partition: Codable, Sendable {
        public var index: Int32
        public var leader: Int32
        public var replicas: [Int32]
        public var isr: [Int32]
        /// Nil where this broker holds no replica.
        public var logStartOffset: Int64?
        public var logEndOffset: Int64?
        public var highWatermark: Int64?
        public var sizeBytes: Int64?
    }

    public struct Topic: Codable, Sendable {
        public var name: String
        public var partitions: [Partition]
        public var retentionMs: Int64?
        public var retentionBytes: Int64?
        public var cleanupPolicy: String
        public var underReplicated: Int
        public var offline: Int
    }

    public struct GroupLag: Codable, Sendable {
        public var group: String
        public var topic: String
        public var partition: Int32
        public var committedOffset: Int64
        /// The high watermark less the committed offset, where this broker holds the partition.
        public var lag: Int64?
    }

    public var nodeID: Int32
    public var clusterID: String
    public var mode: String
    public var controller: Int32?
    public var brokers: [Broker]
    public var topics: [Topic]
    public var groups: [GroupLag]
    /// The chat's rooms: conversations in the conversations topic's index,
    /// over the partitions this broker holds (set by the process, which
    /// counts them now and then: the count walks the index).
    public var rooms: Int?
}

extension Broker {
    public func consoleState() -> ConsoleState {
        let nodeID = configuration.nodeID
        var brokers: [ConsoleState.Broker] = []
        var topics: [ConsoleState.Topic] = []
        var controller: Int32? = nodeID
        func local(_ topic: String, _ index: Int32) -> PartitionLog? { try? store.partition(topic: topic, index: index) }
        func topicSettings(of topic: String) -> (Int64?, Int64?, String) {
            guard let configuration = store.topic(named: topic)?.configuration else { return (nil, nil, "delete") }
            var policies: [String] = []
            if configuration.cleanupPolicy.contains(.delete) { policies.append("delete") }
            if configuration.cleanupPolicy.contains(.compact) { policies.append("compact") }
            return (configuration.retentionTime?.milliseconds,
                    configuration.retentionBytes, policies.joined(separator: ","))
        }
        func described(_ index: Int32, leader: Int32, replicas: [Int32], isr: [Int32], log: PartitionLog?) -> ConsoleState.Partition {
            let summary = log?.summary
            return ConsoleState.Partition(index: index, leader: leader, replicas: replicas, isr: isr, logStartOffset: summary?.logStartOffset,
                                          logEndOffset: summary?.logEndOffset, highWatermark: summary?.highWatermark, sizeBytes: summary?.sizeBytes)
        }
        if let cluster {
            let snapshot = cluster.view.snapshot
            controller = snapshot.controller
            for (id, address) in snapshot.brokers.sorted(by: { $0.key < $1.key }) {
                brokers.append(.init(id: id, address: snapshot.endpoints[id]?.address ?? address, rack: snapshot.endpoints[id]?.rack,
                                     isController: id == snapshot.controller, isThisBroker: id == nodeID, isStopping: snapshot.shuttingDown.contains(id)))
            }
            for (name, assignment) in snapshot.assignments.sorted(by: { $0.key < $1.key }) {
                var partitions: [ConsoleState.Partition] = []
                for (index, replicas) in assignment.replicas.enumerated() {
                    let state = snapshot.records[PartitionID(topic: name, index: Int32(index))]?.state
                    partitions.append(described(Int32(index), leader: state?.leader ?? -1, replicas: replicas, isr: state?.isr ?? [],
                                                log: local(name, Int32(index))))
                }
                let (retentionMs, retentionBytes, policy) = topicSettings(of: name)
                topics.append(.init(name: name, partitions: partitions, retentionMs: retentionMs, retentionBytes: retentionBytes, cleanupPolicy: policy,
                                    underReplicated: partitions.filter { $0.isr.count < $0.replicas.count }.count,
                                    offline: partitions.filter { $0.leader < 0 }.count))
            }
        } else {
            let listener = configuration.effectiveListeners[0]
            brokers = [.init(id: nodeID, address: "\(listener.advertisedHost):\(listener.advertisedPort)", rack: configuration.rack,
                             isController: true, isThisBroker: true, isStopping: false)]
            for descriptor in store.topicDescriptors.sorted(by: { $0.name < $1.name }) {
                let partitions = (0..<descriptor.configuration.partitionCount).map { index in
                    described(index, leader: nodeID, replicas: [nodeID], isr: [nodeID], log: local(descriptor.name, index))
                }
                let (retentionMs, retentionBytes, policy) = topicSettings(of: descriptor.name)
                topics.append(.init(name: descriptor.name, partitions: partitions, retentionMs: retentionMs, retentionBytes: retentionBytes,
                                    cleanupPolicy: policy, underReplicated: 0, offline: 0))
            }
        }
        let groups = metrics.committedOffsets.map { entry in
            ConsoleState.GroupLag(group: entry.group, topic: entry.topic, partition: entry.partition, committedOffset: entry.offset,
                                  lag: local(entry.topic, entry.partition).map { max(0, $0.highWatermark - entry.offset) })
        }.sorted { ($0.group, $0.topic, $0.partition) < ($1.group, $1.topic, $1.partition) }
        return ConsoleState(nodeID: nodeID, clusterID: store.clusterID, mode: cluster == nil ? "single node" : "cluster",
                            controller: controller, brokers: brokers, topics: topics, groups: groups, rooms: nil)
    }

    /// Conversations in a conversation-indexed topic's partitions held
    /// here; nil when the topic is absent or not indexed.
    public func conversationCount(topic: String) -> Int? {
        guard let descriptor = store.topic(named: topic), descriptor.configuration.conversationIndex else { return nil }
        var count = 0
        for index in 0..<descriptor.configuration.partitionCount {
            guard let log = try? store.partition(topic: topic, index: index) else { continue }
            count += (try? log.conversationCount()) ?? 0
        }
        return count
    }
}

extension Broker {
    /// Whether `user` with `password` may see the operator console: the
    /// password checked as SASL PLAIN checks it (against the user's
    /// SCRAM-SHA-512 credential), and the principal allowed Describe on the
    /// cluster by the authorizer (super users are).
    /// Whether `password` is `user`'s (its SCRAM credential), as SASL
    /// PLAIN checks it: for the HTTP proxy's Basic authentication.
    public func passwordMatches(user: String, password: String) -> Bool {
        for hash in [ScramHash.sha512, .sha256] {
            guard let credential = try? users.credential(user: user, hash: hash) else { continue }
            let expected = hash.credential(password: password, salt: credential.salt, iterations: credential.iterations)
            return constantTimeEqual(expected.storedKey, credential.storedKey)
        }
        return false
    }

    public func consoleAllows(user: String, password: String, host: String) -> Bool {
        guard let credential = try? users.credential(user: user, hash: .sha512) else { return false }
        let expected = ScramHash.sha512.credential(password: password, salt: credential.salt, iterations: credential.iterations)
        guard constantTimeEqual(expected.storedKey, credential.storedKey) else { return false }
        return authorizer.authorize(Principal(name: user), host: host, .describe, .cluster, ResourceType.clusterName)
    }
}
