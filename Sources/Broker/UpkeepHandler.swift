import Cluster
import Foundation
import KafkaWire
import LogStore
import Logging

// Topic and group upkeep: DeleteRecords, CreatePartitions, DeleteGroups,
// OffsetDelete, DescribeLogDirs, DescribeCluster, DescribeProducers.
extension Broker {
    /// DeleteRecords: the leader moves each partition's log start; its
    /// followers learn it from their next fetch (as in Kafka).
    func deleteRecords(_ request: DeleteRecordsRequest) -> DeleteRecordsResponse {
        DeleteRecordsResponse(topics: request.topics.map { topic in
            TopicPartitions(name: topic.name, partitions: topic.partitions.map { partition in
                func failure(_ code: ErrorCode) -> DeleteRecordsResponse.Partition {
                    .init(index: partition.index, lowWatermark: -1, errorCode: code.rawValue)
                }
                guard let log = try? store.partition(topic: topic.name, index: partition.index) else { return failure(.unknownTopicOrPartition) }
                guard leads(topic: topic.name, index: partition.index) else { return failure(.notLeaderOrFollower) }
                do throws(LogStoreError) {
                    let start = try log.deleteRecords(before: partition.offset)
                    logger.info("deleted records", metadata: ["partition": "\(topic.name)/\(partition.index)", "logStartOffset": "\(start)"])
                    return .init(index: partition.index, lowWatermark: start, errorCode: 0)
                } catch {
                    return failure(Self.errorCode(for: error))
                }
            })
        })
    }

    /// CreatePartitions on a single node. A topic only grows; the existing
    /// partitions keep their records (and a conversation's records stay in
    /// the partition they were written to: Docs/chat.md).
    func createPartitions(_ request: CreatePartitionsRequest) async -> NamedResults {
        var results: [NamedResults.Result] = []
        for topic in request.topics {
            do {
                guard topic.assignments == nil else {
                    throw TopicRequestError(code: .invalidReplicaAssignment, message: "manual replica assignment is not supported")
                }
                // A conversation lives in the partition its key hashes to: with
                // more partitions its new records would land elsewhere and its
                // history split. Such topics keep their count (Docs/chat.md).
                if configuredTopic(topic.name)?.conversationIndexed == true || configuration.conversationIndexedTopics.contains(topic.name) {
                    throw TopicRequestError(code: .policyViolation, message: "\(topic.name) keeps the conversation index: a conversation's records would split across partitions; its partition count is fixed")
                }
                if let cluster {
                    try await cluster.addPartitions(topic.name, count: topic.count, validateOnly: request.validateOnly)
                } else {
                    guard let current = store.topic(named: topic.name) else {
                        throw TopicRequestError(code: .unknownTopicOrPartition, message: "topic \(topic.name) does not exist")
                    }
                    guard topic.count > current.configuration.partitionCount else {
                        throw TopicRequestError(code: .invalidPartitions, message: "topic \(topic.name) has \(current.configuration.partitionCount) partitions; a topic only grows")
                    }
                    if !request.validateOnly { try store.addPartitions(topic.name, count: topic.count) }
                }
                if !request.validateOnly {
                    logger.info("added partitions", metadata: ["topic": "\(topic.name)", "partitions": "\(topic.count)"])
                }
                results.append(.init(name: topic.name, errorCode: 0))
            } catch let error as TopicRequestError {
                results.append(.init(name: topic.name, errorCode: error.code.rawValue, errorMessage: error.message))
            } catch let error as LogStoreError {
                results.append(.init(name: topic.name, errorCode: (error.code == .invalidConfiguration ? ErrorCode.invalidPartitions : Self.errorCode(for: error)).rawValue,
                                     errorMessage: error.message))
            } catch {
                results.append(.init(name: topic.name, errorCode: ErrorCode.unknownServerError.rawValue, errorMessage: "\(error)"))
            }
        }
        return NamedResults(results: results)
    }

    /// DeleteGroups: an empty group's committed offsets go; a group with
    /// members answers NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND.
    func deleteGroups(_ request: DeleteGroupsRequest) async -> NamedResults {
        var results: [NamedResults.Result] = []
        for group in request.groupIDs {
            if let refused = coordinatorRefusal(group) {
                results.append(.init(name: group, errorCode: refused.rawValue))
                continue
            }
            guard await groups.isEmpty(group) else {
                results.append(.init(name: group, errorCode: ErrorCode.nonEmptyGroup.rawValue))
                continue
            }
            let committed = (try? cluster != nil ? loadedOffsets(group: group) : store.committedOffsets(group: group)) ?? []
            let known = await groups.knows(group)
            guard known || !committed.isEmpty else {
                results.append(.init(name: group, errorCode: ErrorCode.groupIdNotFound.rawValue))
                continue
            }
            if let failed = await deleteOffsets(group: group, committed.map { ($0.topic, $0.partition) }) {
                results.append(.init(name: group, errorCode: failed.rawValue))
                continue
            }
            await groups.forget(group)
            logger.info("deleted group", metadata: ["group": "\(group)", "offsets": "\(committed.count)"])
            results.append(.init(name: group, errorCode: 0))
        }
        return NamedResults(results: results)
    }

