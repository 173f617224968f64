import ChatWire
import Core
import Foundation
import KafkaWire
import LogStore
import Logging
import Synchronization
import TestSupport
import Testing

@testable import Broker
@testable import Fanout

@Suite("Fan-out routing and queues")
struct FanOutRouterTests {
    func delivery(_ offset: Int64, partition: Int32 = 0, bytes: Int = 10) -> GatewayPollResponse.Delivery {
        .init(partition: partition, offset: offset, sequence: UInt64(offset + 1), timestamp: 0, key: Array("room".utf8), value: [UInt8](repeating: 1, count: bytes), headers: [])
    }

    @Test("one delivery per gateway, however many of its users are in the conversation")
    func onePerGateway() {
        var router = FanOutRouter()
        router.register("g1", replace: true, users: ["@a", "@b", "@c"], removed: [], leaseEnd: 100)
        router.register("g2", replace: true, users: ["@d"], removed: [], leaseEnd: 100)
        let targets = router.gateways(for: ["@a", "@b", "@c", "@d", "@stranger"])
        #expect(targets == ["g1", "g2"])
        #expect(Set(router.deliver(delivery(5), to: targets)) == ["g1", "g2"])
        #expect(router.drain("g1", max: 10).deliveries.map(\.offset) == [5])
        #expect(router.drain("g1", max: 10).deliveries.isEmpty)
        #expect(router.drain("g2", max: 10).deliveries.map(\.offset) == [5])
    }

    @Test("users come and go; an expired gateway loses its routes")
    func registrationAndLeases() {
        var router = FanOutRouter()
        router.register("g1", replace: true, users: ["@a", "@b"], removed: [], leaseEnd: 100)
        router.register("g1", replace: false, users: ["@c"], removed: ["@a"], leaseEnd: 200)
        #expect(router.gateways(for: ["@a"]).isEmpty)
        #expect(router.gateways(for: ["@b", "@c"]) == ["g1"])
        router.register("g1", replace: true, users: ["@z"], removed: [], leaseEnd: 200)
        #expect(router.gateways(for: ["@b", "@c"]).isEmpty)
        #expect(router.expire(now: 150).isEmpty)
        #expect(router.expire(now: 201) == ["g1"])
        #expect(router.gateways(for: ["@z"]).isEmpty)
        #expect(router.routes.isEmpty)
    }

    @Test("a full queue drops and names the gap once; memory stays bounded")
    func overflowBecomesResync() {
        var router = FanOutRouter(queueCountMax: 3, queueBytesMax: 1 << 20)
        router.register("slow", replace: true, users: ["@a"], removed: [], leaseEnd: 100)
        for offset in 0..<10 { _ = router.deliver(delivery(Int64(offset)), to: ["slow"]) }
        #expect(router.gateways["slow"]!.pending.count == 3)
        // The seven left out are counted once (the drops metric).
        #expect(router.takeDropped() == 7)
        #expect(router.takeDropped() == 0)
        // Only part drained: the gap is not reported before what precedes it is out.
        var taken = router.drain("slow", max: 2)
        #expect(taken.deliveries.map(\.offset) == [0, 1])
        #expect(taken.resync.isEmpty)
        #expect(taken.stillQueued == [0: 2])
        taken = router.drain("slow", max: 10)
        #expect(taken.deliveries.map(\.offset) == [2])
        #expect(taken.resync == [0: 3])
        // Reported once; new messages queue again.
        _ = router.deliver(delivery(10), to: ["slow"])
        taken = router.drain("slow", max: 10)
        #expect(taken.deliveries.map(\.offset) == [10])
        #expect(taken.resync.isEmpty)
    }

    @Test("the byte bound holds as well as the count")
    func byteBound() {
        var router = FanOutRouter(queueCountMax: 1000, queueBytesMax: 1000)
        router.register("g", replace: true, users: ["@a"], removed: [], leaseEnd: 100)
        for offset in 0..<20 { _ = router.deliver(delivery(Int64(offset), bytes: 200), to: ["g"]) }
        #expect(router.gateways["g"]!.queuedBytes <= 1000)
        #expect(router.gateways["g"]!.overflow[0] != nil)
    }
}

