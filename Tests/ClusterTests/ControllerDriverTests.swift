import Coordination
import Foundation
import TestSupport
import Testing

@testable import Cluster

@Suite struct ControllerDriverTests {
    /// Three brokers register, broker 1 controls, a topic of replication
    /// factor 3 is created, broker 2 (leader of partition 1) dies: its
    /// partition moves to the next in-sync replica with a new epoch, and
    /// every record in etcd says so. Then broker 2 returns.
    func failoverScenario(_ store: any Coordination, expire: (Int64) async throws -> Void) async throws {
        let cluster = "driver-\(UUID().uuidString)"
        var leases: [Int32: Int64] = [:]
        var members: [Int32: Membership] = [:]
        for id: Int32 in [1, 2, 3] {
            // Leases end when the scenario revokes them, not by a slow machine.
            members[id] = Membership(coordination: store, cluster: cluster, brokerID: id, address: "127.0.0.1:\(9000 + id)", leaseSeconds: 30)
            leases[id] = try await members[id]!.register()
        }
        #expect(try await members[1]!.campaign(lease: leases[1]!))
        let driver = ControllerDriver(membership: members[1]!)
        let revision = try await driver.load()
        let assignment = try await driver.createTopic("chat", partitionCount: 3, replicationFactor: 3)
        #expect(assignment.replicas == [[1, 2, 3], [2, 3, 1], [3, 1, 2]])
        let p1 = PartitionID(topic: "chat", index: 1)
        #expect(try await driver.record(p1) == PartitionState(leader: 2, leaderEpoch: 0, isr: [2, 3, 1]))
        await #expect(throws: CoordinationError.self) { _ = try await driver.createTopic("chat", partitionCount: 1, replicationFactor: 1) }

        let following = Task { try await driver.follow(fromRevision: revision + 1) }
        try await expire(leases[2]!)
        var moved: PartitionState?
        for _ in 0..<100 {
            moved = try await driver.record(p1)
            if moved?.leader != 2 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(moved == PartitionState(leader: 3, leaderEpoch: 1, isr: [3, 1], version: 1))
        // The other partitions only lost 2 from their ISR; their leaders and
        // epochs stay. The driver writes them one after another, after p1.
        let p0ID = PartitionID(topic: "chat", index: 0)
        let p2ID = PartitionID(topic: "chat", index: 2)
        var p0: PartitionState?
        for _ in 0..<200 {
            p0 = try await driver.record(p0ID)
            let p2 = try await driver.record(p2ID)
            if p0?.isr.contains(2) == false && p2?.isr.contains(2) == false { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(p0?.leader == 1 && p0?.leaderEpoch == 0 && p0?.isr == [1, 3])

        // A second controller loading the same state agrees and writes nothing
        // (once the driver has taken in its own last write).
        var agreed = false
        for _ in 0..<200 where !agreed {
            let reader = ControllerDriver(membership: members[3]!)
            try await reader.load()
            agreed = await reader.state.partitions == driver.state.partitions
            if !agreed { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(agreed)

        // Broker 2 comes back: it registers again (rejoining the ISR is its leader's job, by fetching).
        leases[2] = try await members[2]!.register()
        for _ in 0..<200 where await !driver.state.liveBrokers.contains(2) {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(await driver.state.liveBrokers == [1, 2, 3])
        following.cancel()
        if await !driver.state.liveBrokers.contains(2), case .failure(let error) = await following.result {
            // Say why the driver stopped following.
            Issue.record("following broker events ended: \(error)")
        }
    }

    @Test func failoverInMemory() async throws {
        let store = InMemoryCoordination()
        try await failoverScenario(store) { store.expire(lease: $0) }
    }

    @Test func failoverOnEtcd() async throws {
        let etcd = try EtcdProcess()
        try await etcd.waitReady()
        let store = EtcdClient(endpoints: [etcd.endpoint])
        try await failoverScenario(store) { try await store.revokeLease($0) }
    }
}
