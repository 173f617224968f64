import Core
import KafkaNIO
import KafkaWire
import LogStore
import Logging
import Synchronization

/// A follower's copy loop for the partitions one leader leads: Fetch with
/// this broker's replica id from the follower's log end offset, append what
/// comes back with `appendReplica` (byte for byte), and take the leader's
/// high watermark (never past the local log end). The leader learns each
/// follower's log end from the offset it fetches at. A broker runs one per
/// leader, over every partition it follows there, as Kafka's replica
/// fetcher threads do: one Fetch answers a Produce to several partitions.
///
/// Before copying, a follower truncates to the leader's history
/// (`reconcile`): its log may end in batches of an epoch the leader never
/// saw (written while it led, never committed), which must go.
public final class ReplicaFetcher: Sendable {
    public let replicaID: Int32
    public let leaderHost: String
    public let leaderPort: Int
    public let partitions: [PartitionLog]
    /// The owner of the high watermarks: told of each copy and of the leader's word.
    let highWatermarks: HighWatermarks
    let logger: Logger
    /// Each log's fence, taken when this fetcher was made: a later role
    /// (leading, or following someone else) refuses this fetcher's copies.
    let fences: [UInt64]
    /// Partitions the leader refused rest out of the fetches for a while (`FetchRests`).
    let rests = Mutex(FetchRests(restAfterRefusal: .milliseconds(100)))
    /// The fetcher's time, for its rests.
    let clock: any MonotonicClock
    static let fetchVersion: Int16 = 11

    /// TLS and SASL to the leader's inter-broker listener.
    let security: KafkaClientSecurity
    /// Bytes per second this fetcher copies at most (replicas catching up
    /// in a reassignment), nil for no limit: it rests after each answer
    /// until its bytes' share of the schedule is over.
    let bytesPerSecond: Int64?
    /// When the bytes copied so far are due under `bytesPerSecond`.
    let throttle = Mutex(CopySchedule())

    public init(replicaID: Int32, leaderHost: String, leaderPort: Int, partitions: [PartitionLog],
                highWatermarks: HighWatermarks = HighWatermarks(), clock: any MonotonicClock = SystemClock(),
                security: KafkaClientSecurity = .none, bytesPerSecond: Int64? = nil, logger: Logger = Logger(label: "postduif.replica")) {
        precondition(replicaID >= 0, "a replica id is a broker id, not negative")
        self.bytesPerSecond = bytesPerSecond.map { max($0, 1) }
        self.replicaID = replicaID
        self.security = security
        self.leaderHost = leaderHost
        self.leaderPort = leaderPort
        self.partitions = partitions
        self.highWatermarks = highWatermarks
        self.clock = clock
        self.logger = logger
        fences = partitions.map { $0.fenceReplicas() }
        // Following moves no high watermark, so nothing is persisted here.
        for log in partitions { _ = try? highWatermarks.handle(.becameFollower(logEndOffset: log.logEndOffset), for: log) }
    }

