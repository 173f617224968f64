import Core
import Synchronization

/// Per user and room, the unread notifications of `/sync`
/// (`unread_notifications`): events after the user's read receipt (or
/// their own latest event, or their joining) that the user's push rules
/// say notify, and of those the ones that highlight. Counted as syncs
/// ask, from where the last count stopped: a member's sync evaluates only
/// the events that arrived since.
final class UnreadTable: Sendable {
    struct Entry: Sendable {
        /// The read point this count began after.
        var readPoint: Int64
        /// Events below this offset are counted.
        var countedTo: Int64
        /// The version of the user's push rules counted with.
        var rules: Int64
        var notify = 0
        var highlight = 0
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let evaluators = Mutex<[String: (version: Int64, evaluator: PushEvaluator)]>([:])
    /// Parsed contents by event id: one parse per event for all its room's members.
    private let contents = Mutex<[String: JSONValue]>([:])
    static let contentsMax = 4_096

    func entry(user: String, roomID: String) -> Entry? {
        entries.withLock { $0[user + "\u{0}" + roomID] }
    }

    func store(_ entry: Entry, user: String, roomID: String) {
        entries.withLock { $0[user + "\u{0}" + roomID] = entry }
    }

    func evaluator(user: String, version: Int64, make: () -> PushEvaluator) -> PushEvaluator {
        if let known = evaluators.withLock({ $0[user] }), known.version == version { return known.evaluator }
        let made = make()
        evaluators.withLock { $0[user] = (version, made) }
        return made
    }

    func content(of event: RoomEvent) -> JSONValue? {
        if let known = contents.withLock({ $0[event.eventID] }) { return known }
        guard let parsed = MatrixAPI.content(event.json) else { return nil }
        contents.withLock { contents in
            if contents.count >= Self.contentsMax { contents.removeAll(keepingCapacity: true) }
            contents[event.eventID] = parsed
        }
        return parsed
    }
}

extension ChatState {
    /// The offset in `conversations` an event id names (`$partition_offset`).
    static func offset(ofEventID eventID: String) -> Int64? {
        guard eventID.hasPrefix("$"), let separator = eventID.firstIndex(of: "_") else { return nil }
        return Int64(eventID[eventID.index(after: separator)...])
    }
}

extension MatrixAPI {
    /// A joined room's `"unread_notifications":{…}` for the session's user,
    /// counted up to `end` (the room partition's position). Throws
    /// `NeedHistory` when the events since the last count are not cached;
    /// read from the broker, at most its page's worth of the newest are
    /// counted.
    func unreadJSON(_ session: Session, _ roomID: String, _ room: RoomDirectory.Room, end: Int64, fetched: [String: [RoomEvent]]) throws -> String {
        let user = session.userID
        // Nothing from before the user joined counts, nor what they read.
        var readPoint = room.stateEvent("m.room.member", user).flatMap { ChatState.offset(ofEventID: $0.eventID) } ?? -1
        if let receipt = state.markers.own(user: user, roomID: roomID)["m.read"], let offset = ChatState.offset(ofEventID: receipt) {
            readPoint = max(readPoint, offset)
        }
        let stored = state.userData.accountData(user: user, type: PushRules.accountDataType)
        let version = stored?.offset ?? -1
        var entry = state.unread.entry(user: user, roomID: roomID) ?? UnreadTable.Entry(readPoint: readPoint, countedTo: readPoint + 1, rules: version)
        if entry.readPoint != readPoint || entry.rules != version || entry.countedTo > end {
            entry = UnreadTable.Entry(readPoint: readPoint, countedTo: readPoint + 1, rules: version)
        }
        if entry.countedTo < end {
            let events: [RoomEvent]
            if let cached = state.cache.events(roomID: roomID, after: entry.countedTo, upTo: end), cached.complete {
                events = cached.events
            } else {
                let need = NeedHistory(roomID: roomID, end: end, limit: Limits.historyMessagesMax)
                guard let page = fetched[need.key] else { throw need }
                events = page.filter { $0.offset >= entry.countedTo && $0.offset < end }
            }
            let evaluator = state.unread.evaluator(user: user, version: version) {
                PushEvaluator(stored.flatMap { PushRules(accountData: $0.json) } ?? PushRules.defaults(for: user))
            }
            let name = room.stateEvent("m.room.member", user).flatMap { Self.content($0.json)?["displayname"]?.string }
            let facts = PushEvaluator.Facts(userID: user, displayName: name, joinedMembers: room.joinedCount, levels: room.levels)
            for event in events {
                // The user's own event reads everything before it.
                if event.sender == user {
                    entry.notify = 0
                    entry.highlight = 0
                    continue
                }
                let seen = PushEvaluator.Event(type: event.type, sender: event.sender, stateKey: event.stateKey, roomID: roomID, content: state.unread.content(of: event))
                let outcome = evaluator.outcome(seen, facts)
                if outcome.notify { entry.notify += 1 }
                if outcome.highlight { entry.highlight += 1 }
            }
            entry.countedTo = end
            state.unread.store(entry, user: user, roomID: roomID)
        }
        return "\"unread_notifications\":{\"notification_count\":\(entry.notify),\"highlight_count\":\(entry.highlight)}"
    }
}
