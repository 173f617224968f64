import Coordination
import Foundation
import TestSupport
import Testing

@testable import Cluster

@Suite struct MembershipTests {
    /// Registration, the controller election and takeover, on any Coordination.
    func electionScenario(_ store: any Coordination, expire: (Int64) async throws -> Void) async throws {
        let cluster = "test-\(UUID().uuidString)"
        let one = Membership(coordination: store, cluster: cluster, brokerID: 1, address: "127.0.0.1:9001", leaseSeconds: 30)
        let two = Membership(coordination: store, cluster: cluster, brokerID: 2, address: "127.0.0.1:9002", leaseSeconds: 30)
        let leaseOne = try await one.register()
        let leaseTwo = try await two.register()
        let (brokers, revision) = try await one.liveBrokers()
        #expect(brokers == [1: "127.0.0.1:9001", 2: "127.0.0.1:9002"])

        // One id, one broker.
        let impostor = Membership(coordination: store, cluster: cluster, brokerID: 1, address: "127.0.0.1:9999")
        await #expect(throws: CoordinationError.self) { _ = try await impostor.register() }

        // First to campaign wins; the other loses while it lives.
        #expect(try await one.campaign(lease: leaseOne))
        #expect(try await two.campaign(lease: leaseTwo) == false)
        #expect(try await two.controller() == 1)

        // Broker 1's lease ends: its registration and its controller role go with it.
        var events = two.brokerEvents(fromRevision: revision + 1).makeAsyncIterator()
        try await expire(leaseOne)
        #expect(try await two.controller() == nil)
        #expect(try await two.liveBrokers().brokers == [2: "127.0.0.1:9002"])
        let seen = try await events.next()
        #expect(seen == .some(.brokerExpired(1)))
        // Broker 2 takes over.
        #expect(try await two.campaign(lease: leaseTwo))
        #expect(try await one.controller() == 2)
    }

    @Test func electionInMemory() async throws {
        let store = InMemoryCoordination()
        try await electionScenario(store) { store.expire(lease: $0) }
    }

    @Test func electionOnEtcd() async throws {
        let etcd = try EtcdProcess()
        try await etcd.waitReady()
        let store = EtcdClient(endpoints: [etcd.endpoint])
        try await electionScenario(store) { try await store.revokeLease($0) }
    }

    @Test func aRestartedBrokerWaitsOutItsOwnOldRegistration() async throws {
        let store = InMemoryCoordination()
        let before = Membership(coordination: store, cluster: "r", brokerID: 4, address: "127.0.0.1:9004", leaseSeconds: 1)
        let oldLease = try await before.register()
        // The same broker again (same address) while its old lease still lives.
        let after = Membership(coordination: store, cluster: "r", brokerID: 4, address: "127.0.0.1:9004", leaseSeconds: 1)
        let registering = Task { try await after.register() }
        try await Task.sleep(for: .milliseconds(300))
        store.expire(lease: oldLease)
        let newLease = try await registering.value
        #expect(newLease != oldLease)
        #expect(try await after.liveBrokers().brokers == [4: "127.0.0.1:9004"])
        // It does not wait for ever: a registration that never ends is reported.
        let third = Membership(coordination: store, cluster: "r", brokerID: 4, address: "127.0.0.1:9004", leaseSeconds: 1)
        await #expect(throws: CoordinationError.self) { _ = try await third.register(patience: .milliseconds(300)) }
    }

    @Test func keepAliveStopsWithAnErrorWhenTheLeaseIsGone() async throws {
        let store = InMemoryCoordination()
        let member = Membership(coordination: store, cluster: "k", brokerID: 3, address: "x:1", leaseSeconds: 1)
        let lease = try await member.register()
        let alive = Task { try await member.keepAlive(lease: lease) }
        try await Task.sleep(for: .milliseconds(50))
        store.expire(lease: lease)
        await #expect(throws: CoordinationError.leaseNotFound(lease)) { try await alive.value }
    }
}
