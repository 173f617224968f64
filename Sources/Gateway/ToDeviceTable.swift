import Synchronization

/// To-device messages (`chat-to-device`) not yet acknowledged, per device.
/// A message is in every sync of its device until the device syncs with a
/// token past it (then it is dropped here): exactly once per device as
/// the specification means it, and again after a sync whose answer was lost.
final class ToDeviceTable: Sendable {
    /// The most messages kept for one device; the oldest go first (a device
    /// that stopped syncing long ago).
    static let queuedMax = 1_000

    private let queues = Mutex<[String: [(offset: Int64, json: String)]]>([:])

    private static func key(_ user: String, _ device: String) -> String { user + "\u{0}" + device }

    /// A message for a device, written at `offset` of chat-to-device.
    func append(user: String, device: String, offset: Int64, json: String) {
        queues.withLock { queues in
            var queue = queues.removeValue(forKey: Self.key(user, device)) ?? []
            queue.append((offset, json))
            if queue.count > Self.queuedMax { queue.removeFirst(queue.count - Self.queuedMax) }
            queues[Self.key(user, device)] = queue
        }
    }

    /// The device's messages below `upTo`, dropping those below
    /// `acknowledged` (the sync's token: the device has them).
    func take(user: String, device: String, acknowledged: Int64?, upTo: Int64) -> [String] {
        queues.withLock { queues in
            let queue = acknowledged.map { Self.drop(before: $0, user: user, device: device, in: &queues) } ?? queues[Self.key(user, device)] ?? []
            return queue.filter { $0.offset < upTo }.map(\.json)
        }
    }

    /// Drops a device's messages before `acknowledged`; returns the rest.
    private static func drop(before acknowledged: Int64, user: String, device: String,
                             in queues: inout [String: [(offset: Int64, json: String)]]) -> [(offset: Int64, json: String)] {
        let key = Self.key(user, device)
        guard var queue = queues[key] else { return [] }
        queue.removeAll { $0.offset < acknowledged }
        queues[key] = queue.isEmpty ? nil : queue
        return queue
    }

    /// Drops the device's messages before `acknowledged` (its sync token's
    /// position, as `take` does) and says whether any are left. A sync
    /// answered from a shared body never calls `take`, and would otherwise
    /// keep what the device acknowledged until its next answer of its own.
    func pendingAfterAcknowledging(user: String, device: String, upTo acknowledged: Int64) -> Bool {
        queues.withLock { !Self.drop(before: acknowledged, user: user, device: device, in: &$0).isEmpty }
    }
}
