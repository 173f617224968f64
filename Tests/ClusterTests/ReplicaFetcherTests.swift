import Broker
import Foundation
import KafkaNIO
import KafkaWire
import LogStore
import Logging
import Synchronization
import Testing

@testable import Cluster

/// A leader broker serving Kafka on a free loopback port, over its own store.
final class LeaderNode: Sendable {
    let path = NSTemporaryDirectory() + "postduif-leader-\(UUID().uuidString)"
    let store: LogStore
    let broker: Broker
    let task: Task<Void, any Error>
    let port: Int

    init(replication: ReplicationState? = nil) async throws {
        store = try LogStore(path: path, options: LogStoreOptions(durability: .fsync))
        var configuration = BrokerConfiguration()
        configuration.port = 0
        broker = Broker(store: store, configuration: configuration, logger: Logger(label: "test-leader"), replication: replication)
        let bound = AsyncStream.makeStream(of: Int.self)
        let server = KafkaServer(broker: broker)
        task = Task { try await server.run { bound.continuation.yield($0) } }
        var ports = bound.stream.makeAsyncIterator()
        port = await ports.next() ?? 0
    }

    func stop() async {
        task.cancel()
        _ = await task.result
        store.close()
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// A follower's store in a temporary folder, removed with it.
final class FollowerStore {
    let path = NSTemporaryDirectory() + "postduif-follower-\(UUID().uuidString)"
    let store: LogStore

    init() throws {
        store = try LogStore(path: path, options: LogStoreOptions(durability: .fsync))
    }

    deinit {
        store.close()
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// The one-partition conversations topic, created in `store`.
func conversationsLog(_ store: LogStore) throws -> PartitionLog {
    try store.createTopic("conversations", configuration: TopicConfiguration(partitionCount: 1, conversationIndex: true))
    return try store.partition(topic: "conversations", index: 0)
}

/// A batch of `count` chat messages numbered from `first`, over `rooms` rooms.
func chatBatch(_ first: Int, count: Int = 5, rooms: Int = 7) -> [UInt8] {
    var builder = RecordBatchBuilder()
    for i in first..<(first + count) {
        builder.append(key: Array("room-\(i % rooms)".utf8), value: Array("message \(i)".utf8), timestamp: 1_795_000_000_000 + Int64(i))
    }
    return builder.build()
}

@Suite struct ReplicaFetcherTests {
    func waitUntil(_ condition: () throws -> Bool) async throws -> Bool {
        for _ in 0..<200 {
            if try condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return try condition()
    }

    @Test func aFollowerCopiesTheLeadersLogOverTheKafkaProtocol() async throws {
        let leader = try await LeaderNode()
        let follower = try FollowerStore()
        let leaderLog = try conversationsLog(leader.store)
        let followerLog = try conversationsLog(follower.store)
        for round in 0..<20 { _ = try await leaderLog.append(chatBatch(round * 5), leaderEpoch: 2) }
        try leaderLog.advanceHighWatermark(to: leaderLog.logEndOffset)

        let fetcher = ReplicaFetcher(replicaID: 2, leaderHost: "127.0.0.1", leaderPort: leader.port, partitions: [followerLog])
        let copying = Task { await fetcher.run(maxWaitMilliseconds: 100) }
        #expect(try await waitUntil { followerLog.logEndOffset == 100 && followerLog.highWatermark == 100 })

        // Writes while the follower is attached arrive too.
        for round in 20..<30 { _ = try await leaderLog.append(chatBatch(round * 5), leaderEpoch: 3) }
        try leaderLog.advanceHighWatermark(to: leaderLog.logEndOffset)
        #expect(try await waitUntil { followerLog.logEndOffset == 150 && followerLog.highWatermark == 150 })
        copying.cancel()
        await copying.value

        // A follower that was away catches up from where it stopped.
        for round in 30..<40 { _ = try await leaderLog.append(chatBatch(round * 5), leaderEpoch: 3) }
        try leaderLog.advanceHighWatermark(to: leaderLog.logEndOffset)
        let again = Task { await fetcher.run(maxWaitMilliseconds: 100) }
        #expect(try await waitUntil { followerLog.logEndOffset == 200 })
        again.cancel()
        await again.value

        let leaderBatches = try leaderLog.read(from: 0, bytesMax: 64 << 20).batches
        let followerBatches = try followerLog.read(from: 0, bytesMax: 64 << 20).batches
        #expect(followerBatches == leaderBatches)
        #expect(followerLog.currentLeaderEpoch == 3)
        let history = try followerLog.history(conversation: Array("room-3".utf8), limit: 100)
        #expect(history == (try leaderLog.history(conversation: Array("room-3".utf8), limit: 100)))
        #expect(try followerLog.verify().isEmpty)
        await leader.stop()
    }

    /// One fetcher copies every partition it follows on one leader, in one
    /// Fetch each time; cancelled while its fetch is parked it ends without
    /// waiting the fetch out; a fetcher made later fences an earlier one.
    @Test func oneFetcherCopiesSeveralPartitionsAndEndsAtOnceWhenCancelled() async throws {
        let leader = try await LeaderNode()
        let follower = try FollowerStore()
        try leader.store.createTopic("conversations", configuration: TopicConfiguration(partitionCount: 3, conversationIndex: true))
        try follower.store.createTopic("conversations", configuration: TopicConfiguration(partitionCount: 3, conversationIndex: true))
        let leaderLogs = try (0..<3).map { try leader.store.partition(topic: "conversations", index: $0) }
        let followerLogs = try (0..<3).map { try follower.store.partition(topic: "conversations", index: $0) }
        for (index, log) in leaderLogs.enumerated() {
            for round in 0..<(index + 2) { _ = try await log.append(chatBatch(round * 5), leaderEpoch: 1) }
            try log.advanceHighWatermark(to: log.logEndOffset)
        }
        // It follows partitions 0 and 2 there; 1 is someone else's business.
        let fetcher = ReplicaFetcher(replicaID: 2, leaderHost: "127.0.0.1", leaderPort: leader.port, partitions: [followerLogs[0], followerLogs[2]])
        // Long enough that a test waiting for the parked fetch would show it.
        let copying = Task { await fetcher.run(maxWaitMilliseconds: 25_000) }
        #expect(try await waitUntil { followerLogs[0].logEndOffset == 10 && followerLogs[2].logEndOffset == 20 })
        #expect(followerLogs[1].logEndOffset == 0)
        // Produced through the broker (which wakes parked fetches), both
        // partitions' new batches arrive through the same long poll.
        let producer = try await KafkaClientConnection.connect(host: "127.0.0.1", port: leader.port)
        let request = ProduceRequest(acks: 1, timeoutMilliseconds: 10_000, topics: [.init(topic: "conversations", partitions: [
            .init(index: 0, batch: chatBatch(100)), .init(index: 2, batch: chatBatch(200)),
        ])])
        var reader = try await producer.request(.produce, version: 8) { request.encode(&$0, version: 8) }
        #expect(try ProduceResponse.decode(&reader, version: 8).topics[0].partitions.allSatisfy { $0.errorCode == 0 })
        await producer.close()
        #expect(try await waitUntil { followerLogs[0].logEndOffset == 15 && followerLogs[2].logEndOffset == 25 })

        // Parked now (nothing new): cancelling ends it long before the 25 s wait.
        try await Task.sleep(for: .milliseconds(200))
        let cancelled = ContinuousClock.now
        copying.cancel()
        await copying.value
        #expect(ContinuousClock.now - cancelled < .seconds(10))

        // A fetcher made later fences the earlier one's copies of the same partitions.
        let replaced = ReplicaFetcher(replicaID: 2, leaderHost: "127.0.0.1", leaderPort: leader.port, partitions: [followerLogs[0]])
        let connection = try await KafkaClientConnection.connect(host: "127.0.0.1", port: leader.port)
        _ = try await leaderLogs[0].append(chatBatch(300), leaderEpoch: 1)
        await #expect(throws: LogStoreError.self) { try await fetcher.fetchOnce(on: connection) }
        #expect(followerLogs[0].logEndOffset == 15)
        #expect(try await replaced.fetchOnce(on: connection) == 1)
        #expect(followerLogs[0].logEndOffset == 20)
        await connection.close()
        await leader.stop()
    }

    /// A partition the leader refuses rests out of the fetches for a while
    /// instead of making every Fetch return at once (a spin, or a pause that
    /// held the other partitions back): the others keep long-polling.
    @Test func aRefusedPartitionRestsWhileTheOthersLongPoll() async throws {
        let leader = try await LeaderNode()
        let follower = try FollowerStore()
        _ = try conversationsLog(leader.store)  // the leader has partition 0 only
        try follower.store.createTopic("conversations", configuration: TopicConfiguration(partitionCount: 2, conversationIndex: true))
        let followerLogs = try (0..<2).map { try follower.store.partition(topic: "conversations", index: $0) }
        let refusals = Counter()
        var logger = Logger(label: "test-replica") { _ in CountingLogHandler(counter: refusals, counted: "leader refused a replica fetch") }
        logger.logLevel = .info
        let fetcher = ReplicaFetcher(replicaID: 2, leaderHost: "127.0.0.1", leaderPort: leader.port, partitions: followerLogs, logger: logger)
        let copying = Task { await fetcher.run(maxWaitMilliseconds: 25_000) }
        try await Task.sleep(for: .milliseconds(300))
        let producer = try await KafkaClientConnection.connect(host: "127.0.0.1", port: leader.port)
        let request = ProduceRequest(acks: 1, timeoutMilliseconds: 10_000, topics: [.init(topic: "conversations", partitions: [.init(index: 0, batch: chatBatch(0))])])
        var reader = try await producer.request(.produce, version: 8) { request.encode(&$0, version: 8) }
        #expect(try ProduceResponse.decode(&reader, version: 8).topics[0].partitions[0].errorCode == 0)
        await producer.close()
        #expect(try await waitUntil { followerLogs[0].logEndOffset == 5 })
        try await Task.sleep(for: .milliseconds(1200))
        // Refused at the first fetch and once after the produce woke the
        // long poll; a fetcher pausing 100 ms per refusal logs one per pause.
        #expect(refusals.value.load(ordering: .relaxed) <= 3)
        #expect(followerLogs[1].logEndOffset == 0)
        copying.cancel()
        await copying.value
        await leader.stop()
    }

    @Test func aReplicaFetchReadsPastTheHighWatermarkAndAConsumerDoesNot() async throws {
        let leader = try await LeaderNode()
        let leaderLog = try conversationsLog(leader.store)
        _ = try await leaderLog.append(chatBatch(0), leaderEpoch: 0)
        try leaderLog.advanceHighWatermark(to: 5)
        _ = try await leaderLog.append(chatBatch(5), leaderEpoch: 0)  // written, not committed
        let connection = try await KafkaClientConnection.connect(host: "127.0.0.1", port: leader.port)
        func fetch(replicaID: Int32) async throws -> (highWatermark: Int64, lastOffset: Int64?) {
            var request = FetchRequest(maxWaitMilliseconds: 0, minBytes: 0, topics: [.init(name: "conversations", partitions: [.init(index: 0, fetchOffset: 0, partitionBytesMax: 1 << 20)])])
            request.replicaID = replicaID
            var reader = try await connection.request(.fetch, version: 11) { request.encode(&$0, version: 11) }
            let partition = try FetchResponse.decode(&reader, version: 11).topics[0].partitions[0]
            #expect(partition.errorCode == 0)
            let batches = try partition.batches.flatMap { try RecordBatch.split(stored: $0) }
            return (partition.highWatermark, batches.last?.lastOffset)
        }
        let consumer = try await fetch(replicaID: -1)
        #expect(consumer.highWatermark == 5 && consumer.lastOffset == 4)
        let replica = try await fetch(replicaID: 2)
        #expect(replica.highWatermark == 5 && replica.lastOffset == 9)
        await connection.close()
        await leader.stop()
    }
}

/// acks=all on a leader with a follower: answered once the follower copied
/// the batch (the high watermark passed it), refused with the right errors
/// when the follower is gone.
@Suite struct AcksAllTests {
    func produce(_ connection: KafkaClientConnection, value: String, timeoutMilliseconds: Int32 = 10_000) async throws -> ProduceResponse.PartitionResponse {
        var builder = RecordBatchBuilder()
        builder.append(key: Array("room-1".utf8), value: Array(value.utf8), timestamp: 1_795_000_000_000)
        let request = ProduceRequest(acks: -1, timeoutMilliseconds: timeoutMilliseconds, topics: [.init(topic: "conversations", partitions: [.init(index: 0, batch: builder.build())])])
        var reader = try await connection.request(.produce, version: 8) { request.encode(&$0, version: 8) }
        return try ProduceResponse.decode(&reader, version: 8).topics[0].partitions[0]
    }

    @Test func acksAllWaitsForTheFollowerAndFailsClearlyWithoutIt() async throws {
        let replication = ReplicationState(minInsyncReplicas: 2)
        let leader = try await LeaderNode(replication: replication)
        let follower = try FollowerStore()
        let leaderLog = try conversationsLog(leader.store)
        let followerLog = try conversationsLog(follower.store)
        let id = PartitionID(topic: "conversations", index: 0)
        replication.lead(id, replicas: [1, 2], isr: [1, 2], leaderID: 1, log: leaderLog)

        let fetcher = ReplicaFetcher(replicaID: 2, leaderHost: "127.0.0.1", leaderPort: leader.port, partitions: [followerLog])
        let copying = Task { await fetcher.run(maxWaitMilliseconds: 200) }
        let connection = try await KafkaClientConnection.connect(host: "127.0.0.1", port: leader.port)
        for i in 0..<20 {
            let answer = try await produce(connection, value: "m\(i)")
            #expect(answer.errorCode == 0 && answer.baseOffset == Int64(i))
            // Acknowledged means copied: the follower holds it already.
            #expect(followerLog.logEndOffset >= Int64(i + 1))
        }
        #expect(leaderLog.highWatermark == 20)
        copying.cancel()
        await copying.value

        // The follower stopped but is still in the ISR: acks=all times out rather than acknowledging.
        let stalled = try await produce(connection, value: "unreplicated", timeoutMilliseconds: 500)
        #expect(stalled.errorCode == ErrorCode.requestTimedOut.rawValue)
        #expect(leaderLog.highWatermark == 20)
        // Once the ISR is down to the leader alone, min.insync.replicas=2 refuses before writing.
        try replication.highWatermarks.handle(.isrChanged([1], revision: 1), for: leaderLog)
        let end = leaderLog.logEndOffset
        let refused = try await produce(connection, value: "refused")
        #expect(refused.errorCode == ErrorCode.notEnoughReplicas.rawValue)
        #expect(leaderLog.logEndOffset == end)
        await connection.close()
        await leader.stop()
    }
}

@Suite struct ReconcileTests {
    @Test func aReturningFollowerDropsWhatTheLeaderNeverHadThenCatchesUp() async throws {
        let leader = try await LeaderNode()
        let follower = try FollowerStore()
        let leaderLog = try conversationsLog(leader.store)
        let followerLog = try conversationsLog(follower.store)

        // Epoch 0: both hold offsets 0..<10.
        _ = try await leaderLog.append(chatBatch(0, rooms: 3), leaderEpoch: 0)
        _ = try await leaderLog.append(chatBatch(5, rooms: 3), leaderEpoch: 0)
        for stored in try leaderLog.read(from: 0, bytesMax: 1 << 20).batches { _ = try await followerLog.appendReplica(stored) }
        // Epoch 1: the follower led briefly and wrote 3 records nobody else has.
        _ = try await followerLog.append(chatBatch(100, count: 3, rooms: 3), leaderEpoch: 1)
        // Epoch 2: the leader (elected without it) wrote its own.
        _ = try await leaderLog.append(chatBatch(10, rooms: 3), leaderEpoch: 2)
        _ = try await leaderLog.append(chatBatch(15, rooms: 3), leaderEpoch: 2)
        try leaderLog.advanceHighWatermark(to: leaderLog.logEndOffset)
        #expect(followerLog.logEndOffset == 13)

        let fetcher = ReplicaFetcher(replicaID: 2, leaderHost: "127.0.0.1", leaderPort: leader.port, partitions: [followerLog])
        let connection = try await KafkaClientConnection.connect(host: "127.0.0.1", port: leader.port)
        let dropped = try await fetcher.reconcile(on: connection)
        #expect(dropped == 3)
        #expect(followerLog.logEndOffset == 10)
        while try await fetcher.fetchOnce(on: connection) > 0 {}
        #expect(try followerLog.read(from: 0, bytesMax: 1 << 20).batches == leaderLog.read(from: 0, bytesMax: 1 << 20).batches)
        // The divergent messages left the conversation index too.
        let history = try followerLog.history(conversation: Array("room-1".utf8), limit: 100)
        #expect(history == (try leaderLog.history(conversation: Array("room-1".utf8), limit: 100)))
        #expect(try followerLog.verify().isEmpty)
        // Reconciling again changes nothing.
        #expect(try await fetcher.reconcile(on: connection) == 0)
        await connection.close()
        await leader.stop()
    }
}

@Suite struct DivergenceTests {
    @Test func aFollowerWhoseNewestEpochTheLeaderNeverSawDropsItEvenWhereTheLeadersLogIsLonger() async throws {
        let leader = try await LeaderNode()
        let follower = try FollowerStore()
        let leaderLog = try conversationsLog(leader.store)
        let followerLog = try conversationsLog(follower.store)
        // Epoch 0: the leader copied 15 records, the follower 10.
        for first in [0, 5, 10] { _ = try await leaderLog.append(chatBatch(first, rooms: 3), leaderEpoch: 0) }
        for stored in try leaderLog.read(from: 0, bytesMax: 1 << 20, maxOffset: 10).batches { _ = try await followerLog.appendReplica(stored) }
        // Epoch 1: the follower led briefly and wrote 3 records nobody copied.
        _ = try await followerLog.append(chatBatch(100, count: 3, rooms: 3), leaderEpoch: 1)
        #expect(followerLog.logEndOffset == 13)
        // The leader (elected at epoch 2, nothing appended yet) answers for
        // epoch 1 with its newest older one, epoch 0, ending at its log end
        // (15): past the follower's end, yet offsets 10..<13 differ.
        let fetcher = ReplicaFetcher(replicaID: 2, leaderHost: "127.0.0.1", leaderPort: leader.port, partitions: [followerLog])
        let connection = try await KafkaClientConnection.connect(host: "127.0.0.1", port: leader.port)
        #expect(try await fetcher.reconcile(on: connection) == 3)
        #expect(followerLog.logEndOffset == 10)
        while try await fetcher.fetchOnce(on: connection) > 0 {}
        #expect(try followerLog.read(from: 0, bytesMax: 1 << 20).batches == leaderLog.read(from: 0, bytesMax: 1 << 20).batches)
        await connection.close()
        await leader.stop()
    }

    @Test func aReplicaFetchPastTheLeadersLogEndDoesNotCountForTheHighWatermark() async throws {
        let replication = ReplicationState(minInsyncReplicas: 1)
        let leader = try await LeaderNode(replication: replication)
        let leaderLog = try conversationsLog(leader.store)
        let id = PartitionID(topic: "conversations", index: 0)
        replication.lead(id, replicas: [1, 2], isr: [1, 2], leaderID: 1, log: leaderLog)
        let connection = try await KafkaClientConnection.connect(host: "127.0.0.1", port: leader.port)
        // Follower 2's log ran ahead in an epoch this leader never saw: it
        // asks for offset 8 of a log that ends at 0, and is refused.
        var request = FetchRequest(maxWaitMilliseconds: 0, minBytes: 1, maxBytes: 1 << 20,
                                   topics: [.init(name: "conversations", partitions: [.init(index: 0, fetchOffset: 8, partitionBytesMax: 1 << 20)])])
        request.replicaID = 2
        var reader = try await connection.request(.fetch, version: 11) { request.encode(&$0, version: 11) }
        #expect(try FetchResponse.decode(&reader, version: 11).topics[0].partitions[0].errorCode == ErrorCode.offsetOutOfRange.rawValue)
        #expect(replication.tracker(id)?.logEnd(of: 2) == nil)
        // The leader's log grows past 8: nothing of it is committed, since
        // follower 2 never showed it holds any of it.
        var builder = RecordBatchBuilder()
        for i in 0..<10 { builder.append(key: Array("room-1".utf8), value: Array("m\(i)".utf8), timestamp: 1_795_000_000_000) }
        let produce = ProduceRequest(acks: -1, timeoutMilliseconds: 300, topics: [.init(topic: "conversations", partitions: [.init(index: 0, batch: builder.build())])])
        reader = try await connection.request(.produce, version: 8) { produce.encode(&$0, version: 8) }
        #expect(try ProduceResponse.decode(&reader, version: 8).topics[0].partitions[0].errorCode == ErrorCode.requestTimedOut.rawValue)
        #expect(leaderLog.highWatermark == 0)
        await connection.close()
        await leader.stop()
    }
}

/// A broker whose node stops (a lost lease) cancels its Kafka listener
/// while clients may be reconnecting. Connections accepted but not yet
/// handed to the accept loop must still be served and closed: SwiftNIO
/// traps when such a connection is released unserved, which took a whole
/// broker down in the paused-leader cluster test.
@Suite struct ListenerStopTests {
    @Test func aListenerCancelledWhileConnectionsArriveStopsWithoutTrapping() async throws {
        for _ in 0..<5 {
            let leader = try await LeaderNode()
            // A burst of connections, then the stop at once.
            let connecting = Task {
                await withTaskGroup(of: KafkaClientConnection?.self) { group in
                    for _ in 0..<64 {
                        group.addTask { try? await KafkaClientConnection.connect(host: "127.0.0.1", port: leader.port) }
                    }
                    var connections: [KafkaClientConnection] = []
                    for await connection in group { if let connection { connections.append(connection) } }
                    return connections
                }
            }
            try await Task.sleep(for: .milliseconds(2))
            await leader.stop()
            for connection in await connecting.value { await connection.close() }
        }
    }
}

final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

/// Counts the log messages with one text, for tests of what a component logs.
struct CountingLogHandler: LogHandler {
    let counter: Counter
    let counted: String
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        if event.message.description == counted { counter.value.add(1, ordering: .relaxed) }
    }
}

/// The throttle's schedule: a rate held to, copying time included, and no
/// burst after a pause.
@Suite struct CopyScheduleTests {
    @Test func theCopyingTimeCountsTowardEachAnswersShare() {
        var schedule = CopySchedule()
        // 400,000 bytes at 20 MB/s is a 20 ms share.
        #expect(schedule.copied(400_000, bytesPerSecond: 20_000_000, now: .milliseconds(1_000)) == .milliseconds(1_020))
        // The next answer took 5 ms to copy after the rest: still due a share after the last due, not after now.
        #expect(schedule.copied(400_000, bytesPerSecond: 20_000_000, now: .milliseconds(1_025)) == .milliseconds(1_040))
        // A hundred answers at this pace take two seconds: the rate is the limit.
        var now = Duration.milliseconds(1_040)
        for _ in 0..<100 { now = schedule.copied(400_000, bytesPerSecond: 20_000_000, now: now + .milliseconds(3)) }
        #expect(now == .milliseconds(3_040))
    }

    @Test func aPauseEarnsAtMostOneShareOfCredit() {
        var schedule = CopySchedule()
        _ = schedule.copied(400_000, bytesPerSecond: 20_000_000, now: .seconds(1))
        // Ten idle seconds later an answer copied in 30 ms (longer than its share) goes on at once ...
        #expect(schedule.copied(400_000, bytesPerSecond: 20_000_000, now: .milliseconds(11_030)) == .milliseconds(11_030))
        // ... and the next one rests its whole share: the idle time bought no burst.
        #expect(schedule.copied(400_000, bytesPerSecond: 20_000_000, now: .milliseconds(11_031)) == .milliseconds(11_050))
    }
}