@Suite("GatewayPoll on a broker")
struct GatewayPollTests {
    @Test("a gateway the broker does not know must name all its users: changes alone are refused")
    func unknownGatewayMustReplace() async throws {
        let test = try TestBroker()
        let fanOut = FanOut(broker: test.broker, logger: Logger(label: "test"))
        for api in fanOut.extensionAPIs { test.broker.register(api) }
        func poll(replace: Bool) async throws -> GatewayPollResponse {
            let request = GatewayPollRequest(gatewayID: "g1", topic: "conversations", leaseMilliseconds: 10_000, replaceUsers: replace,
                                             users: ["@a:s"], removedUsers: [], maxWaitMilliseconds: 0, maxDeliveries: 10)
            var reader = try #require(try await test.call(key: ChatApiKey.gatewayPoll.rawValue, version: 0) { request.encode(&$0, version: 0) })
            return try GatewayPollResponse.decode(&reader, version: 0)
        }
        #expect(try await poll(replace: false).errorCode == ErrorCode.unknownMemberId.rawValue)
        #expect(try await poll(replace: true).errorCode == 0)
        #expect(try await poll(replace: false).errorCode == 0)
    }
}

/// ADR 0037: the gateway in the broker's process takes its deliveries from
/// the worker's hands, not from a poll's answer.
@Suite("Fan-out hand-over to the gateway in this process")
struct FanOutHandOverTests {
    final class Received: Sendable {
        let handOvers = Mutex<[FanOutHandOver]>([])
        var offsets: [Int64] { handOvers.withLock { $0.flatMap { $0.deliveries.map(\.offset) } } }
    }

    let roomHere = "!here:s"
    let roomElsewhere = "!elsewhere:s"

    func poll(_ test: TestBroker, _ gateway: String, users: [String], replace: Bool) async throws -> GatewayPollResponse {
        let request = GatewayPollRequest(gatewayID: gateway, topic: ChatTopicNames.conversations, leaseMilliseconds: 60_000, replaceUsers: replace,
                                         users: users, removedUsers: [], maxWaitMilliseconds: 0, maxDeliveries: 10_000)
        var reader = try #require(try await test.call(key: ChatApiKey.gatewayPoll.rawValue, version: 0) { request.encode(&$0, version: 0) })
        return try GatewayPollResponse.decode(&reader, version: 0)
    }

    func append(_ test: TestBroker, topic: String, key: [UInt8], value: [UInt8]) async -> Int64 {
        await withCheckedContinuation { (done: CheckedContinuation<Int64, Never>) in
            _ = test.broker.appendOne(topic: topic, partition: 0, key: key, value: value, headers: [], timestamp: 1) { result in
                done.resume(returning: (try? result.get()) ?? -1)
            }
        }
    }

