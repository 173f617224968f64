import Foundation
import Synchronization

/// The coordination protocol in memory, with etcd's revision and lease
/// semantics, for unit tests of the state machines. Lease expiry is driven
/// by the test (`expire(lease:)`), not by a clock.
public final class InMemoryCoordination: Coordination {
    struct State {
        var revision: Int64 = 1
        var keys: [String: KeyValue] = [:]
        var leases: Set<Int64> = []
        var nextLease: Int64 = 1
        var history: [(revision: Int64, event: WatchEvent)] = []
        var watchers: [UUID: (prefix: String, continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation)] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    public func get(_ key: String) async throws -> KeyValue? {
        state.withLock { $0.keys[key] }
    }

    public func list(prefix: String) async throws -> (keyValues: [KeyValue], revision: Int64) {
        state.withLock { state in
            (state.keys.values.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }, state.revision)
        }
    }

    public func put(_ key: String, _ value: [UInt8], lease: Int64) async throws -> Int64 {
        try state.withLock { state in
            if lease != 0 && !state.leases.contains(lease) { throw CoordinationError.leaseNotFound(lease) }
            return Self.write(&state, key: key, value: value, lease: lease)
        }
    }

    public func compareAndSwap(_ key: String, expected: Int64, value: [UInt8], lease: Int64) async throws -> Int64? {
        try state.withLock { state in
            if lease != 0 && !state.leases.contains(lease) { throw CoordinationError.leaseNotFound(lease) }
            guard (state.keys[key]?.modRevision ?? 0) == expected else { return nil }
            return Self.write(&state, key: key, value: value, lease: lease)
        }
    }

    public func compareAndSwapAll(_ writes: [CompareAndSwap]) async throws -> Int64? {
        state.withLock { state in
            guard !writes.isEmpty else { return state.revision }
            guard writes.allSatisfy({ (state.keys[$0.key]?.modRevision ?? 0) == $0.expected }) else { return nil }
            // One transaction, one revision for every key, as etcd does.
            state.revision += 1
            for write in writes {
                let created = state.keys[write.key]?.createRevision ?? state.revision
                let keyValue = KeyValue(key: write.key, value: write.value, modRevision: state.revision, createRevision: created)
                state.keys[write.key] = keyValue
                Self.publish(&state, WatchEvent(kind: .put, keyValue: keyValue))
            }
            return state.revision
        }
    }

    public func compareAndDelete(_ key: String, expected: Int64) async throws -> Bool {
        state.withLock { state in
            guard let current = state.keys[key], current.modRevision == expected else { return false }
            Self.remove(&state, key: key)
            return true
        }
    }

    public func grantLease(ttlSeconds: Int64) async throws -> Int64 {
        state.withLock { state in
            let id = state.nextLease
            state.nextLease += 1
            state.leases.insert(id)
            return id
        }
    }

    public func keepAlive(lease: Int64) async throws {
        try state.withLock { state in
            guard state.leases.contains(lease) else { throw CoordinationError.leaseNotFound(lease) }
        }
    }

    public func revokeLease(_ lease: Int64) async throws {
        expire(lease: lease)
    }

    /// Ends a lease as if its time ran out: its keys are deleted.
    public func expire(lease: Int64) {
        state.withLock { state in
            state.leases.remove(lease)
            for key in state.keys.values.filter({ $0.lease == lease }).map(\.key).sorted() {
                Self.remove(&state, key: key)
            }
        }
    }

    public func watch(prefix: String, fromRevision: Int64) -> AsyncThrowingStream<WatchEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: WatchEvent.self, throwing: (any Error).self)
        let id = UUID()
        state.withLock { state in
            for (revision, event) in state.history where revision >= fromRevision && event.keyValue.key.hasPrefix(prefix) {
                continuation.yield(event)
            }
            state.watchers[id] = (prefix, continuation)
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }

    private static func write(_ state: inout State, key: String, value: [UInt8], lease: Int64) -> Int64 {
        state.revision += 1
        let created = state.keys[key]?.createRevision ?? state.revision
        let keyValue = KeyValue(key: key, value: value, modRevision: state.revision, createRevision: created, lease: lease)
        state.keys[key] = keyValue
        publish(&state, WatchEvent(kind: .put, keyValue: keyValue))
        return state.revision
    }

    private static func remove(_ state: inout State, key: String) {
        guard state.keys.removeValue(forKey: key) != nil else { return }
        state.revision += 1
        publish(&state, WatchEvent(kind: .delete, keyValue: KeyValue(key: key, value: [], modRevision: state.revision, createRevision: 0)))
    }

    private static func publish(_ state: inout State, _ event: WatchEvent) {
        state.history.append((state.revision, event))
        for watcher in state.watchers.values where event.keyValue.key.hasPrefix(watcher.prefix) {
            watcher.continuation.yield(event)
        }
    }
}