    /// Copies until the task is cancelled; reconnects after a failure, and
    /// reconciles with the leader's history on every (re)connection.
    public func run(maxWaitMilliseconds: Int32 = 500) async {
        while !Task.isCancelled {
            do {
                let connection = try await KafkaClientConnection.connect(host: leaderHost, port: leaderPort, clientID: "postduif-replica-\(replicaID)", security: security)
                defer { Task { await connection.close() } }
                // A cancelled fetcher (its partitions moved to a new one) must
                // not hold a long-polling fetch open for up to its wait.
                try await withTaskCancellationHandler {
                    try await reconcile(on: connection)
                    while !Task.isCancelled {
                        try await fetchOnce(on: connection, maxWaitMilliseconds: maxWaitMilliseconds)
                    }
                } onCancel: {
                    connection.closeNow()
                }
            } catch let error as LogStoreError where error.code == .replicaFenced {
                logger.info("replica fetch stopped: the log has a new role", metadata: ["leader": "\(leaderHost):\(leaderPort)"])
                return
            } catch {
                guard !Task.isCancelled else { return }
                logger.warning("replica fetch failed; retrying", metadata: ["leader": "\(leaderHost):\(leaderPort)", "error": "\(error)"])
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// KIP-101/279: asks the leader where the epoch of each partition's last
    /// batch ends in its log, and truncates there if the local log goes
    /// further; repeats while the leader answers an older epoch (the local
    /// log may diverge across several epochs). Returns the offsets dropped.
    @discardableResult
    public func reconcile(on connection: KafkaClientConnection) async throws -> Int64 {
        var dropped: Int64 = 0
        for log in partitions {
            while let epoch = log.currentLeaderEpoch, log.logEndOffset > 0 {
                var request = OffsetForLeaderEpochRequest(topics: [.init(name: log.topicName, partitions: [.init(index: log.index, currentLeaderEpoch: -1, leaderEpoch: epoch)])])
                request.replicaID = replicaID
                var reader = try await connection.request(.offsetForLeaderEpoch, version: 3) { request.encode(&$0, version: 3) }
                // Without the leader's answer the log may still diverge from
                // the leader's: no fetch until reconciled (the connection is
                // made again and the question asked again).
                guard let answer = try OffsetForLeaderEpochResponse.decode(&reader, version: 3).topics.first?.partitions.first else {
                    throw ReconcileError(partition: "\(log.topicName)/\(log.index)", reason: "no answer for the partition")
                }
                guard answer.errorCode == 0 else {
                    throw ReconcileError(partition: "\(log.topicName)/\(log.index)", reason: "the leader refused OffsetForLeaderEpoch with error \(answer.errorCode)")
                }
                // The leader never saw this epoch (it answers its newest
                // older one): what this log holds past that older epoch's own
                // end here is of epochs the leader lacks, even where the
                // leader's log goes further (KIP-279).
                var end = answer.endOffset
                if answer.leaderEpoch >= 0, answer.leaderEpoch < epoch, let own = log.endOffset(forLeaderEpoch: answer.leaderEpoch) {
                    end = min(end, own.endOffset)
                }
                guard end >= 0, end < log.logEndOffset else { break }
                let before = log.logEndOffset
                _ = try log.truncate(to: end)
                try highWatermarks.handle(.truncated(logEndOffset: log.logEndOffset), for: log)
                dropped += before - log.logEndOffset
                logger.info("truncated to the leader's history", metadata: [
                    "partition": "\(log.topicName)/\(log.index)", "epoch": "\(epoch)", "leaderEpoch": "\(answer.leaderEpoch)", "offset": "\(end)"])
                // The leader's epoch for that offset is older: check again from the new end.
                if answer.leaderEpoch == epoch { break }
            }
        }
        return dropped
    }

    /// One Fetch round trip; returns the number of batches appended.
    @discardableResult
    public func fetchOnce(on connection: KafkaClientConnection, maxWaitMilliseconds: Int32 = 0) async throws -> Int {
        let plan = rests.withLock { [count = partitions.count, now = clock.now] in $0.plan(count: count, now: now) }
        let asked: [PartitionLog]
        switch plan {
        case .fetch(let positions):
            asked = positions.map { partitions[$0] }
        case .waitUntil(let moment):
            // Every partition was refused a moment ago: wait for the first to rest out.
            try await Task.sleep(for: max(moment - clock.now, .zero))
            return 0
        }
        guard !asked.isEmpty else { return 0 }
        let byTopic = Dictionary(grouping: asked, by: \.topicName)
        var request = FetchRequest(
            maxWaitMilliseconds: maxWaitMilliseconds, minBytes: 1, maxBytes: 32 << 20,
            topics: byTopic.keys.sorted().map { topic in
                .init(name: topic, partitions: byTopic[topic]!.map { .init(index: $0.index, fetchOffset: $0.logEndOffset, partitionBytesMax: partitionBytesMax) })
            })
        request.replicaID = replicaID
        var reader = try await connection.request(.fetch, version: Self.fetchVersion) { request.encode(&$0, version: Self.fetchVersion) }
        let response = try FetchResponse.decode(&reader, version: Self.fetchVersion)
        var appended = 0
        var copiedBytes = 0
        // Every batch of the answer is written first and made durable once
        // (in `fsync` mode a sync covers all of them): the log end this
        // follower reports in its next fetch is durable by then.
        var copied: [(log: PartitionLog, last: PendingAppend?, highWatermark: Int64, logStartOffset: Int64)] = []
        for topic in response.topics {
            for answer in topic.partitions {
                guard let position = partitions.firstIndex(where: { $0.topicName == topic.name && $0.index == answer.index }) else { continue }
                let log = partitions[position]
                if answer.errorCode == ErrorCode.offsetOutOfRange.rawValue && answer.logStartOffset > log.logEndOffset {
                    // The leader's retention (or a DeleteRecords) removed
                    // everything this replica still lacks: it starts over at
                    // the leader's log start, as a Kafka follower does.
                    try log.startOver(at: answer.logStartOffset)
                    logger.warning("behind the leader's log start; starting over there", metadata: [
                        "partition": "\(topic.name)/\(answer.index)", "logStartOffset": "\(answer.logStartOffset)"])
                    continue
                }
                guard answer.errorCode == 0 else {
                    // A broker that no longer leads it answers at once: the
                    // partition rests while the new leader's record is on its way.
                    logger.warning("leader refused a replica fetch", metadata: ["partition": "\(topic.name)/\(answer.index)", "error": "\(answer.errorCode)"])
                    rests.withLock { [now = clock.now] in $0.refused(position, now: now) }
                    continue
                }
                var last: PendingAppend? = nil
                for blob in answer.batches {
                    copiedBytes += blob.count
                    for batch in try RecordBatch.split(stored: blob) where batch.baseOffset >= log.logEndOffset {
                        last = try log.writeReplica(batch.bytes, fence: fences[position])
                        appended += 1
                    }
                }
                copied.append((log, last, answer.highWatermark, answer.logStartOffset))
            }
        }
        for (log, last, highWatermark, leaderStart) in copied {
            if let last { _ = try await last.durable() }
            // Every copy of this answer is durable now. Most answers move
            // nothing (a long poll woken for another partition): asked first.
            let end = log.logEndOffset
            if min(highWatermark, end) > log.highWatermark {
                try highWatermarks.handle(.leaderReported(highWatermark: highWatermark, durableLogEnd: end), for: log)
            }
            // The leader's log start (its retention, a DeleteRecords) moves
            // this replica's too, as far as this replica's high watermark.
            if leaderStart > log.logStartOffset && log.highWatermark > log.logStartOffset {
                try log.deleteRecords(before: min(leaderStart, log.highWatermark))
            }
        }
        if let bytesPerSecond, copiedBytes > 0 {
            let due = throttle.withLock { [now = clock.now] in $0.copied(copiedBytes, bytesPerSecond: bytesPerSecond, now: now) }
            try await Task.sleep(for: max(due - clock.now, .zero))
        }
        return appended
    }

    /// Per partition and answer: 8 MiB, or under a rate limit a fiftieth
    /// of a second of it (at least 64 KiB). The copy then comes as many
    /// small bursts with short rests rather than a few long ones: each
    /// answer is read, sent, written and synced at full speed, and a
    /// quarter second's worth at once (5 MB at 20 MB/s) took both cores
    /// from the producers for tens of milliseconds (Docs/benchmarks.md).
    var partitionBytesMax: Int32 {
        guard let bytesPerSecond else { return 8 << 20 }
        return Int32(clamping: min(8 << 20, max(64 << 10, bytesPerSecond / 50)))
    }
}

/// A throttled fetcher's schedule: each answer's bytes take their share of
/// time at the rate, counted from when the previous answer's share ended,
/// so the time spent fetching and writing an answer counts toward its
/// share (resting a whole share after each answer made the rate the limit
/// less the copying's own time: 17 MB/s for 20). A fetcher behind the
/// schedule, or one that sat idle, gets at most one answer's share of
/// credit: never a burst.
struct CopySchedule {
    private var due: Duration?

    /// Records `bytes` copied at `now`; returns when the next fetch may start.
    mutating func copied(_ bytes: Int, bytesPerSecond: Int64, now: Duration) -> Duration {
        let share = Duration.nanoseconds(Int64(bytes) * 1_000_000_000 / max(bytesPerSecond, 1))
        let next = max(due ?? now, now - share) + share
        due = next
        return next
    }
}

/// A follower could not learn where its log meets the leader's.
struct ReconcileError: Error, CustomStringConvertible {
    var partition: String
    var reason: String
    var description: String { "reconciling \(partition) with the leader: \(reason)" }
}
