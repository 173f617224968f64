import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// OffsetCommit and OffsetFetch, on a single node and replicated in a cluster.
extension Broker {
    func offsetCommit(_ request: OffsetCommitRequest) async -> OffsetCommitResponse {
        func everyPartition(_ code: ErrorCode) -> OffsetCommitResponse {
            OffsetCommitResponse(topics: request.topics.map { topic in (topic.name, topic.partitions.map { ($0.index, code.rawValue) }) })
        }
        if let refused = coordinatorRefusal(request.groupID) { return everyPartition(refused) }
        let verdict = await groups.validateCommit(groupID: request.groupID, generation: request.generationID, memberID: request.memberID)
        guard verdict == .none else { return everyPartition(verdict) }
        var entries: [GroupOffsetEntry] = []
        var results: [(name: String, partitions: [(index: Int32, errorCode: Int16)])] = []
        // A coordinator in a cluster need not hold the committed topic: the cluster's assignments say what exists.
        let assignments = cluster?.view.snapshot.assignments
        for topic in request.topics {
            var partitions: [(index: Int32, errorCode: Int16)] = []
            for partition in topic.partitions {
                let exists = if let assignments {
                    assignments[topic.name].map { partition.index >= 0 && Int(partition.index) < $0.replicas.count } ?? false
                } else {
                    (try? store.partition(topic: topic.name, index: partition.index)) != nil
                }
                if !exists {
                    partitions.append((partition.index, ErrorCode.unknownTopicOrPartition.rawValue))
                } else if (partition.metadata?.utf8.count ?? 0) > 4096 {
                    partitions.append((partition.index, ErrorCode.offsetMetadataTooLarge.rawValue))
                } else {
                    entries.append(GroupOffsetEntry(topic: topic.name, partition: partition.index, committed: CommittedOffset(offset: partition.offset, leaderEpoch: partition.leaderEpoch, metadata: partition.metadata)))
                    partitions.append((partition.index, 0))
                }
            }
            results.append((topic.name, partitions))
        }
        if cluster != nil {
            if let failed = await commitReplicated(group: request.groupID, entries) { return everyPartition(failed) }
        } else {
            do {
                try await store.commitOffsets(group: request.groupID, entries)
            } catch {
                logger.error("cannot store committed offsets", metadata: ["group": "\(request.groupID)", "error": "\(error)"])
                return everyPartition(.kafkaStorageError)
            }
        }
        for entry in entries {
            metrics.noteCommitted(group: request.groupID, topic: entry.topic, partition: entry.partition, offset: entry.committed.offset)
        }
        return OffsetCommitResponse(topics: results)
    }

    func offsetFetch(_ request: OffsetFetchRequest) -> OffsetFetchResponse {
        if let refused = coordinatorRefusal(request.groupID) {
            return OffsetFetchResponse(topics: [], errorCode: refused.rawValue)
        }
        let committed: [GroupOffsetEntry]
        do {
            committed = try cluster != nil ? loadedOffsets(group: request.groupID) : store.committedOffsets(group: request.groupID)
        } catch {
            logger.error("cannot read committed offsets", metadata: ["group": "\(request.groupID)", "error": "\(error)"])
            return OffsetFetchResponse(topics: [], errorCode: ErrorCode.kafkaStorageError.rawValue)
        }
        var byPartition: [String: [Int32: CommittedOffset]] = [:]
        for entry in committed { byPartition[entry.topic, default: [:]][entry.partition] = entry.committed }
        let wanted = request.topics ?? byPartition.keys.sorted().map { ($0, byPartition[$0]!.keys.sorted()) }
        return OffsetFetchResponse(topics: wanted.map { topic in
            (topic.name, topic.partitions.map { index in
                // Never committed: offset -1 and empty metadata, no error.
                guard let found = byPartition[topic.name]?[index] else {
                    return .init(index: index, offset: -1, leaderEpoch: -1, metadata: "", errorCode: 0)
                }
                return .init(index: index, offset: found.offset, leaderEpoch: found.leaderEpoch, metadata: found.metadata, errorCode: 0)
            })
        })
    }

    /// In a cluster, a group's requests go to the leader of its partition of
    /// `__consumer_offsets`; any other broker answers NOT_COORDINATOR, and
    /// the client asks FindCoordinator again.
    func coordinatorRefusal(_ group: String) -> ErrorCode? {
        guard cluster != nil else { return nil }
        return leads(topic: OffsetsTopic.name, index: offsets.partition(for: group)) ? nil : .notCoordinator
    }

