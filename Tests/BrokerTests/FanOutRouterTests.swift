import ChatWire
import KafkaWire
import Logging
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
