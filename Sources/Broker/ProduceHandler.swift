import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// Produce: validate, write, wait for durability (or replication), answer.
extension Broker {
    /// Writes a Produce request's batches (every partition at once) and
    /// returns what waits for their durability and builds the answer; all
    /// partitions of the request share one group-commit sync.
    func produce(_ request: ProduceRequest, version: Int16) async -> @Sendable () async -> ProduceResponse {
        if let refused = refusal(of: request, version: version) {
            return { refused }
        }
        let timeout = Duration.milliseconds(Int64(max(request.timeoutMilliseconds, 0)))
        // One partition (the common case: a producer's linger batch for one
        // key, the chat gateway's coalesced records) is written right here;
        // a child task would cost a hand-off to another thread and back.
        if request.topics.count == 1, let topic = request.topics.first, topic.partitions.count == 1 {
            let staged = writeOne(topic: topic.name, topic.partitions[0], version: version, acks: request.acks)
            return { [self] in
                let answer = await finishOne(topic: topic.name, staged, acks: request.acks, timeout: timeout)
                return ProduceResponse(topics: [.init(name: topic.name, partitions: [answer])])
            }
        }
        let written = await withTaskGroup(of: (Int, Int, StagedAppend).self) { group in
            for (topicPosition, topic) in request.topics.enumerated() {
                for (partitionPosition, partition) in topic.partitions.enumerated() {
                    group.addTask {
                        (topicPosition, partitionPosition, self.writeOne(topic: topic.name, partition, version: version, acks: request.acks))
                    }
                }
            }
            var written: [Int: [Int: StagedAppend]] = [:]
            for await (topicPosition, partitionPosition, staged) in group {
                written[topicPosition, default: [:]][partitionPosition] = staged
            }
            return written
        }
        let topics = request.topics.enumerated().map { topicPosition, topic in
            (name: topic.name, partitions: topic.partitions.indices.map { written[topicPosition]![$0]! })
        }
        return { [self] in
            var response = ProduceResponse(topics: [])
            for topic in topics {
                var partitions: [ProduceResponse.PartitionResponse] = []
                for staged in topic.partitions {
                    partitions.append(await finishOne(topic: topic.name, staged, acks: request.acks, timeout: timeout))
                }
                response.topics.append(.init(name: topic.name, partitions: partitions))
            }
            return response
        }
    }

    /// The answer to a Produce refused whole (its version, acks or a
    /// transaction), or nil.
    func refusal(of request: ProduceRequest, version: Int16) -> ProduceResponse? {
        let refusal: ErrorCode
        if SupportedAPIs.produceRefusedVersions.contains(version) {
            refusal = .unsupportedVersion
        } else if ![0, 1, -1].contains(request.acks) {
            refusal = .invalidRequiredAcks
        } else if request.transactionalID != nil {
            refusal = .invalidTransactionState
        } else {
            return nil
        }
        return ProduceResponse(topics: request.topics.map { topic in
            .init(name: topic.name, partitions: topic.partitions.map { .init(index: $0.index, errorCode: refusal.rawValue, baseOffset: -1) })
        })
    }

    /// A Produce without a task: every partition is written here, on the
    /// caller's thread (a connection's event loop), and `done` gets the
    /// answer once every partition's is in (`finish`): at once when the
    /// durability mode acknowledges on write, else from the group-commit
    /// thread; in a cluster with acks=all, from the thread whose follower
    /// fetch committed the last of them.
    func produceDirect(_ request: ProduceRequest, version: Int16, done: @escaping @Sendable (ProduceResponse) -> Void) {
        if let refused = refusal(of: request, version: version) {
            return done(refused)
        }
        let timeout = Duration.milliseconds(Int64(max(request.timeoutMilliseconds, 0)))
        // The common case, one partition, without the gathering below.
        if request.topics.count == 1, let topic = request.topics.first, topic.partitions.count == 1 {
            let staged = writeOne(topic: topic.name, topic.partitions[0], version: version, acks: request.acks)
            return finish(topic: topic.name, staged, acks: request.acks, timeout: timeout) { answer in
                done(ProduceResponse(topics: [.init(name: topic.name, partitions: [answer])]))
            }
        }
        guard request.topics.contains(where: { !$0.partitions.isEmpty }) else {
            return done(ProduceResponse(topics: request.topics.map { .init(name: $0.name, partitions: []) }))
        }
        let answers = ProduceAnswers(request)
        for (topicPosition, topic) in request.topics.enumerated() {
            for (partitionPosition, partition) in topic.partitions.enumerated() {
                let staged = writeOne(topic: topic.name, partition, version: version, acks: request.acks)
                finish(topic: topic.name, staged, acks: request.acks, timeout: timeout) { answer in
                    if let response = answers.set(answer, topic: topicPosition, partition: partitionPosition) { done(response) }
                }
            }
        }
    }