    /// This coordinator's view of the group's partition of
    /// `__consumer_offsets`, read from the log if it has just become its leader.
    private func offsetsView(group: String) throws -> (partition: Int32, epoch: Int32, log: PartitionLog)? {
        let index = offsets.partition(for: group)
        guard let epoch = replication?.leaderEpoch(PartitionID(topic: OffsetsTopic.name, index: index)) else { return nil }
        let log = try store.partition(topic: OffsetsTopic.name, index: index)
        try offsets.load(partition: index, epoch: epoch, log: log)
        return (index, epoch, log)
    }

    func loadedOffsets(group: String) throws -> [GroupOffsetEntry] {
        guard try offsetsView(group: group) != nil else { throw LogStoreError(.unknownPartition, "not the coordinator of \(group)") }
        return offsets.committed(group: group)
    }

    /// Appends a commit to the group's partition of `__consumer_offsets` and
    /// waits, as acks=all does, for the in-sync replicas; nil when it is
    /// committed, else the error for every partition of the request.
    func commitReplicated(group: String, _ entries: [GroupOffsetEntry]) async -> ErrorCode? {
        guard !entries.isEmpty else { return nil }
        // A request may name a partition many times (a 100 MB OffsetCommit
        // holds millions), and one batch holds at most 2^20 records: the
        // last commit of each partition is the one that counts.
        var latest: [PartitionID: Int] = [:]
        for (position, entry) in entries.enumerated() { latest[PartitionID(topic: entry.topic, index: entry.partition)] = position }
        let entries = latest.count == entries.count ? entries : latest.values.sorted().map { entries[$0] }
        return await appendReplicated(group: group, records: { try OffsetsTopic.batch(group: group, entries, timestamp: $0) }) { view, baseOffset in
            offsets.apply(partition: view.partition, epoch: view.epoch, group: group, entries, baseOffset: baseOffset)
        }
    }

    /// Appends tombstones for a group's offsets of `partitions` to its
    /// partition of `__consumer_offsets`, replicated as a commit is.
    func deleteReplicated(group: String, _ partitions: [(topic: String, partition: Int32)]) async -> ErrorCode? {
        // Once per partition, for the same reason as a commit's.
        var seen = Set<PartitionID>()
        let partitions = partitions.filter { seen.insert(PartitionID(topic: $0.topic, index: $0.partition)).inserted }
        return await appendReplicated(group: group, records: { try OffsetsTopic.tombstones(group: group, partitions, timestamp: $0) }) { view, baseOffset in
            offsets.remove(partition: view.partition, epoch: view.epoch, group: group, partitions, baseOffset: baseOffset)
        }
    }

    /// One batch (made by `records` at the wall clock's time) appended to
    /// the group's partition of `__consumer_offsets` as acks=all appends;
    /// `applied` updates the coordinator's view once it is committed.
    private func appendReplicated(
        group: String, records: (Int64) throws -> [UInt8], applied: ((partition: Int32, epoch: Int32, log: PartitionLog), Int64) -> Void
    ) async -> ErrorCode? {
        let view: (partition: Int32, epoch: Int32, log: PartitionLog)
        let batch: [UInt8]
        do {
            guard let found = try offsetsView(group: group) else { return .notCoordinator }
            view = found
            batch = try records(Int64(Date().timeIntervalSince1970 * 1000))
        } catch {
            logger.error("cannot read the committed offsets", metadata: ["group": "\(group)", "error": "\(error)"])
            return .coordinatorNotAvailable
        }
        let staged = writeOne(topic: OffsetsTopic.name, ProduceRequest.PartitionData(index: view.partition, batch: batch), version: 8, acks: -1)
        let answer = await finishOne(topic: OffsetsTopic.name, staged, acks: -1, timeout: .seconds(5))
        switch ErrorCode(rawValue: answer.errorCode) {
        case ErrorCode.none?:
            applied(view, answer.baseOffset)
            return nil
        case .notLeaderOrFollower?, .fencedLeaderEpoch?:
            return .notCoordinator
        default:
            // As Kafka maps them: too few replicas or a timeout leave the coordinator unavailable for now.
            logger.warning("a write to the group offsets was not replicated", metadata: [
                "group": "\(group)", "error": "\(answer.errorCode)", "reason": "\(answer.errorMessage ?? "")"])
            return .coordinatorNotAvailable
        }
    }
}
