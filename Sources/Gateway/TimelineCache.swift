import Core
import KafkaWire
import Synchronization

/// The recent events of each room whose messages the fan-out sends here,
/// and the position in the chat's topics that syncs answer up to: what a
/// sync is answered from without asking the broker. Written by the fan-out
/// poll and the tails, read by syncs.
final class TimelineCache: Sendable {
    static let eventsMax = Limits.roomTimelineCacheCountMax

    private struct Recent {
        /// The newest events, oldest first: `eventsMax` and up to 31 more.
        var events: [RoomEvent] = []
        /// The cache holds every event of the room from this offset on: the
        /// first delivered since the fan-out began sending this room here.
        var coveredFrom: Int64? = nil
    }

    private struct Tables {
        var recent: [String: Recent] = [:]
        var position: SyncPosition
        /// Where the cache of each partition begins: every event at or
        /// after it is in `recent` (up to the per-room bound).
        var cacheStart: [Int64]
        var positionToken: (position: SyncPosition, token: String)?
        /// Moves when a partition's cache restarts: shared answers made
        /// before (and their bytes, kept by key elsewhere) no longer count.
        var epoch: UInt64 = 0
    }

    let partitions: Int32
    private let tables: Mutex<Tables>

    init(partitions: Int32) {
        self.partitions = partitions
        let zeros = [Int64](repeating: 0, count: Int(partitions))
        tables = Mutex(Tables(position: SyncPosition(timeline: zeros, state: 0), cacheStart: zeros))
    }

    func partition(ofRoom roomID: String) -> Int32 {
        KafkaPartitioner.partition(forKey: Array(roomID.utf8), partitionCount: partitions)
    }

    var position: SyncPosition { tables.withLock { $0.position } }

    /// The position, its sync token (made once per position rather than
    /// once per answer) and the cache's epoch, read together.
    var positionWithToken: (position: SyncPosition, token: String, epoch: UInt64) {
        tables.withLock { tables in
            if let cached = tables.positionToken, cached.position == tables.position {
                return (cached.position, cached.token, tables.epoch)
            }
            let made = (tables.position, tables.position.token)
            tables.positionToken = made
            return (made.0, made.1, tables.epoch)
        }
    }

    /// The cached events of a room after `offset` up to `end`, if the cache
    /// holds all of them; nil when the cache began later or lost some.
    func events(roomID: String, after offset: Int64, upTo end: Int64) -> (events: [RoomEvent], complete: Bool)? {
        let partition = Int(partition(ofRoom: roomID))
        return tables.withLock { tables -> (events: [RoomEvent], complete: Bool)? in
            guard let recent = tables.recent[roomID], let covered = recent.coveredFrom,
                  max(tables.cacheStart[partition], covered) <= offset else { return nil }
            // Found by halving, not by a filter over the room's whole cache:
            // counting a member's unread events asks for a few of the newest.
            let events = Array(recent.events[Self.firstIndex(in: recent.events, atOrAfter: offset)..<Self.firstIndex(in: recent.events, atOrAfter: end)])
            // Complete unless the bound dropped events in the range.
            let complete = recent.events.count < Self.eventsMax || (recent.events.first.map { $0.offset < offset } ?? true)
            return (events, complete)
        }
    }