    /// OffsetDelete: a group's offsets of the named partitions go, unless
    /// the group's members consume the topic (GROUP_SUBSCRIBED_TO_TOPIC).
    func offsetDelete(_ request: OffsetDeleteRequest) async -> OffsetDeleteResponse {
        if let refused = coordinatorRefusal(request.groupID) { return OffsetDeleteResponse(errorCode: refused.rawValue, topics: []) }
        let committed = (try? cluster != nil ? loadedOffsets(group: request.groupID) : store.committedOffsets(group: request.groupID)) ?? []
        let known = await groups.knows(request.groupID)
        guard known || !committed.isEmpty else { return OffsetDeleteResponse(errorCode: ErrorCode.groupIdNotFound.rawValue, topics: []) }
        let subscribed = await groups.subscribedTopics(request.groupID)
        var deleted: [(String, Int32)] = []
        var topics: [TopicPartitions<OffsetDeleteResponse.PartitionError>] = []
        for topic in request.topics {
            let code: ErrorCode = subscribed.contains(topic.name) ? .groupSubscribedToTopic : .none
            if code == .none { deleted += topic.partitions.map { (topic.name, $0) } }
            topics.append(TopicPartitions(name: topic.name, partitions: topic.partitions.map { .init(index: $0, errorCode: code.rawValue) }))
        }
        if let failed = await deleteOffsets(group: request.groupID, deleted) { return OffsetDeleteResponse(errorCode: failed.rawValue, topics: []) }
        return OffsetDeleteResponse(errorCode: 0, topics: topics)
    }

    /// Deletes committed offsets where they live: the store on a single
    /// node, tombstones in `__consumer_offsets` in a cluster.
    private func deleteOffsets(group: String, _ partitions: [(topic: String, partition: Int32)]) async -> ErrorCode? {
        guard !partitions.isEmpty else { return nil }
        if cluster != nil {
            let failed = await deleteReplicated(group: group, partitions)
            if failed == nil { metrics.forgetCommitted(group: group, partitions: partitions) }
            return failed
        }
        do {
            try store.deleteCommittedOffsets(group: group, partitions: partitions)
            metrics.forgetCommitted(group: group, partitions: partitions)
            return nil
        } catch {
            logger.error("cannot delete committed offsets", metadata: ["group": "\(group)", "error": "\(error)"])
            return .kafkaStorageError
        }
    }

    /// DescribeLogDirs: the one data directory, each partition's size and
    /// how far this replica is behind its high watermark.
    func describeLogDirs(_ request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
        var wanted: [String: Set<Int32>]? = nil
        if let topics = request.topics {
            wanted = [:]
            for topic in topics { wanted![topic.name, default: []].formUnion(topic.partitions) }
        }
        var byTopic: [String: [DescribeLogDirsResponse.Partition]] = [:]
        for partition in store.allPartitions {
            if let wanted, wanted[partition.topicName]?.contains(partition.index) != true { continue }
            let summary = partition.summary
            byTopic[partition.topicName, default: []].append(.init(index: partition.index, sizeBytes: summary.sizeBytes,
                                                                   offsetLag: max(0, summary.logEndOffset - summary.highWatermark)))
        }
        let space = FileSystemSpace(path: configuration.dataDirectory)
        let total = space?.totalBytes ?? -1
        let usable = space?.usableBytes ?? -1
        let path = (configuration.dataDirectory as NSString).standardizingPath
        return DescribeLogDirsResponse(errorCode: 0, logDirs: [.init(
            errorCode: 0, path: path, topics: byTopic.keys.sorted().map { TopicPartitions(name: $0, partitions: byTopic[$0]!.sorted { $0.index < $1.index }) },
            totalBytes: total, usableBytes: usable)])
    }

    /// DescribeCluster: the brokers on the listener the client came in on,
    /// the controller and the cluster's id, as Metadata has them.
    func describeCluster(listener: Listener) async -> DescribeClusterResponse {
        let metadata = await metadata(MetadataRequest(topics: []), listener: listener)
        return DescribeClusterResponse(clusterID: metadata.clusterID ?? store.clusterID, controllerID: metadata.controllerID, brokers: metadata.brokers)
    }

    /// DescribeProducers: the idempotent producers each partition remembers.
    func describeProducers(_ request: DescribeProducersRequest) -> DescribeProducersResponse {
        DescribeProducersResponse(topics: request.topics.map { topic in
            TopicPartitions(name: topic.name, partitions: topic.partitions.map { index in
                guard let log = try? store.partition(topic: topic.name, index: index) else {
                    return .init(index: index, errorCode: ErrorCode.unknownTopicOrPartition.rawValue, producers: [])
                }
                guard leads(topic: topic.name, index: index) else {
                    return .init(index: index, errorCode: ErrorCode.notLeaderOrFollower.rawValue, producers: [])
                }
                return .init(index: index, errorCode: 0, producers: log.producers.map { .init(producerID: $0.producerID, epoch: Int32($0.epoch), lastSequence: $0.lastSequence) })
            })
        })
    }
}