    /// One partition of a Produce after its write: refused, or written and
    /// waiting for durability.
    enum StagedAppend: Sendable {
        case refused(ProduceResponse.PartitionResponse)
        /// `leaderEpoch`: the epoch this broker led the partition at when
        /// it wrote (nil on a single node), so an acknowledgement can check
        /// that it still leads at that epoch.
        case written(PartitionLog, PendingAppend, index: Int32, leaderEpoch: Int32? = nil)
    }

    private func refusal(topic: String, index: Int32, _ code: ErrorCode, _ message: String) -> ProduceResponse.PartitionResponse {
        // A sequence out of order means a producer's batch went missing
        // between it and the log: worth an operator's eye, unlike the rest.
        let level: Logger.Level = code == .outOfOrderSequenceNumber ? .warning : .debug
        logger.log(level: level, "produce refused", metadata: ["topic": "\(topic)", "partition": "\(index)", "error": "\(code)", "reason": "\(message)"])
        return .init(index: index, errorCode: code.rawValue, baseOffset: -1, errorMessage: message)
    }

    /// `built`: the batch comes from `appendOne`, built in this process.
    func writeOne(topic: String, _ data: ProduceRequest.PartitionData, version: Int16, acks: Int16, built: Bool = false) -> StagedAppend {
        func failure(_ code: ErrorCode, _ message: String) -> StagedAppend {
            .refused(refusal(topic: topic, index: data.index, code, message))
        }
        guard let records = data.records, !records.isEmpty else { return failure(.corruptMessage, "no records") }
        let partition: PartitionLog
        do {
            partition = try store.partition(topic: topic, index: data.index)
        } catch {
            return failure(.unknownTopicOrPartition, error.message)
        }
        // zstd needs Produce v7 or later (KIP-110).
        if version < 7 && records.count > 22 && records[22] & 0x07 == UInt8(CompressionCodec.zstd.rawValue) {
            return failure(.unsupportedCompressionType, "zstd needs Produce v7 or later")
        }
        if !leads(topic: topic, index: data.index) {
            return failure(.notLeaderOrFollower, "this broker does not lead \(topic)/\(data.index)")
        }
        if acks == -1, let replication {
            let required = partition.configuration.minInsyncReplicas ?? replication.minInsyncReplicas
            if !replication.acceptsAcksAll(PartitionID(topic: topic, index: data.index), minInsyncReplicas: required) {
                return failure(.notEnoughReplicas, "fewer in-sync replicas than min.insync.replicas=\(required)")
            }
        }
        do {
            let ledAt = replication?.leaderEpoch(PartitionID(topic: topic, index: data.index))
            let epoch = ledAt ?? partition.currentLeaderEpoch ?? leaderEpoch
            return .written(partition, try partition.write(records, leaderEpoch: epoch, built: built), index: data.index, leaderEpoch: ledAt)
        } catch {
            return .refused(appendFailure(topic: topic, index: data.index, error))
        }
    }

    /// `finish` for a task.
    func finishOne(topic: String, _ staged: StagedAppend, acks: Int16, timeout: Duration) async -> ProduceResponse.PartitionResponse {
        await withCheckedContinuation { continuation in
            finish(topic: topic, staged, acks: acks, timeout: timeout) { continuation.resume(returning: $0) }
        }
    }

