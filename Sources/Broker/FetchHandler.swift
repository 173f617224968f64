import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// Fetch: consumers and followers read batches up to the high watermark.
extension Broker {
    func fetch(_ request: FetchRequest, version: Int16) async -> FetchResponse {
        if request.sessionID != 0 {
            // Fetch sessions (KIP-227) are declined: every fetch is a full one.
            return FetchResponse(errorCode: ErrorCode.fetchSessionIdNotFound.rawValue, topics: [])
        }
        let wait = min(Duration.milliseconds(max(0, Int64(request.maxWaitMilliseconds))), configuration.fetchWaitMax)
        let clock = ContinuousClock()
        let deadline = clock.now + wait
        let partitions = request.topics.flatMap { topic in topic.partitions.map { PartitionID(topic: topic.name, index: $0.index) } }
        // A follower copies up to the log end; a consumer reads up to the high watermark.
        let reading: DataNotifier.Reading = request.replicaID >= 0 && replication != nil ? .appended : .committed
        while true {
            let generation = notifier.generation(of: partitions, reading)
            let (response, bytesCount, failed) = readFetch(request, version: version)
            let now = clock.now
            if bytesCount >= Int(request.minBytes) || failed || now >= deadline || Task.isCancelled {
                return response
            }
            await notifier.wait(on: partitions, reading, afterGeneration: generation, timeout: deadline - now)
        }
    }

    private func readFetch(_ request: FetchRequest, version: Int16) -> (FetchResponse, Int, Bool) {
        var total = 0
        var failed = false
        let responseBytesMax = Int(max(request.maxBytes, 0))
        let topics = request.topics.map { topic in
            FetchResponse.Topic(name: topic.name, partitions: topic.partitions.map { requested in
                let (partition, bytes, error) = readPartition(topic: topic.name, requested, version: version, responseBytesMax: responseBytesMax, alreadyCount: total,
                                                              replicaID: request.replicaID, clientRack: request.rackID)
                total += bytes
                failed = failed || error
                return partition
            })
        }
        return (FetchResponse(topics: topics), total, failed)
    }

    /// `replicaID` ≥ 0: a follower's fetch, which reads up to the log end
    /// rather than the high watermark (it must copy what is not yet
    /// committed for the high watermark to move) and reports the follower's
    /// log end (its fetch offset) to the partition's tracker.
    ///
    /// KIP-392: a consumer that names its rack (Fetch v11+) and asks the
    /// leader is told, with no records, the in-sync follower in its rack to
    /// ask instead; a follower in sync serves such a consumer up to its own
    /// high watermark (which trails the leader's by a fetch round).
    private func readPartition(topic: String, _ requested: FetchRequest.Partition, version: Int16, responseBytesMax: Int, alreadyCount: Int,
                               replicaID: Int32 = -1, clientRack: String = "") -> (FetchResponse.Partition, Int, Bool) {
        let replica = replicaID >= 0
        func failure(_ code: ErrorCode, highWatermark: Int64 = -1, logStartOffset: Int64 = -1) -> (FetchResponse.Partition, Int, Bool) {
            // HW, LSO and log start offset are filled on error paths too: clients read them.
            (FetchResponse.Partition(index: requested.index, errorCode: code.rawValue, highWatermark: highWatermark, lastStableOffset: highWatermark, logStartOffset: logStartOffset, batches: []), 0, true)
        }
        guard let partition = try? store.partition(topic: topic, index: requested.index) else {
            return failure(cluster != nil ? .notLeaderOrFollower : .unknownTopicOrPartition)
        }
        let id = PartitionID(topic: topic, index: requested.index)
        var followerEpoch: Int32? = nil
        if !leads(topic: topic, index: requested.index) {
            guard !replica, version >= 11, let epoch = cluster?.followsInSync(id) else { return failure(.notLeaderOrFollower) }
            followerEpoch = epoch
        } else if !replica, version >= 11, let preferred = cluster?.preferredReadReplica(id, clientRack: clientRack) {
            metrics.preferredReadReplicaAnswers.increment()
            var answer = FetchResponse.Partition(index: requested.index, errorCode: 0, highWatermark: partition.highWatermark, lastStableOffset: partition.highWatermark,
                                                 logStartOffset: partition.logStartOffset, batches: [])
            answer.preferredReadReplica = preferred
            // Answered at once: the consumer moves to the follower now.
            return (answer, 0, true)
        }
        let highWatermark = partition.highWatermark
        let logStart = partition.logStartOffset
        if requested.currentLeaderEpoch >= 0 {
            let current = followerEpoch ?? partition.currentLeaderEpoch ?? leaderEpoch
            if requested.currentLeaderEpoch < current { return failure(.fencedLeaderEpoch, highWatermark: highWatermark, logStartOffset: logStart) }
            if requested.currentLeaderEpoch > current { return failure(.unknownLeaderEpoch, highWatermark: highWatermark, logStartOffset: logStart) }
        }
        let readable = replica ? partition.logEndOffset : highWatermark
        // In range is anywhere in the log, for consumers too (Kafka's rule):
        // a leader elected a moment ago learns the high watermark a fetch
        // late, and a consumer already past it would otherwise be told
        // OFFSET_OUT_OF_RANGE and reset, to the start or, with
        // auto.offset.reset=latest, past records it never read (the fault
        // campaign's seed 129 round 8). It waits there instead.
        guard requested.fetchOffset >= logStart && requested.fetchOffset <= partition.logEndOffset else {
            return failure(.offsetOutOfRange, highWatermark: highWatermark, logStartOffset: logStart)
        }
        if replica, replication != nil {
            // The follower's fetch offset is its log end: it may move the
            // high watermark. Only a fetch this leader answers counts: one
            // past its log end (a follower whose log ran ahead in an epoch
            // it never saw) or at another epoch says nothing about what the
            // follower holds of this log, and once the leader's log grew
            // that far, the mark would count records the follower lacks.
            _ = try? highWatermarks.handle(.followerFetched(replica: replicaID, offset: requested.fetchOffset), for: partition)
        }
        let remaining = responseBytesMax - alreadyCount
        var batches: [[UInt8]] = []
        if requested.fetchOffset < readable && (remaining > 0 || alreadyCount == 0) {
            let limit = max(1, min(Int(max(requested.partitionBytesMax, 0)), max(remaining, 0)))
            do {
                batches = try partition.read(from: requested.fetchOffset, bytesMax: limit, maxOffset: readable).batches
            } catch {
                return failure(Self.errorCode(for: error), highWatermark: highWatermark, logStartOffset: logStart)
            }
            // KIP-74: only the response's first batch may exceed the limits.
            if alreadyCount > 0, let first = batches.first, first.count > remaining { batches = [] }
        }
        if version < 10 && batches.contains(where: { $0.count > 22 && $0[22] & 0x07 == UInt8(CompressionCodec.zstd.rawValue) }) {
            return failure(.unsupportedCompressionType, highWatermark: highWatermark, logStartOffset: logStart)
        }
        let bytes = batches.reduce(0) { $0 + $1.count }
        if followerEpoch != nil && bytes > 0 { metrics.followerReads.increment() }
        return (FetchResponse.Partition(index: requested.index, errorCode: 0, highWatermark: highWatermark, lastStableOffset: highWatermark, logStartOffset: logStart, batches: batches), bytes, false)
    }
}
