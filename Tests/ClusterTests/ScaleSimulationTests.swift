import Coordination
import Foundation
import TestSupport
import Testing

@testable import Cluster

/// Counts what the controller asks of its store: calls, writes, and the
/// largest value it sends (etcd refuses requests over 1.5 MiB).
final class CountingCoordination: Coordination, @unchecked Sendable {
    let inner = InMemoryCoordination()
    private let lock = NSLock()
    /// Records written, and the requests that wrote them (a transaction
    /// writes many records in one).
    private(set) var writes = 0
    private(set) var writeRequests = 0
    private(set) var reads = 0
    private(set) var largestValue = 0
    private(set) var bytesWritten = 0

    func reset() {
        lock.withLock { (writes, writeRequests, reads, largestValue, bytesWritten) = (0, 0, 0, 0, 0) }
    }

    private func wrote(_ value: [UInt8], newRequest: Bool = true) {
        lock.withLock {
            writes += 1
            if newRequest { writeRequests += 1 }
            bytesWritten += value.count
            largestValue = max(largestValue, value.count)
        }
    }

    private func read() { lock.withLock { reads += 1 } }

    func get(_ key: String) async throws -> KeyValue? {
        read()
        return try await inner.get(key)
    }

    func list(prefix: String) async throws -> (keyValues: [KeyValue], revision: Int64) {
        read()
        return try await inner.list(prefix: prefix)
    }

    func put(_ key: String, _ value: [UInt8], lease: Int64) async throws -> Int64 {
        wrote(value)
        return try await inner.put(key, value, lease: lease)
    }

    func compareAndSwap(_ key: String, expected: Int64, value: [UInt8], lease: Int64) async throws -> Int64? {
        wrote(value)
        return try await inner.compareAndSwap(key, expected: expected, value: value, lease: lease)
    }

    func compareAndSwapAll(_ writes: [CompareAndSwap]) async throws -> Int64? {
        for (position, write) in writes.enumerated() { wrote(write.value, newRequest: position == 0) }
        return try await inner.compareAndSwapAll(writes)
    }

    func compareAndDelete(_ key: String, expected: Int64) async throws -> Bool {
        wrote([])
        return try await inner.compareAndDelete(key, expected: expected)
    }

    func grantLease(ttlSeconds: Int64) async throws -> Int64 { try await inner.grantLease(ttlSeconds: ttlSeconds) }
    func keepAlive(lease: Int64) async throws { try await inner.keepAlive(lease: lease) }
    func revokeLease(_ lease: Int64) async throws { try await inner.revokeLease(lease) }
    func watch(prefix: String, fromRevision: Int64) -> AsyncThrowingStream<WatchEvent, any Error> { inner.watch(prefix: prefix, fromRevision: fromRevision) }
}

/// The controller at the scale Docs/scale.md reasons about: 100 brokers
/// and 100,000 partitions (100 topics of 1,000, replication factor 3) on
/// the in-memory store, through the real driver. It checks that a broker's
/// death moves every partition it led to a live in-sync replica and takes
/// it out of every ISR, and prints what that cost the store (the figures
/// Docs/scale.md quotes).
@Suite struct ScaleSimulationTests {
    @Test func aBrokerDiesAmongAHundredWithAHundredThousandPartitions() async throws {
        let brokers = 100
        let topics = 100
        let partitionsPerTopic = 1000
        let store = CountingCoordination()
        var members: [Int32: Membership] = [:]
        for id in 1...Int32(brokers) {
            members[id] = Membership(coordination: store, cluster: "scale", brokerID: id, address: "10.0.\(id / 250).\(id % 250):9092", leaseSeconds: 3600)
            _ = try await members[id]!.register()
        }
        let driver = ControllerDriver(membership: members[1]!)
        try await driver.load()
        let clock = ContinuousClock()
        let made = try await clock.measure {
            for topic in 0..<topics {
                _ = try await driver.createTopic("t\(topic)", partitionCount: partitionsPerTopic, replicationFactor: 3)
            }
        }
        let creationWrites = store.writes
        let topicRecordBytes = store.largestValue
        let before = await driver.state.partitions
        #expect(before.count == topics * partitionsPerTopic)
        let dying: Int32 = 7
        let led = before.filter { $0.value.leader == dying }.map(\.key)
        let followed = before.filter { $0.value.leader != dying && $0.value.isr.contains(dying) }.map(\.key)

        store.reset()
        let failover = try await clock.measure {
            try await driver.handle(.brokerExpired(dying))
        }
        let after = await driver.state.partitions
        for id in led {
            let state = try #require(after[id])
            #expect(state.leader != dying && state.leader > 0 && state.leaderEpoch == before[id]!.leaderEpoch + 1)
        }
        #expect(after.values.allSatisfy { !$0.isr.contains(dying) })
        #expect(store.writes == led.count + followed.count)
        // In transactions of up to 128 records.
        #expect(store.writeRequests < store.writes / 50)
        let failoverWrites = store.writes
        let failoverRequests = store.writeRequests

        // A fresh controller (failover of the controller) reads everything once.
        store.reset()
        let successor = ControllerDriver(membership: members[2]!)
        let loaded = try await clock.measure { try await successor.load(correct: false) }
        let (all, _) = try await store.inner.list(prefix: "/postduif/scale/")
        let keyBytes = all.reduce(0) { $0 + $1.key.utf8.count + $1.value.count }
        print("""
            scale: \(brokers) brokers, \(topics * partitionsPerTopic) partitions (RF 3): creation \(creationWrites) writes in \(made); \
            largest record \(topicRecordBytes) bytes (a topic of \(partitionsPerTopic) partitions); \
            broker \(dying)'s death: \(led.count) leaderships moved, \(followed.count) ISRs shrunk, \(failoverWrites) writes in \(failoverRequests) requests, \(failover) \
            (in memory); a new controller's load: \(store.reads) reads in \(loaded); the live key space \(keyBytes) bytes in \(all.count) keys
            """)
    }

    /// The same failover on a real etcd, smaller (20 brokers, 2,000
    /// partitions): the controller's writes per second there, which is what
    /// a failover's length at scale comes from (Docs/scale.md).
    @Test func aFailoverOnEtcdWritesItsRecordsAtEtcdsPace() async throws {
        let etcd = try EtcdProcess()
        try await etcd.waitReady()
        let store = EtcdClient(endpoints: [etcd.endpoint])
        var members: [Int32: Membership] = [:]
        for id in 1...Int32(20) {
            members[id] = Membership(coordination: store, cluster: "scale-etcd", brokerID: id, address: "10.0.0.\(id):9092", leaseSeconds: 3600)
            _ = try await members[id]!.register()
        }
        let driver = ControllerDriver(membership: members[1]!)
        try await driver.load()
        for topic in 0..<4 { _ = try await driver.createTopic("t\(topic)", partitionCount: 500, replicationFactor: 3) }
        let before = await driver.state.partitions
        let touched = before.values.filter { $0.isr.contains(5) }.count
        let clock = ContinuousClock()
        let failover = try await clock.measure { try await driver.handle(.brokerExpired(5)) }
        let after = await driver.state.partitions
        #expect(after.values.allSatisfy { !$0.isr.contains(5) && $0.leader != 5 })
        let seconds = Double(failover.components.seconds) + Double(failover.components.attoseconds) / 1e18
        print("scale on etcd: 20 brokers, 2000 partitions (RF 3): broker 5's death touched \(touched) records in \(failover): \(Int(Double(touched) / seconds)) writes/s")
    }
}
