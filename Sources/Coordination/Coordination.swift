/// The small coordination protocol the cluster needs from etcd: reads,
/// writes, compare-and-swap transactions, leases and watches. `EtcdClient`
/// speaks it to a real etcd; `InMemoryCoordination` serves unit tests of
/// the state machines built on it, never the cluster tests.

/// A key's value and its etcd bookkeeping.
public struct KeyValue: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    /// The revision of the key's last change (0 when absent).
    public var modRevision: Int64
    public var createRevision: Int64
    /// The lease the key is attached to, 0 for none.
    public var lease: Int64

    public init(key: String, value: [UInt8], modRevision: Int64, createRevision: Int64, lease: Int64 = 0) {
        self.key = key
        self.value = value
        self.modRevision = modRevision
        self.createRevision = createRevision
        self.lease = lease
    }
}

/// One change seen by a watch.
public struct WatchEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case put, delete }
    public var kind: Kind
    /// For a delete, the value is empty and `modRevision` is the deletion's revision.
    public var keyValue: KeyValue
}

/// Why a coordination call failed.
public enum CoordinationError: Error, Equatable, CustomStringConvertible {
    /// The store could not be reached or answered with a transport error.
    case unavailable(String)
    /// The store refused the request.
    case refused(String)
    /// The lease does not exist any more (expired or revoked).
    case leaseNotFound(Int64)
    /// A watch's start revision was compacted away: re-read, then watch from the new revision.
    case compacted(Int64)

    public var description: String {
        switch self {
        case .unavailable(let reason): "coordination store unavailable: \(reason)"
        case .refused(let reason): "coordination store refused: \(reason)"
        case .leaseNotFound(let id): "lease \(id) not found"
        case .compacted(let revision): "revision \(revision) was compacted"
        }
    }
}

/// One write of `Coordination.compareAndSwapAll`.
public struct CompareAndSwap: Sendable {
    public var key: String
    public var expected: Int64
    public var value: [UInt8]

    public init(_ key: String, expected: Int64, value: [UInt8]) {
        self.key = key
        self.expected = expected
        self.value = value
    }
}

public protocol Coordination: Sendable {
    /// The value of `key`, or nil.
    func get(_ key: String) async throws -> KeyValue?
    /// Every key under `prefix`, sorted by key, and the store's revision at the read.
    func list(prefix: String) async throws -> (keyValues: [KeyValue], revision: Int64)
    /// Writes `value`; returns the new revision.
    @discardableResult
    func put(_ key: String, _ value: [UInt8], lease: Int64) async throws -> Int64
    /// Writes `value` only if the key's modRevision is `expected` (0: only if
    /// the key does not exist). Returns the new revision, or nil when the
    /// comparison failed and nothing was written.
    func compareAndSwap(_ key: String, expected: Int64, value: [UInt8], lease: Int64) async throws -> Int64?
    /// Writes every value only if every key's modRevision is as expected
    /// (0: the key does not exist), in one transaction: all or none. The
    /// keys are distinct. Returns the new revision (every key's
    /// modRevision), or nil when a comparison failed and nothing was written.
    func compareAndSwapAll(_ writes: [CompareAndSwap]) async throws -> Int64?
    /// Deletes `key` only if its modRevision is `expected`; true when deleted.
    func compareAndDelete(_ key: String, expected: Int64) async throws -> Bool
    /// A lease that expires `ttlSeconds` after its last keep-alive.
    func grantLease(ttlSeconds: Int64) async throws -> Int64
    /// Renews the lease; throws `leaseNotFound` once it expired.
    func keepAlive(lease: Int64) async throws
    func revokeLease(_ lease: Int64) async throws
    /// Changes under `prefix` from `revision` on (inclusive), in order.
    func watch(prefix: String, fromRevision: Int64) -> AsyncThrowingStream<WatchEvent, any Error>
}

extension Coordination {
    @discardableResult
    public func put(_ key: String, _ value: [UInt8]) async throws -> Int64 {
        try await put(key, value, lease: 0)
    }

    public func compareAndSwap(_ key: String, expected: Int64, value: [UInt8]) async throws -> Int64? {
        try await compareAndSwap(key, expected: expected, value: value, lease: 0)
    }
}

/// The range end that selects every key starting with `prefix` (etcd's convention).
func prefixEnd(_ prefix: String) -> [UInt8] {
    var bytes = Array(prefix.utf8)
    while let last = bytes.last {
        if last < 0xff {
            bytes[bytes.count - 1] = last + 1
            return bytes
        }
        bytes.removeLast()
    }
    return [0]  // every key
}
