import Foundation
import KafkaNIO
import KafkaWire
import LogStore
import Synchronization
import Testing

@testable import Broker
@testable import PostduifClient

/// The Swift client library against a real broker (its request handlers,
/// in-process): admin calls, the batching producer, and a group of two
/// consumers through a rebalance, every record read once.
@Suite struct PostduifClientTests {
    static let start = ContinuousClock.now
    static let monotonic: @Sendable () -> Int64 = { Int64((ContinuousClock.now - start) / .milliseconds(1)) }
    static let wall: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }

    func client(_ test: TestBroker) -> KafkaClient {
        KafkaClient(ClientConfiguration(bootstrap: ["127.0.0.1:9999"], local: test.broker.localClient(name: "library-test")))
    }

    @Test func adminProducerAndAGroupOfTwoThroughARebalance() async throws {
        let test = try TestBroker()
        let client = client(test)
        let admin = Admin(client: client)
        try await admin.createTopic("library", partitions: 4)
        do {
            try await admin.createTopic("library", partitions: 4)
            Issue.record("a second create of one topic succeeded")
        } catch let error as ClientError {
            #expect(error.errorCode == .topicAlreadyExists)
        }
        let described = try #require(try await admin.topics(["library"]).first)
        #expect(described.partitions.map(\.index) == [0, 1, 2, 3])
        try await admin.alterTopicConfigs("library", set: ["retention.ms": "86400000"])
        let configs = try await admin.topicConfigs("library")
        #expect(configs["retention.ms"]?.value == "86400000" && configs["retention.ms"]?.source == .topic)
        #expect(configs["cleanup.policy"]?.value == "delete")

        // Records sent at once share batches; each gets its own offset.
        let producer = Producer(client: client, clock: Self.wall)
        let records = (0..<100).map { ProducerRecord(topic: "library", partition: Int32($0 % 4), key: Array("k\($0)".utf8), value: Array("\($0)".utf8)) }
        let results = await producer.send(records)
        let written = try results.map { try $0.get() }
        for partition in Int32(0)..<4 {
            #expect(written.filter { $0.partition == partition }.map(\.offset).sorted() == Array(0..<25))
        }

        // Without idempotence: one batch per partition in one request.
        let plain = Producer(client: client, idempotent: false, clock: Self.wall)
        let together = try await plain.send((0..<8).map { ProducerRecord(topic: "library", partition: Int32($0 % 2) + 2, value: Array("x\($0)".utf8)) }).map { try $0.get() }
        #expect(together.map(\.offset) == [25, 25, 26, 26, 27, 27, 28, 28])
        let unknown = await plain.send([ProducerRecord(topic: "library", partition: 9, value: [1])])
        #expect((try? unknown[0].get()) == nil)

        let events = Mutex<[String]>([])
        var settings = GroupConsumer.Configuration(group: "library-group")
        settings.offsetReset = .earliest
        settings.heartbeatIntervalMilliseconds = 100
        let first = GroupConsumer(client: client, configuration: settings, clock: Self.monotonic) { change in
            events.withLock { $0.append(change == .revoked([]) ? "revoked none" : "\(change)") }
        }
        let second = GroupConsumer(client: client, configuration: settings, clock: Self.monotonic)
        await first.subscribe(["library"])
        var read: [String] = []
        // The first member alone takes all four partitions and reads half
        // of them, committing what it read.
        while await first.assignment.count < 4 {
            read += try await first.poll(maxWaitMilliseconds: 100).map { String(decoding: $0.value ?? [], as: UTF8.self) }
        }
        try await first.commit()
        await second.subscribe(["library"])
        // Each member polls in its own loop, as separate services would,
        // until the group settles at two partitions each and every record
        // is read.
        let shared = ReadValues(read)
        let deadline = ContinuousClock.now + .seconds(30)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for member in [first, second] {
                group.addTask {
                    while ContinuousClock.now < deadline {
                        let firstHas = await first.assignment.count
                        let secondHas = await second.assignment.count
                        if firstHas == 2 && secondHas == 2 && shared.values.withLock({ $0.count }) >= 108 { return }
                        let got = try await member.poll(maxWaitMilliseconds: 100)
                        shared.values.withLock { $0 += got.map { String(decoding: $0.value ?? [], as: UTF8.self) } }
                    }
                }
            }
            try await group.waitForAll()
        }
        read = shared.values.withLock { $0 }
        let firstPartitions = await first.assignment
        let secondPartitions = await second.assignment
        #expect(firstPartitions.count == 2 && secondPartitions.count == 2)
        #expect(Set(firstPartitions).isDisjoint(with: secondPartitions))
        #expect(read.sorted() == ((0..<100).map(String.init) + (0..<8).map { "x\($0)" }).sorted(), "every record once: \(read.count) read")
        #expect(events.withLock { $0 }.contains { $0.hasPrefix("revoked") }, "the first member's partitions were revoked: \(events.withLock { $0 })")

        // Committed offsets are what a member leaving hands over.
        try await first.commit()
        try await second.commit()
        let committed = try await first.committedOffsets((0..<4).map { TopicPartition("library", $0) })
        #expect(committed.values.sorted() == [25, 25, 29, 29])
        await first.close()
        await second.close()
    }

    /// A stand-in broker whose topic "t" has two partitions, the second
    /// without a leader (as during an election).
    final class ElectingBroker: KafkaLocalBroker {
        func answer(_ frame: [UInt8]) async throws -> [UInt8]? {
            var reader = ByteReader(frame)
            let header = try RequestHeader.decode(&reader)
            var writer = ByteWriter()
            writer.writeInt32(0)  // size, patched
            writer.writeInt32(header.correlationID)
            guard header.apiKey == ApiKey.metadata.rawValue else { throw WireError.malformed("only Metadata here") }
            if header.apiVersion >= ApiKey.metadata.firstFlexibleVersion { writer.writeEmptyTaggedFields() }
            MetadataResponse(brokers: [.init(nodeID: 1, host: "127.0.0.1", port: 9999)], clusterID: "c", controllerID: 1, topics: [
                .init(errorCode: 0, name: "t", partitions: [
                    .init(index: 0, leaderID: 1, leaderEpoch: 3, replicaNodes: [1, 2], isrNodes: [1]),
                    .init(errorCode: ErrorCode.leaderNotAvailable.rawValue, index: 1, leaderID: -1, leaderEpoch: 3, replicaNodes: [2, 3], isrNodes: []),
                ]),
            ]).encode(&writer, version: header.apiVersion)
            writer.patchUInt32(UInt32(writer.bytes.count - 4), at: 0)
            return writer.bytes
        }

        func isSelf(_ address: String) -> Bool { true }
    }

    /// The fault campaign (seed 20261206, round 151) found a chat message in
    /// the wrong partition: the client counted only the partitions that had
    /// a leader, so during an election a key hashed over one partition
    /// instead of two. The count is the topic's, leaders or not.
    @Test func aPartitionWithoutALeaderStillCountsForWhereAKeyGoes() async throws {
        let client = KafkaClient(ClientConfiguration(bootstrap: ["127.0.0.1:9999"], local: ElectingBroker(), retries: 0))
        // Once Metadata is remembered (any call asks it), as in a running client.
        try await client.metadata(["t"])
        #expect(try await client.partitionCount("t") == 2)
        // A layout without the leaderless partition is not handed out as the topic's.
        await #expect(throws: ClientError.self) { _ = try await client.leaders(of: "t", attempts: 2) }
        await #expect(throws: ClientError.self) { _ = try await client.leader(TopicPartition("t", 1)) }
        #expect(try await client.leader(TopicPartition("t", 0)) == "127.0.0.1:9999")
    }

    /// acks=0 (the load tool's fire-and-forget runs): no answer is waited
    /// for, offsets are -1 as Kafka's clients give them, and the records
    /// are written all the same; each request's record count is reported.
    @Test func withoutAcknowledgementsRecordsAreWrittenAndRequestsCounted() async throws {
        let test = try TestBroker()
        let client = client(test)
        try await Admin(client: client).createTopic("unacknowledged", partitions: 2)
        let requests = Mutex<[Int]>([])
        let producer = Producer(client: client, acks: 0, idempotent: false, clock: Self.wall, onRequest: { count in requests.withLock { $0.append(count) } })
        let written = try await producer.send((0..<10).map { ProducerRecord(topic: "unacknowledged", partition: Int32($0 % 2), value: [UInt8($0)]) }).map { try $0.get() }
        #expect(written.map(\.offset) == Array(repeating: -1, count: 10))
        // Both partitions have one leader: one request carried all ten.
        #expect(requests.withLock { $0 } == [10])
        let reader = GroupConsumer(client: client, configuration: GroupConsumer.Configuration(group: "unacknowledged-reader"), clock: Self.monotonic) { _ in }
        try await reader.assign([TopicPartition("unacknowledged", 0): 0, TopicPartition("unacknowledged", 1): 0])
        var values: [UInt8] = []
        let deadline = ContinuousClock.now + .seconds(10)
        while values.count < 10 && ContinuousClock.now < deadline {
            values += try await reader.poll(maxWaitMilliseconds: 200).compactMap { $0.value?.first }
        }
        #expect(values.sorted() == Array(0..<10))
        await reader.close()
    }
}

