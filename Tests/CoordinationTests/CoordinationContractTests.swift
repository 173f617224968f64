import AsyncHTTPClient
import Foundation
import TestSupport
import Testing

@testable import Coordination

/// The same contract for both implementations: what the controller relies on.
func contract(_ store: any Coordination, expire: (Int64) async throws -> Void) async throws {
    let prefix = "/contract-\(UUID().uuidString)/"
    #expect(try await store.get(prefix + "missing") == nil)

    // put / get / list
    let first = try await store.put(prefix + "a", Array("one".utf8))
    let a = try #require(try await store.get(prefix + "a"))
    #expect(a.value == Array("one".utf8))
    #expect(a.modRevision == first)
    try await store.put(prefix + "b", Array("two".utf8))
    let listed = try await store.list(prefix: prefix)
    #expect(listed.keyValues.map(\.key) == [prefix + "a", prefix + "b"])
    #expect(listed.revision >= first)

    // compare-and-swap: only from the expected revision; 0 means "absent".
    #expect(try await store.compareAndSwap(prefix + "a", expected: first - 1, value: Array("lost".utf8)) == nil)
    #expect(try await store.get(prefix + "a")?.value == Array("one".utf8))
    let swapped = try #require(try await store.compareAndSwap(prefix + "a", expected: first, value: Array("uno".utf8)))
    #expect(swapped > first)
    #expect(try await store.compareAndSwap(prefix + "c", expected: 0, value: Array("new".utf8)) != nil)
    #expect(try await store.compareAndSwap(prefix + "c", expected: 0, value: Array("again".utf8)) == nil)

    // compare-and-delete
    let c = try #require(try await store.get(prefix + "c"))
    #expect(try await store.compareAndDelete(prefix + "c", expected: c.modRevision + 100) == false)
    #expect(try await store.compareAndDelete(prefix + "c", expected: c.modRevision) == true)
    #expect(try await store.get(prefix + "c") == nil)

    // watch from a revision: history first, then live changes, in order.
    let watchStart = try await store.put(prefix + "w/1", Array("x".utf8))
    var events = store.watch(prefix: prefix + "w/", fromRevision: watchStart).makeAsyncIterator()
    try await store.put(prefix + "w/2", Array("y".utf8))
    let w2 = try #require(try await store.get(prefix + "w/2"))
    #expect(try await store.compareAndDelete(prefix + "w/1", expected: watchStart))
    let seen1 = try #require(try await events.next())
    let seen2 = try #require(try await events.next())
    let seen3 = try #require(try await events.next())
    #expect(seen1.kind == .put && seen1.keyValue.key == prefix + "w/1" && seen1.keyValue.modRevision == watchStart)
    #expect(seen2.kind == .put && seen2.keyValue.key == prefix + "w/2" && seen2.keyValue.value == Array("y".utf8) && seen2.keyValue.modRevision == w2.modRevision)
    #expect(seen3.kind == .delete && seen3.keyValue.key == prefix + "w/1")

    // leases: a key under a lease goes when the lease ends.
    let lease = try await store.grantLease(ttlSeconds: 30)
    try await store.put(prefix + "leased", Array("alive".utf8), lease: lease)
    try await store.keepAlive(lease: lease)
    #expect(try await store.get(prefix + "leased")?.lease == lease)
    try await expire(lease)
    #expect(try await store.get(prefix + "leased") == nil)
    await #expect(throws: CoordinationError.leaseNotFound(lease)) { try await store.keepAlive(lease: lease) }
    await #expect(throws: CoordinationError.leaseNotFound(lease)) { try await store.put(prefix + "late", [1], lease: lease) }
}

/// The two implementations of `Coordination`: the one for unit tests and
/// a single node, and etcd, the one clusters run on.
enum CoordinationBackend: String, CaseIterable, CustomTestStringConvertible {
    case inMemory
    case etcd

    var testDescription: String { rawValue }
}

@Suite struct CoordinationContractTests {
    /// One contract, both backends: the in-memory one must not pass where etcd would not.
    @Test(arguments: CoordinationBackend.allCases)
    func everyBackendKeepsTheContract(_ backend: CoordinationBackend) async throws {
        switch backend {
        case .inMemory:
            let store = InMemoryCoordination()
            try await contract(store) { store.expire(lease: $0) }
        case .etcd:
            let etcd = try EtcdProcess()
            try await etcd.waitReady()
            let store = EtcdClient(endpoints: [etcd.endpoint])
            try await contract(store) { try await store.revokeLease($0) }
        }
    }

    @Test func aLeaseExpiresWithoutKeepAlive() async throws {
        let etcd = try EtcdProcess()
        try await etcd.waitReady()
        let store = EtcdClient(endpoints: [etcd.endpoint])
        // etcd's shortest lease is its minimum TTL (about 1.5 s with a 100 ms heartbeat).
        let lease = try await store.grantLease(ttlSeconds: 1)
        _ = try await store.put("/expiring", [1], lease: lease)
        var gone = false
        for _ in 0..<100 where !gone {
            try await Task.sleep(for: .milliseconds(100))
            gone = try await store.get("/expiring") == nil
        }
        #expect(gone, "a key under an unrenewed lease outlived it")
    }

    /// A watch on a quiet prefix must outlive any read timeout of the
    /// client the other calls use: a stable cluster's broker list changes
    /// for hours at a time never, and a watch that timed out used to stop
    /// the controller's broker 90 s after the last registration.
    @Test func aWatchOutlivesTheCallsReadTimeoutOnAQuietPrefix() async throws {
        let etcd = try EtcdProcess()
        try await etcd.waitReady()
        let impatient = HTTPClient(
            eventLoopGroup: HTTPClient.defaultEventLoopGroup,
            configuration: HTTPClient.Configuration(timeout: .init(connect: .seconds(1), read: .seconds(1))))
        let store = EtcdClient(endpoints: [etcd.endpoint], client: impatient)
        let revision = try await store.put("/quiet/first", [1])
        let watch = Task {
            var seen: [String] = []
            for try await event in store.watch(prefix: "/quiet/", fromRevision: revision + 1) {
                seen.append(event.keyValue.key)
                if seen.count == 1 { break }
            }
            return seen
        }
        try await Task.sleep(for: .seconds(3))  // three read timeouts of quiet
        _ = try await store.put("/quiet/second", [2])
        let outcome: Result<[String], any Error>
        do {
            outcome = .success(try await withThrowingTaskGroup(of: [String].self) { group in
                group.addTask { try await watch.value }
                group.addTask {
                    try await Task.sleep(for: .seconds(10))
                    watch.cancel()
                    return ["timed out"]
                }
                let first = try await group.next() ?? []
                group.cancelAll()
                return first
            })
        } catch {
            outcome = .failure(error)
        }
        try await impatient.shutdown()
        #expect(try outcome.get() == ["/quiet/second"])
    }

    @Test func anUnreachableEtcdIsAClearError() async throws {
        let store = EtcdClient(endpoints: ["http://127.0.0.1:\(EtcdProcess.freePort())"], timeout: .seconds(1))
        await #expect(throws: CoordinationError.self) { _ = try await store.get("/x") }
        do {
            _ = try await store.get("/x")
        } catch let error as CoordinationError {
            guard case .unavailable = error else {
                Issue.record("expected unavailable, got \(error)")
                return
            }
        }
    }

    @Test func prefixEndFollowsEtcdsConvention() {
        #expect(prefixEnd("/a/") == Array("/a0".utf8))
        #expect(prefixEnd("ab") == Array("ac".utf8))
    }
}