    /// One partition of a Produce after its write: `done` gets its answer
    /// once the batch is durable (a single node, or acks=1) or the
    /// in-sync replicas hold it (acks=all in a cluster). It is called at
    /// once, from the group-commit thread after its sync, or from the
    /// thread whose follower fetch moved the high watermark: no task waits.
    func finish(topic: String, _ staged: StagedAppend, acks: Int16, timeout: Duration, done: @escaping @Sendable (ProduceResponse.PartitionResponse) -> Void) {
        guard case .written(let partition, let pending, let index, let ledAt) = staged else {
            if case .refused(let response) = staged { done(response) }
            return
        }
        pending.whenDurable { [self] outcome in
            do {
                let result = try outcome.get()
                let success = ProduceResponse.PartitionResponse(index: index, errorCode: 0, baseOffset: result.baseOffset, logStartOffset: result.logStartOffset)
                guard let replication else {
                    try commitAlone(topic: topic, partition, index: index, result)
                    return done(success)
                }
                let id = PartitionID(topic: topic, index: index)
                // Leadership may have moved since the write (a controlled
                // shutdown, a failover): the batch is then nobody's to
                // acknowledge here. The new leader may lack it, and this
                // broker, now a follower, may cut it; the client retries
                // there, and its sequence numbers keep the retry in order.
                let notLeading = "this broker stopped leading \(topic)/\(index) before the batch was committed"
                guard let ledAt, replication.leaderEpoch(id) == ledAt, replication.isReplicated(id) else {
                    return done(refusal(topic: topic, index: index, .notLeaderOrFollower, notLeading))
                }
                // With followers, the high watermark is the ISR's smallest log end.
                try highWatermarks.handle(.appendedDurably(logEndOffset: result.lastOffset + 1), for: partition)
                // Followers long-polling at the old log end have something to copy.
                notifier.notify(id, .appended)
                guard acks == -1 else {
                    metrics.recordOffsets(topic: topic, partition: index, logEndOffset: partition.logEndOffset, highWatermark: partition.highWatermark)
                    return done(success)
                }
                replication.whenHighWatermark(id, reaches: result.lastOffset + 1, timeout: timeout) { [self] committed in
                    guard replication.leaderEpoch(id) == ledAt else {
                        return done(refusal(topic: topic, index: index, .notLeaderOrFollower, notLeading))
                    }
                    guard committed else {
                        return done(refusal(topic: topic, index: index, .requestTimedOut, "the in-sync replicas did not copy the batch within \(timeout)"))
                    }
                    let required = partition.configuration.minInsyncReplicas ?? replication.minInsyncReplicas
                    if !replication.acceptsAcksAll(id, minInsyncReplicas: required) {
                        return done(refusal(topic: topic, index: index, .notEnoughReplicasAfterAppend, "the ISR shrank below min.insync.replicas=\(required) after the append"))
                    }
                    metrics.recordOffsets(topic: topic, partition: index, logEndOffset: partition.logEndOffset, highWatermark: partition.highWatermark)
                    done(success)
                }
            } catch {
                done(appendFailure(topic: topic, index: index, error))
            }
        }
    }

    /// A partition without followers commits what is durable under the
    /// store's durability mode: its high watermark moves up to the append,
    /// and whoever waits for it (fetches, the fan-out) is told.
    func commitAlone(topic: String, _ partition: PartitionLog, index: Int32, _ result: AppendResult) throws(LogStoreError) {
        try highWatermarks.handle(.appendedDurably(logEndOffset: result.lastOffset + 1), for: partition)
        metrics.recordOffsets(topic: topic, partition: index, logEndOffset: partition.logEndOffset, highWatermark: partition.highWatermark)
    }

    func appendFailure(topic: String, index: Int32, _ error: any Error) -> ProduceResponse.PartitionResponse {
        guard let error = error as? LogStoreError else {
            return refusal(topic: topic, index: index, .unknownServerError, "\(error)")
        }
        let code = Self.errorCode(for: error)
        if code == .kafkaStorageError {
            logger.error("append failed", metadata: ["topic": "\(topic)", "partition": "\(index)", "error": "\(error)"])
        }
        return refusal(topic: topic, index: index, code, error.message)
    }
}

/// A multi-partition Produce's answers as they become durable (each
/// partition's sync may finish on another thread); the whole response once
/// the last is in.
private final class ProduceAnswers: Sendable {
    private struct Gathered {
        var response: ProduceResponse
        var missing: Int
    }

    private let gathered: Mutex<Gathered>

    init(_ request: ProduceRequest) {
        let response = ProduceResponse(topics: request.topics.map { topic in
            .init(name: topic.name, partitions: topic.partitions.map { .init(index: $0.index, errorCode: 0, baseOffset: -1) })
        })
        gathered = Mutex(Gathered(response: response, missing: request.topics.reduce(0) { $0 + $1.partitions.count }))
    }

    /// Records one partition's answer; returns the response when it was the last.
    func set(_ answer: ProduceResponse.PartitionResponse, topic: Int, partition: Int) -> ProduceResponse? {
        gathered.withLock { gathered in
            gathered.response.topics[topic].partitions[partition] = answer
            gathered.missing -= 1
            return gathered.missing == 0 ? gathered.response : nil
        }
    }
}
