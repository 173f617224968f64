import ChatWire
import Core
import KafkaWire

/// The fan-out's routing table and per-gateway queues, as a value: which
/// gateway serves which users (each with a lease), and what waits for
/// each gateway. No I/O and no clock of its own, so it is tested alone.
///
/// One delivery per gateway per message, whatever the number of its users
/// in the conversation. A queue is bounded in count and bytes; a message
/// that does not fit is dropped and the partition marked for resync from
/// that offset, so a slow gateway costs the broker bounded memory and
/// reads the gap itself (at least once, never lost).
struct FanOutRouter {
    struct Gateway {
        var users: Set<String> = []
        var leaseEnd: Int64 = 0
        var queue: [GatewayPollResponse.Delivery] = []
        var head = 0
        var queuedBytes = 0
        /// Per partition, the first offset dropped since the last poll.
        var overflow: [Int32: Int64] = [:]

        var pending: ArraySlice<GatewayPollResponse.Delivery> { queue[head...] }
    }

    var gateways: [String: Gateway] = [:]
    /// User → the gateways holding a session of theirs.
    var routes: [String: Set<String>] = [:]
    let queueCountMax: Int
    let queueBytesMax: Int

    init(queueCountMax: Int = Limits.fanOutQueueCountMax, queueBytesMax: Int = Limits.fanOutQueueBytesMax) {
        self.queueCountMax = queueCountMax
        self.queueBytesMax = queueBytesMax
    }

    /// A gateway polled: renew its lease and change its users.
    mutating func register(_ id: String, replace: Bool, users: [String], removed: [String], leaseEnd: Int64) {
        // Each gateway is taken out of the table while it changes: a copy
        // left in it made every change copy the gateway's queue.
        var gateway = gateways.removeValue(forKey: id) ?? Gateway()
        if replace {
            for user in gateway.users { unroute(user, id) }
            gateway.users = []
        }
        for user in users where gateway.users.insert(user).inserted {
            routes[user, default: []].insert(id)
        }
        for user in removed where gateway.users.remove(user) != nil {
            unroute(user, id)
        }
        gateway.leaseEnd = leaseEnd
        gateways[id] = gateway
    }

    private mutating func unroute(_ user: String, _ gateway: String) {
        routes[user]?.remove(gateway)
        if routes[user]?.isEmpty == true { routes[user] = nil }
    }

    /// Drops gateways whose lease ended, with their routes and queues.
    mutating func expire(now: Int64) -> [String] {
        let expired = gateways.filter { $0.value.leaseEnd < now }.map(\.key)
        for id in expired {
            for user in gateways[id]!.users { unroute(user, id) }
            gateways[id] = nil
        }
        return expired
    }

    /// The gateways serving any of `members`, each once.
    func gateways(for members: some Sequence<String>) -> Set<String> {
        var found: Set<String> = []
        for member in members {
            if let ids = routes[member] { found.formUnion(ids) }
        }
        return found
    }

    /// Deliveries left out of a full queue since `takeDropped` (the gateway
    /// resyncs from the log instead: nothing is lost, only slower).
    private(set) var dropped = 0

    /// The drops counted since the last call.
    mutating func takeDropped() -> Int {
        defer { dropped = 0 }
        return dropped
    }

    /// Queues one message for each gateway in `ids`; returns the gateways
    /// that got it queued (to wake their polls).
    mutating func deliver(_ delivery: GatewayPollResponse.Delivery, to ids: Set<String>) -> [String] {
        let size = delivery.key.count + (delivery.value?.count ?? 0) + 64
        var queued: [String] = []
        for id in ids {
            guard var gateway = gateways.removeValue(forKey: id) else { continue }
            if gateway.overflow[delivery.partition] != nil {
                // Already resyncing this partition: the gap covers this message.
                dropped += 1
            } else if gateway.queue.count - gateway.head >= queueCountMax || gateway.queuedBytes + size > queueBytesMax {
                gateway.overflow[delivery.partition] = delivery.offset
                dropped += 1
            } else {
                gateway.queue.append(delivery)
                gateway.queuedBytes += size
                queued.append(id)
            }
            gateways[id] = gateway
        }
        return queued
    }

    /// Up to `max` queued deliveries for a gateway, oldest first, the
    /// partitions it must resync, and per partition the first offset still
    /// queued (so the caller never claims past an undelivered message).
    mutating func drain(_ id: String, max: Int) -> (deliveries: [GatewayPollResponse.Delivery], resync: [Int32: Int64], stillQueued: [Int32: Int64]) {
        guard var gateway = gateways.removeValue(forKey: id) else { return ([], [:], [:]) }
        let end = min(gateway.queue.count, gateway.head + Swift.max(max, 0))
        let taken = Array(gateway.queue[gateway.head..<end])
        gateway.head = end
        for delivery in taken { gateway.queuedBytes -= delivery.key.count + (delivery.value?.count ?? 0) + 64 }
        if gateway.head > 1024 && gateway.head * 2 > gateway.queue.count {
            gateway.queue.removeFirst(gateway.head)
            gateway.head = 0
        }
        var stillQueued: [Int32: Int64] = [:]
        for delivery in gateway.pending where stillQueued[delivery.partition] == nil {
            stillQueued[delivery.partition] = delivery.offset
        }
        // A gap is reported once the messages queued before it are out.
        let resync = gateway.overflow.filter { stillQueued[$0.key] == nil }
        for partition in resync.keys { gateway.overflow[partition] = nil }
        gateways[id] = gateway
        return (taken, resync, stillQueued)
    }

    func hasPending(_ id: String) -> Bool {
        guard let gateway = gateways[id] else { return false }
        return gateway.head < gateway.queue.count || !gateway.overflow.isEmpty
    }
}
