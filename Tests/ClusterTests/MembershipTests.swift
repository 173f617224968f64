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
        var events = store.watch(prefix: two.brokersPrefix, fromRevision: revision + 1).makeAsyncIterator()
        try await expire(leaseOne)
        #expect(try await two.controller() == nil)
        #expect(try await two.liveBrokers().brokers == [2: "127.0.0.1:9002"])
        let seen = try await events.next().flatMap(two.brokerEvent)
        #expect(seen == .brokerExpired(1))
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

    /// Found by the fault campaign: one failed renewal (etcd electing a
    /// leader) stopped the broker. Renewals that fail for less than three
    /// lease times are retried; only etcd's "gone" or a long silence ends it.
    @Test func keepAliveRidesOutRenewalsThatFailForAWhile() async throws {
        let store = FlakyRenewals(failures: 5)
        let member = Membership(coordination: store, cluster: "f", brokerID: 2, address: "x:2", leaseSeconds: 1)
        let lease = try await member.register()
        let alive = Task { try await member.keepAlive(lease: lease) }
        // Five failures a hundred milliseconds apart, then renewals succeed.
        while store.renewals < 8 { try await Task.sleep(for: .milliseconds(20)) }
        alive.cancel()
        _ = await alive.result
        #expect(store.renewals >= 8)
        // A silence longer than three lease times does end it.
        let silent = FlakyRenewals(failures: .max)
        let cutOff = Membership(coordination: silent, cluster: "f", brokerID: 3, address: "x:3", leaseSeconds: 1)
        let cutLease = try await cutOff.register()
        await #expect(throws: CoordinationError.self) { try await cutOff.keepAlive(lease: cutLease) }
    }

    /// Found by the fault campaign: an etcd leader resumed after a pause
    /// answers "expired" for leases the new leader extended. A renewal
    /// answered so by one endpoint asks the others: here the first endpoint
    /// is another etcd that never saw the lease, the second holds it.
    @Test func aRenewalAnsweredExpiredByOneMemberAsksTheNext() async throws {
        let holder = try EtcdProcess()
        let stranger = try EtcdProcess()
        try await holder.waitReady()
        try await stranger.waitReady()
        let lease = try await EtcdClient(endpoints: [holder.endpoint]).grantLease(ttlSeconds: 30)
        try await EtcdClient(endpoints: [stranger.endpoint, holder.endpoint]).keepAlive(lease: lease)
        await #expect(throws: CoordinationError.leaseNotFound(lease)) {
            try await EtcdClient(endpoints: [stranger.endpoint]).keepAlive(lease: lease)
        }
    }
}

/// An in-memory store whose lease renewals fail `failures` times first.
final class FlakyRenewals: Coordination, @unchecked Sendable {
    let inner = InMemoryCoordination()
    private let lock = NSLock()
    private var failuresLeft: Int
    private(set) var renewals = 0

    init(failures: Int) { failuresLeft = failures }

    func keepAlive(lease: Int64) async throws {
        let fail = lock.withLock { () -> Bool in
            renewals += 1
            guard failuresLeft > 0 else { return false }
            failuresLeft -= 1
            return true
        }
        if fail { throw CoordinationError.unavailable("etcd is electing a leader") }
        try await inner.keepAlive(lease: lease)
    }

    func get(_ key: String) async throws -> KeyValue? { try await inner.get(key) }
    func list(prefix: String) async throws -> (keyValues: [KeyValue], revision: Int64) { try await inner.list(prefix: prefix) }
    func put(_ key: String, _ value: [UInt8], lease: Int64) async throws -> Int64 { try await inner.put(key, value, lease: lease) }
    func compareAndSwap(_ key: String, expected: Int64, value: [UInt8], lease: Int64) async throws -> Int64? {
        try await inner.compareAndSwap(key, expected: expected, value: value, lease: lease)
    }
    func compareAndSwapAll(_ writes: [CompareAndSwap]) async throws -> Int64? { try await inner.compareAndSwapAll(writes) }
    func compareAndDelete(_ key: String, expected: Int64) async throws -> Bool { try await inner.compareAndDelete(key, expected: expected) }
    func grantLease(ttlSeconds: Int64) async throws -> Int64 { try await inner.grantLease(ttlSeconds: ttlSeconds) }
    func revokeLease(_ lease: Int64) async throws { try await inner.revokeLease(lease) }
    func watch(prefix: String, fromRevision: Int64) -> AsyncThrowingStream<WatchEvent, any Error> { inner.watch(prefix: prefix, fromRevision: fromRevision) }
}
