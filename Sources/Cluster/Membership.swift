import Coordination
import Foundation

/// A broker's presence in the cluster and its bid for the controller role,
/// through the coordination store (etcd). Keys live under
/// `/postduif/<cluster>/`: `brokers/<id>` (its address, under its lease)
/// and `controller` (the controller's id, under the controller's lease).
/// When a broker's lease expires, etcd deletes both, and the others see it
/// in their watches.
public struct Membership: Sendable {
    public let coordination: any Coordination
    public let root: String
    public let brokerID: Int32
    /// host:port clients and followers reach this broker at.
    public let address: String
    /// What the registration holds: the address and each listener's.
    public let registration: String
    public let leaseSeconds: Int64

    /// `leaseSeconds`: how long a silent broker counts as alive; failover
    /// takes about this long (etcd's shortest is about 1.5 s).
    public init(coordination: any Coordination, cluster: String, brokerID: Int32, address: String, listeners: [String: String] = [:], rack: String? = nil, leaseSeconds: Int64 = 2) {
        self.coordination = coordination
        root = "/postduif/\(cluster)/"
        self.brokerID = brokerID
        self.address = address
        registration = BrokerEndpoints(address: address, listeners: listeners, rack: rack).registration
        self.leaseSeconds = leaseSeconds
    }

    public var brokersPrefix: String { root + "brokers/" }
    public var controllerKey: String { root + "controller" }
    /// Where brokers announce a controlled shutdown (under their lease).
    public var shuttingDownPrefix: String { root + "shutting-down/" }

    /// Announces this broker's controlled shutdown: the controller moves
    /// its leaderships to in-sync followers. The key ends with the lease.
    public func announceShutdown(lease: Int64) async throws {
        _ = try await coordination.put(shuttingDownPrefix + String(brokerID), Array("1".utf8), lease: lease)
    }

    /// Takes a lease and registers this broker under it. Two brokers with
    /// one id is a configuration error, reported rather than overwritten.
    /// A registration with this broker's own address is its previous life
    /// (a quick restart, or etcd coming back, which renews every lease once
    /// more): it ends within a lease, so it is waited out, up to `patience`.
    public func register(patience: Duration? = nil) async throws -> Int64 {
        let key = brokersPrefix + String(brokerID)
        let deadline = ContinuousClock.now + (patience ?? .seconds(leaseSeconds * 3 + 1))
        while true {
            let lease = try await coordination.grantLease(ttlSeconds: leaseSeconds)
            if try await coordination.compareAndSwap(key, expected: 0, value: Array(registration.utf8), lease: lease) != nil {
                return lease
            }
            try? await coordination.revokeLease(lease)
            let holder = try await coordination.get(key).map { String(decoding: $0.value, as: UTF8.self) }
            guard holder == nil || holder == registration, ContinuousClock.now < deadline else {
                throw CoordinationError.refused("broker id \(brokerID) is already registered by \(holder ?? "?")")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Renews the lease every third of its time to live until the task is
    /// cancelled; throws when etcd says the lease is gone (this broker must
    /// then stop acting as leader or controller: others may have taken
    /// over), or when no member answered for three times the lease's time
    /// to live (cut off from etcd). A renewal that fails (etcd electing a
    /// new leader, a member stopped or cut off) is retried soon, on the next
    /// member: etcd extends every lease when a new leader takes over, so an
    /// election ends nothing. Waiting past the time to live is safe for
    /// acknowledged writes: a leader whose lease ended cannot shrink its ISR
    /// (a compare-and-swap on a record the controller changed) and its
    /// followers have moved to the new leader, so no acks=all write of it
    /// can be acknowledged meanwhile.
    public func keepAlive(lease: Int64) async throws {
        var renewed = ContinuousClock.now
        while !Task.isCancelled {
            do {
                try await coordination.keepAlive(lease: lease)
                renewed = ContinuousClock.now
            } catch CoordinationError.leaseNotFound(let lease) {
                throw CoordinationError.leaseNotFound(lease)
            } catch {
                guard ContinuousClock.now - renewed < .seconds(leaseSeconds * 3) else { throw error }
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            try await Task.sleep(for: .milliseconds(leaseSeconds * 1000 / 3))
        }
    }

    /// Tries to become controller: wins only if no live broker holds the role.
    public func campaign(lease: Int64) async throws -> Bool {
        try await coordination.compareAndSwap(controllerKey, expected: 0, value: Array(String(brokerID).utf8), lease: lease) != nil
    }

    /// The current controller's id, if any.
    public func controller() async throws -> Int32? {
        try await coordination.get(controllerKey).flatMap { Int32(String(decoding: $0.value, as: UTF8.self)) }
    }

    /// Live brokers by id, with their addresses, and the revision to watch from.
    public func liveBrokers() async throws -> (brokers: [Int32: String], revision: Int64) {
        let (keyValues, revision) = try await coordination.list(prefix: brokersPrefix)
        var brokers: [Int32: String] = [:]
        for keyValue in keyValues {
            guard let id = Int32(keyValue.key.dropFirst(brokersPrefix.count)) else { continue }
            brokers[id] = BrokerEndpoints(registration: keyValue.value).address
        }
        return (brokers, revision)
    }

    /// A watch event on a broker's registration as the controller's event
    /// (registered or expired); nil for any other key.
    public func brokerEvent(_ event: WatchEvent) -> Controller.Event? {
        guard event.keyValue.key.hasPrefix(brokersPrefix), let id = Int32(event.keyValue.key.dropFirst(brokersPrefix.count)) else { return nil }
        return event.kind == .put ? .brokerRegistered(id) : .brokerExpired(id)
    }
}
