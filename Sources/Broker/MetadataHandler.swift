import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// Metadata: where each partition is led, on a single node and in a cluster.
extension Broker {
    /// `listener`: the one the client came in on, whose addresses it is told.
    func metadata(_ request: MetadataRequest, listener: Listener) async -> MetadataResponse {
        if let cluster { return await clusterMetadata(request, cluster, listener: listener) }
        let names = request.topics ?? store.topicDescriptors.map(\.name)
        var topics: [MetadataResponse.Topic] = []
        for name in names {
            if store.topic(named: name) == nil {
                guard request.allowAutoTopicCreation && configuration.autoCreateTopics else {
                    topics.append(.init(errorCode: ErrorCode.unknownTopicOrPartition.rawValue, name: name, partitions: []))
                    continue
                }
                do {
                    try store.createTopic(name, configuration: defaultConfiguration(name: name, partitionCount: configuration.defaultPartitionCount))
                    logger.info("auto-created topic", metadata: ["topic": "\(name)", "partitions": "\(configuration.defaultPartitionCount)"])
                } catch let error where error.code == .topicAlreadyExists {
                    // Another connection created it first: fine.
                } catch {
                    let code: ErrorCode = error.code == .invalidTopicName ? .invalidTopicException : .unknownTopicOrPartition
                    topics.append(.init(errorCode: code.rawValue, name: name, partitions: []))
                    continue
                }
            }
            guard let descriptor = store.topic(named: name) else {
                topics.append(.init(errorCode: ErrorCode.unknownTopicOrPartition.rawValue, name: name, partitions: []))
                continue
            }
            let partitions = (0..<descriptor.configuration.partitionCount).map { index in
                let epoch = (try? store.partition(topic: name, index: index))?.currentLeaderEpoch ?? leaderEpoch
                return MetadataResponse.Partition(
                    index: index, leaderID: configuration.nodeID, leaderEpoch: epoch,
                    replicaNodes: [configuration.nodeID], isrNodes: [configuration.nodeID])
            }
            topics.append(.init(errorCode: 0, name: name, partitions: partitions))
        }
        let broker = MetadataResponse.Broker(nodeID: configuration.nodeID, host: listener.advertisedHost, port: Int32(listener.advertisedPort), rack: configuration.rack)
        return MetadataResponse(brokers: [broker], clusterID: store.clusterID, controllerID: configuration.nodeID, topics: topics)
    }

    /// Metadata from the cluster's view: every live broker, each
    /// partition's leader, replicas and ISR as etcd holds them.
    func clusterMetadata(_ request: MetadataRequest, _ cluster: ClusterNode, listener: Listener) async -> MetadataResponse {
        // Right after start the election may not have happened yet; clients
        // (librdkafka's admin) wait long for a controller they were told is
        // missing, so give the election a moment first.
        for _ in 0..<60 where cluster.view.snapshot.controller == nil {
            try? await Task.sleep(for: .milliseconds(50))
        }
        var snapshot = cluster.view.snapshot
        if let names = request.topics, request.allowAutoTopicCreation && configuration.autoCreateTopics {
            for name in names where snapshot.assignments[name] == nil {
                do {
                    _ = try await cluster.createTopic(name, partitionCount: Int(configuration.defaultPartitionCount), replicationFactor: -1, configs: [:])
                    logger.info("auto-created topic", metadata: ["topic": "\(name)"])
                } catch {
                    logger.debug("auto-creation did not happen here", metadata: ["topic": "\(name)", "reason": "\(error)"])
                }
            }
            snapshot = cluster.view.snapshot
        }
        // A broker without this listener is left out, as Kafka leaves it.
        let brokers = snapshot.endpoints.keys.sorted().compactMap { id -> MetadataResponse.Broker? in
            guard let (host, port) = snapshot.endpoints[id]?.address(for: listener.name).flatMap(Self.hostAndPort) else { return nil }
            return MetadataResponse.Broker(nodeID: id, host: host, port: port, rack: snapshot.endpoints[id]?.rack)
        }
        let names = request.topics ?? snapshot.assignments.keys.sorted()
        let topics = names.map { name -> MetadataResponse.Topic in
            guard let assignment = snapshot.assignments[name] else {
                // Being created (or not at all): clients retry on this code.
                let code: ErrorCode = request.allowAutoTopicCreation && configuration.autoCreateTopics ? .leaderNotAvailable : .unknownTopicOrPartition
                return .init(errorCode: code.rawValue, name: name, partitions: [])
            }
            let partitions = assignment.replicas.enumerated().map { index, replicas -> MetadataResponse.Partition in
                let record = snapshot.records[PartitionID(topic: name, index: Int32(index))]?.state
                var partition = MetadataResponse.Partition(
                    index: Int32(index), leaderID: record?.leader ?? -1, leaderEpoch: record?.leaderEpoch ?? -1,
                    replicaNodes: replicas, isrNodes: record?.isr ?? [])
                if partition.leaderID < 0 { partition.errorCode = ErrorCode.leaderNotAvailable.rawValue }
                partition.offlineReplicas = replicas.filter { snapshot.brokers[$0] == nil }
                return partition
            }
            var topic = MetadataResponse.Topic(errorCode: 0, name: name, partitions: partitions)
            topic.isInternal = name == OffsetsTopic.name
            return topic
        }
        return MetadataResponse(brokers: brokers, clusterID: configuration.clusterName, controllerID: snapshot.controller ?? -1, topics: topics)
    }

    /// `host:port` (the host may hold colons: IPv6) as Metadata writes it.
    static func hostAndPort(_ address: String) -> (String, Int32)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int32(address[address.index(after: colon)...]) else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }
}