    /// The index of the first event at or after `offset` (events are in offset order).
    static func firstIndex(in events: [RoomEvent], atOrAfter offset: Int64) -> Int {
        var low = 0
        var high = events.count
        while low < high {
            let middle = (low + high) / 2
            if events[middle].offset < offset { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// The offset from which the cache holds every event of the room (nil:
    /// none): where the fan-out began sending it here, or the partition's
    /// cache began, or the bound dropped older ones.
    func coverage(roomID: String) -> Int64? {
        let partition = Int(partition(ofRoom: roomID))
        return tables.withLock { tables -> Int64? in
            guard let recent = tables.recent[roomID], let covered = recent.coveredFrom else { return nil }
            var from = max(tables.cacheStart[partition], covered)
            if recent.events.count >= Self.eventsMax, let first = recent.events.first { from = max(from, first.offset) }
            return from
        }
    }

    /// The room's newest `limit` events below `end` from the cache, if it
    /// can tell: it holds that many, or everything since the partition began.
    func newest(roomID: String, upTo end: Int64, limit: Int) -> (events: [RoomEvent], limited: Bool)? {
        tables.withLock { tables -> (events: [RoomEvent], limited: Bool)? in
            guard let recent = tables.recent[roomID], recent.coveredFrom != nil else { return nil }
            let events = recent.events.filter { $0.offset < end }
            guard events.count >= limit else { return nil }
            return (Array(events.suffix(limit)), true)
        }
    }

    /// A delivered event, into its room's recent events; false when it is
    /// not newer than the last (a repeat of a delivery).
    func append(_ event: RoomEvent) -> Bool {
        tables.withLock { tables in
            // Taken out of the table while it changes: a copy left in it made
            // every append copy the room's recent events.
            var recent = tables.recent.removeValue(forKey: event.roomID) ?? Recent()
            defer { tables.recent[event.roomID] = recent }
            if let last = recent.events.last, last.offset >= event.offset { return false }
            if recent.coveredFrom == nil { recent.coveredFrom = event.offset }
            recent.events.append(event)
            // Trimmed in steps, not by one event per message.
            if recent.events.count >= Self.eventsMax + 32 { recent.events.removeFirst(recent.events.count - Self.eventsMax) }
            return true
        }
    }

    /// A redacted event's new form, where the cache holds it; shared
    /// answers made before are dropped (the epoch moves).
    func replace(roomID: String, offset: Int64, json: String) {
        tables.withLock { tables in
            guard var recent = tables.recent.removeValue(forKey: roomID) else { return }
            defer { tables.recent[roomID] = recent }
            if let index = recent.events.firstIndex(where: { $0.offset == offset }) {
                recent.events[index].json = json
                tables.epoch &+= 1
            }
        }
    }

    /// The cached event at `offset` of a room.
    func event(roomID: String, offset: Int64) -> RoomEvent? {
        tables.withLock { $0.recent[roomID]?.events.first { $0.offset == offset } }
    }

    /// The fan-out sends these rooms here from `from` (per partition) on:
    /// a room not yet covered is covered from there.
    func cover(_ roomIDs: some Sequence<String>, from: [Int32: Int64]) {
        let partitioned = roomIDs.compactMap { id in from[partition(ofRoom: id)].map { (id, $0) } }
        tables.withLock { tables in
            for (roomID, upTo) in partitioned where tables.recent[roomID]?.coveredFrom == nil {
                tables.recent[roomID] = Recent(events: [], coveredFrom: upTo)
            }
        }
    }

    /// The cache no longer vouches for a room (no local member is in it,
    /// so the fan-out may stop sending it here).
    func forget(roomID: String) {
        _ = tables.withLock { $0.recent.removeValue(forKey: roomID) }
    }

    /// Some deliveries of a partition never came: its cache starts over at
    /// `offset`, and older positions are served from the broker's index.
    func restart(partition: Int32, at offset: Int64) {
        tables.withLock { tables in
            tables.cacheStart[Int(partition)] = offset
            for roomID in tables.recent.keys where self.partition(ofRoom: roomID) == partition {
                tables.recent[roomID] = nil
            }
            tables.epoch &+= 1
        }
    }

    /// The timeline of a partition starts at `offset` (the gateway's start).
    func start(partition: Int32, at offset: Int64) {
        tables.withLock { tables in
            tables.position.timeline[Int(partition)] = offset
            tables.cacheStart[Int(partition)] = offset
        }
    }

    /// The fan-out has delivered a partition's messages below `offset`.
    func advance(partition: Int32, to offset: Int64) {
        tables.withLock { $0.position.timeline[Int(partition)] = max($0.position.timeline[Int(partition)], offset) }
    }

    /// The state tail has applied chat-state below `offset`.
    func advance(state offset: Int64) {
        tables.withLock { $0.position.state = max($0.position.state, offset) }
    }

    /// The read-markers tail has applied chat-read-markers below `offset`.
    func advance(markers offset: Int64) {
        tables.withLock { $0.position.markers = max($0.position.markers, offset) }
    }

    /// The user-data tail has applied chat-user-data below `offset`.
    func advance(userData offset: Int64) {
        tables.withLock { $0.position.userData = max($0.position.userData, offset) }
    }

    /// The to-device tail has applied chat-to-device below `offset`.
    func advance(toDevice offset: Int64) {
        tables.withLock { $0.position.toDevice = max($0.position.toDevice, offset) }
    }

    /// Typing changed: its serial is now `serial`.
    func advance(typing serial: Int64) {
        tables.withLock { $0.position.typing = max($0.position.typing, serial) }
    }
}