    @Test("deliveries for the local gateway are handed over, in order, before any poll's position passes them; others still queue")
    func handOverBeforeThePositionMoves() async throws {
        let test = try TestBroker()
        try test.store.createTopic(ChatTopicNames.conversations, configuration: TopicConfiguration(partitionCount: 1))
        try test.store.createTopic(ChatTopicNames.members, configuration: TopicConfiguration(partitionCount: 1))
        let fanOut = FanOut(broker: test.broker, logger: Logger(label: "test"))
        for api in fanOut.extensionAPIs { test.broker.register(api) }
        let received = Received()
        fanOut.handOver(to: "local") { handOver in received.handOvers.withLock { $0.append(handOver) } }
        for (room, member) in [(roomHere, "@ann:s"), (roomElsewhere, "@ben:s")] {
            let change = try Array(JSONEncoder().encode(MembershipChange(member: member, membership: "join")))
            #expect(await append(test, topic: ChatTopicNames.members, key: MembershipChange.key(room: room, member: member), value: change) >= 0)
        }
        #expect(try await poll(test, "local", users: ["@ann:s"], replace: true).errorCode == 0)
        #expect(try await poll(test, "remote", users: ["@ben:s"], replace: true).errorCode == 0)
        let workers = Task { await fanOut.run() }
        defer { workers.cancel() }
        #expect(await eventually { (try? await poll(test, "local", users: [], replace: false).partitions.isEmpty) == false })

        // Messages to both rooms while the local gateway polls: every answer's
        // position must be covered by what was handed over before it.
        var here: [Int64] = []
        var elsewhere: [Int64] = []
        var queuedElsewhere: [Int64] = []
        for index in 0..<200 {
            let room = index % 3 == 0 ? roomElsewhere : roomHere
            let offset = await append(test, topic: ChatTopicNames.conversations, key: Array(room.utf8), value: Array("m\(index)".utf8))
            #expect(offset >= 0)
            if room == roomHere { here.append(offset) } else { elsewhere.append(offset) }
            let answer = try await poll(test, "local", users: [], replace: false)
            #expect(answer.deliveries.isEmpty, "nothing waits for the local gateway's poll")
            let position = try #require(answer.partitions.first).fannedOutUpTo
            let handed = Set(received.offsets)
            #expect(here.filter { $0 < position }.allSatisfy(handed.contains), "position \(position) passed a message not yet handed over")
            queuedElsewhere += try await poll(test, "remote", users: [], replace: false).deliveries.map(\.offset)
        }
        #expect(await eventually { received.offsets.count == here.count })
        #expect(received.offsets == here, "in offset order, each once, only the local users' room")
        for handOver in received.handOvers.withLock({ $0 }) {
            #expect(handOver.deliveries.allSatisfy { $0.offset >= handOver.from && $0.offset < handOver.upTo })
            #expect(handOver.workerID == received.handOvers.withLock { $0[0].workerID })
        }
        #expect(await eventually {
            queuedElsewhere += (try? await poll(test, "remote", users: [], replace: false).deliveries.map(\.offset)) ?? []
            return queuedElsewhere == elsewhere
        })

        // ADR 0038: the append's commit stepped the worker on its own
        // thread, before the append's answer; nothing was left to a task.
        let stepped = await append(test, topic: ChatTopicNames.conversations, key: Array(roomHere.utf8), value: Array("stepped".utf8))
        here.append(stepped)
        #expect(received.offsets.last == stepped, "handed over before the append was answered")

        // Stopped: the local gateway's deliveries wait for its poll again.
        fanOut.stopHandingOver(to: "local")
        let later = await append(test, topic: ChatTopicNames.conversations, key: Array(roomHere.utf8), value: Array("after".utf8))
        var polled: [Int64] = []
        #expect(await eventually {
            polled += (try? await poll(test, "local", users: [], replace: false).deliveries.map(\.offset)) ?? []
            return polled == [later]
        })
        #expect(received.offsets == here)
    }
}

@Suite("Fan-out worker turns")
struct PartitionWorkerTests {
    /// A worker of partition 0 of a real store's `conversations`, and the
    /// broker that holds the store open.
    func workerOnAStore() throws -> (TestBroker, PartitionWorker) {
        let test = try TestBroker()
        try test.store.createTopic(ChatTopicNames.conversations, configuration: TopicConfiguration(partitionCount: 1))
        let log = try #require(test.broker.committedPartition(topic: ChatTopicNames.conversations, index: 0))
        return (test, PartitionWorker(partition: 0, id: "w", log: log, position: 0, sequences: RecencyCache(countMax: 10)))
    }

    @Test("a step asked for while another runs is not lost: the running one steps again, and nobody waits")
    func stepAskedForWhileBusy() throws {
        let (test, worker) = try workerOnAStore()
        defer { withExtendedLifetime(test) {} }
        var steps = 0
        let behind = worker.turn { progress in
            steps += 1
            progress.position += 1
            // Asked again while this step runs (as a commit on another
            // thread would): returns at once, without a step of its own.
            if steps == 1 {
                #expect(!worker.turn { _ in Issue.record("a second thread stepped a busy worker") })
            }
        }
        #expect(steps == 2)
        #expect(!behind && !worker.isBehind)
        // The progress of both steps was kept, and the worker is free again.
        worker.turn { progress in
            #expect(progress.position == 2)
            steps += 1
        }
        #expect(steps == 3)
    }

    @Test("a thread that commits steps a worker at most a few passes, then leaves what is behind to the worker's task")
    func passesAreBounded() throws {
        let (test, worker) = try workerOnAStore()
        defer { withExtendedLifetime(test) {} }
        var passes = 0
        // Commits keep coming: every pass, another thread asks for a step.
        let behind = worker.turn { _ in
            passes += 1
            worker.turn { _ in Issue.record("a second thread stepped a busy worker") }
        }
        #expect(passes == PartitionWorker.passesMax)
        #expect(behind, "the caller is told a step is still due")
        #expect(worker.isBehind)
        // The worker's task takes it.
        #expect(!worker.turn { _ in passes += 1 })
        #expect(passes == PartitionWorker.passesMax + 1)
        #expect(!worker.isBehind)
    }
}
