import ChatWire
import Core
import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import Synchronization

// The timeline cache per room, and sync answers shared by the members of a room.
extension ChatState {
    func transaction(_ key: String) -> String? { inner.withLock { $0.transactions.get(key) } }

    /// Transaction ids are remembered for about the last 200,000 sends (the
    /// least recently used go first): enough for any client's retries,
    /// bounded for the gateway's memory.
    func remember(transaction key: String, eventID: String) {
        inner.withLock { inner in
            inner.transactions.set(eventID, for: key)
        }
    }

    /// The cached events of a room after `offset` up to `end`, if the cache
    /// holds all of them; nil when the cache began later or lost some.
    func cachedEvents(roomID: String, after offset: Int64, upTo end: Int64) -> (events: [RoomEvent], complete: Bool)? {
        inner.withLock { inner in
            let partition = Int(partition(ofRoom: roomID))
            guard let room = inner.rooms[roomID], let covered = room.coveredFrom,
                  max(inner.cacheStart[partition], covered) <= offset else { return nil }
            let events = room.recent.filter { $0.offset >= offset && $0.offset < end }
            // Complete unless the bound dropped events in the range.
            let complete = room.recent.count < Self.timelineCacheMax || (room.recent.first.map { $0.offset < offset } ?? true)
            return (events, complete)
        }
    }

    /// The room's newest `limit` events below `end` from the cache, if it
    /// can tell: it holds that many, or everything since the partition began.
    func recentEvents(roomID: String, upTo end: Int64, limit: Int) -> (events: [RoomEvent], limited: Bool)? {
        inner.withLock { inner in
            guard let room = inner.rooms[roomID], room.coveredFrom != nil else { return nil }
            let recent = room.recent.filter { $0.offset < end }
            guard recent.count >= limit else { return nil }
            return (Array(recent.suffix(limit)), true)
        }
    }

    func sharedDelta(_ key: String) -> String? { inner.withLock { $0.deltas[key] } }

    func sharedAnswer(_ key: String) -> (body: String, changed: Bool)? { inner.withLock { $0.answers[key] } }

    func storeAnswer(_ key: String, _ answer: (body: String, changed: Bool)) {
        inner.withLock { inner in
            if inner.answers.count > 10_000 { inner.answers.removeAll(keepingCapacity: true) }
            inner.answers[key] = answer
        }
    }

    func storeDelta(_ key: String, _ json: String) {
        inner.withLock { inner in
            if inner.deltas.count > 10_000 { inner.deltas.removeAll(keepingCapacity: true) }
            inner.deltas[key] = json
        }
    }

    func startTimeline(partition: Int32, at offset: Int64) {
        inner.withLock { inner in
            inner.position.timeline[Int(partition)] = offset
            inner.cacheStart[Int(partition)] = offset
        }
    }

    /// A delivered message: into its room's recent events; wakes the
    /// room's members. The position moves only with `fannedOut`.
    /// Returns the users to wake once the position has moved past it.
    func applyDelivery(_ delivery: GatewayPollResponse.Delivery) -> [String] {
        let record = delivery.record
        guard let roomID = String(bytes: record.key, encoding: .utf8), let event = Self.clientEvent(roomID: roomID, partition: delivery.partition, record: record) else {
            return []
        }
        return inner.withLock { inner -> [String] in
            // Taken out of the table while it changes: a copy left in it made
            // every append copy the room's recent events.
            var room = inner.rooms.removeValue(forKey: roomID) ?? Room()
            defer { inner.rooms[roomID] = room }
            if let last = room.recent.last, last.offset >= event.offset { return [] }
            if room.coveredFrom == nil { room.coveredFrom = event.offset }
            room.recent.append(event)
            // Trimmed in steps, not by one event per message.
            if room.recent.count >= Self.timelineCacheMax + 32 { room.recent.removeFirst(room.recent.count - Self.timelineCacheMax) }
            if let transaction = record.headers.first(where: { $0.key == Array("txn".utf8) })?.value.flatMap({ String(bytes: $0, encoding: .utf8) }) {
                inner.transactions.set(event.eventID, for: transaction)
            }
            return room.members.filter { $0.value.membership == "join" || $0.value.membership == "invite" }.map(\.key)
        }
    }
}
