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
    /// An event as the rules see it, parsed once for all its room's
    /// members, and, for an event the default rules decide alike for every
    /// member (`decidedAlikeByDefaultRules`), their outcome in a room of
    /// that many members once one member's evaluation found it.
    struct Parsed {
        var event: PushEvaluator.Event
        var byDefaultRules: (joinedMembers: Int, outcome: PushEvaluator.Outcome)?
    }

    /// By event id.
    private let parsed = Mutex<[String: Parsed]>([:])
    /// Delivered events' contents, by event id, until the first count of
    /// each makes its `Parsed` from it.
    private let contents = Mutex<[String: JSONValue?]>([:])
    /// Display names, lowercased, by the id of the member event that set them.
    private let names = Mutex<[String: [Unicode.Scalar]?]>([:])
    static let memoMax = 4_096
    /// Contents wait only from a delivery to its first count, milliseconds
    /// for members who sync; a quarter of the memos' bound keeps a flood of
    /// large events in rooms nobody reads from holding much memory.
    static let keptContentsMax = 1_024

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

    /// A delivered event's content, as the delivery's parse found it.
    func keepContent(_ content: JSONValue?, of eventID: String) {
        contents.withLock { contents in
            if contents.count >= Self.keptContentsMax { contents.removeAll(keepingCapacity: true) }
            contents[eventID] = content
        }
    }

    /// Contents kept and not yet taken.
    var keptContentCount: Int { contents.withLock { $0.count } }

    func pushEvent(_ event: RoomEvent) -> Parsed {
        if let known = parsed.withLock({ $0[event.eventID] }) { return known }
        // Kept by the delivery, or parsed here (an event read from history).
        let content = contents.withLock { $0.removeValue(forKey: event.eventID) } ?? MatrixAPI.content(event.json)
        let made = Parsed(event: PushEvaluator.Event(type: event.type, sender: event.sender, stateKey: event.stateKey, roomID: event.roomID,
                                                     content: content))
        parsed.withLock { parsed in
            if parsed.count >= Self.memoMax { parsed.removeAll(keepingCapacity: true) }
            parsed[event.eventID] = made
        }
        return made
    }

    /// The default rules' outcome for an event they decide alike for every
    /// member, in a room of `joinedMembers`.
    func rememberDefaultOutcome(_ outcome: PushEvaluator.Outcome, eventID: String, joinedMembers: Int) {
        parsed.withLock { $0[eventID]?.byDefaultRules = (joinedMembers, outcome) }
    }

    /// The display name a member event sets, lowercased.
    func displayName(_ member: RoomEvent?) -> [Unicode.Scalar]? {
        guard let member else { return nil }
        if let known = names.withLock({ $0[member.eventID] }) { return known }
        let name = MatrixAPI.content(member.json)?["displayname"]?.string.map(PushEvaluator.scalars)
        names.withLock { names in
            if names.count >= Self.memoMax { names.removeAll(keepingCapacity: true) }
            names[member.eventID] = name
        }
        return name
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
            var events: [RoomEvent]
            if let cached = state.cache.events(roomID: roomID, after: entry.countedTo, upTo: end), cached.complete {
                events = cached.events
            } else {
                // The older part from the broker, up to where the cache holds
                // everything: a bound that stays put while messages arrive, so
                // the page read is the page used (a bound at the position moved
                // with every message and the sync read again and again).
                let boundary = min(state.cache.coverage(roomID: roomID) ?? end, end)
                let need = NeedHistory(roomID: roomID, end: boundary, limit: Limits.historyMessagesMax)
                guard let page = fetched[need.key] else { throw need }
                events = page.filter { $0.offset >= entry.countedTo && $0.offset < boundary }
                if boundary < end { events += state.cache.events(roomID: roomID, after: boundary, upTo: end)?.events ?? [] }
            }
            let evaluator = state.unread.evaluator(user: user, version: version) {
                PushEvaluator(stored.flatMap { PushRules(accountData: $0.json) } ?? PushRules.defaults(for: user))
            }
            let facts = PushEvaluator.Facts(userID: user, displayName: state.unread.displayName(room.stateEvent("m.room.member", user)),
                                            joinedMembers: room.joinedCount, levels: room.levels)
            for event in events {
                // The user's own event reads everything before it.
                if event.sender == user {
                    entry.notify = 0
                    entry.highlight = 0
                    continue
                }
                let parsed = state.unread.pushEvent(event)
                let outcome: PushEvaluator.Outcome
                if stored == nil, parsed.event.decidedAlikeByDefaultRules {
                    // In a room of a hundred, the first member's evaluation
                    // of an encrypted message answers the other 99.
                    if let known = parsed.byDefaultRules, known.joinedMembers == facts.joinedMembers {
                        outcome = known.outcome
                    } else {
                        outcome = evaluator.outcome(parsed.event, facts)
                        state.unread.rememberDefaultOutcome(outcome, eventID: event.eventID, joinedMembers: facts.joinedMembers)
                    }
                } else {
                    outcome = evaluator.outcome(parsed.event, facts)
                }
                if outcome.notify { entry.notify += 1 }
                if outcome.highlight { entry.highlight += 1 }
            }
            entry.countedTo = end
            state.unread.store(entry, user: user, roomID: roomID)
        }
        return "\"unread_notifications\":{\"notification_count\":\(entry.notify),\"highlight_count\":\(entry.highlight)}"
    }
}