/// The consumer protocol's bytes and assignors, as Kafka clients write and
/// compute them (a group mixes this library's members with theirs).
@Suite struct ConsumerProtocolTests {
    @Test func rangeGivesConsecutiveRangesAndTheFirstMembersOneMore() {
        let plan = ConsumerProtocol.range(members: ["b": ["t"], "a": ["t"], "c": ["t", "u"]], partitionCounts: ["t": 7, "u": 2])
        #expect(plan["a"] == [TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2)])
        #expect(plan["b"] == [TopicPartition("t", 3), TopicPartition("t", 4)])
        #expect(Set(plan["c"] ?? []) == [TopicPartition("t", 5), TopicPartition("t", 6), TopicPartition("u", 0), TopicPartition("u", 1)])
    }

    @Test func roundRobinDealsEveryPartitionOnceToASubscriber() {
        let plan = ConsumerProtocol.roundRobin(members: ["a": ["t"], "b": ["t", "u"]], partitionCounts: ["t": 3, "u": 2])
        let all = plan.values.flatMap { $0 }
        #expect(all.count == 5 && Set(all).count == 5)
        #expect(plan["a"]?.allSatisfy { $0.topic == "t" } == true)
    }

    @Test func subscriptionsAndAssignmentsRoundTripAndLaterVersionsAreReadPast() {
        #expect(ConsumerProtocol.topics(ofSubscription: ConsumerProtocol.subscription(topics: ["b", "a"])) == ["a", "b"])
        let partitions = [TopicPartition("t", 1), TopicPartition("t", 0), TopicPartition("u", 3)]
        #expect(Set(ConsumerProtocol.partitions(ofAssignment: ConsumerProtocol.assignment(partitions))) == Set(partitions))
        // Version 1 adds owned partitions after the user data: still read.
        var bytes = ConsumerProtocol.subscription(topics: ["t"])
        bytes[1] = 1
        bytes += [0, 0, 0, 0]
        #expect(ConsumerProtocol.topics(ofSubscription: bytes) == ["t"])
        #expect(ConsumerProtocol.partitions(ofAssignment: []) == [])
    }
}

/// Values read by members looping in tasks of their own.
final class ReadValues: Sendable {
    let values: Mutex<[String]>

    init(_ start: [String]) {
        values = Mutex(start)
    }
}
