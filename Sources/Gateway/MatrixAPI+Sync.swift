import Core
import Foundation
import Hummingbird
import HummingbirdCore
import KafkaWire
import Logging
import Metrics
import NIOCore

// /sync: what changed for a session since its token, or a long poll until something does.
extension MatrixAPI {
    /// A parsed `/sync` request.
    struct SyncQuery: Sendable {
        var session: Session
        var since: SyncPosition?
        var fullState: Bool
        /// When a long poll ends, on the gateway's clock (`MatrixAPI.clock`).
        var deadline: Duration
        /// The filter's `room.timeline.limit`.
        var timelineLimit = MatrixAPI.timelineLimit
        /// The filter's `room.state.lazy_load_members`: a room's first sync
        /// carries only the members its timeline needs.
        var lazyMembers = false

        /// Whether the answer may be another member's (the shared path): the
        /// filter asks for nothing of its own.
        var plainFilter: Bool { timelineLimit == MatrixAPI.timelineLimit && !lazyMembers }
    }

    /// What a `/sync` does next: answer with this body, or wait for the
    /// user's generation to move past this one.
    enum SyncStep {
        /// The body, and a key naming it when other members get the very
        /// same body (the fast path shares the bytes too).
        case answer(String, shared: String?)
        case wait(generation: UInt64)
    }

    /// A sync body needs a room's events below `end` that the cache does
    /// not hold: they come from the broker's index, then the sync is tried again.
    struct NeedHistory: Error {
        var roomID: String
        var end: Int64
        /// How many of the newest events: the sync's timeline limit when nil.
        var limit: Int? = nil
        var key: String { limit.map { "\(roomID)|\(end)|\($0)" } ?? "\(roomID)|\(end)" }
    }

    func syncQuery(authorization: String?, uri: URI) throws -> SyncQuery {
        try syncQuery(session: authenticate(authorization: authorization, query: uri), uri: uri)
    }

    func syncQuery(session: Session, uri: URI) throws -> SyncQuery {
        let query = uri.queryParameters
        var since: SyncPosition?
        if let token = query.get("since") {
            guard let parsed = SyncPosition(token: String(token), partitions: Int(state.timelinePartitions)) else {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "unknown since token")
            }
            since = parsed
        }
        // An absent timeout means answer now.
        let timeout = Duration.milliseconds(min(max(Int64(query.get("timeout") ?? "") ?? 0, 0), configuration.syncWaitMax.milliseconds))
        var sync = SyncQuery(session: session, since: since, fullState: query.get("full_state") == "true", deadline: clock.now + timeout)
        if let filter = query.get("filter") {
            try applyFilter(String(filter), session: session, to: &sync)
        }
        return sync
    }

    /// A sync's `filter`: inline JSON or the id of an uploaded one. Only the
    /// room timeline's limit and lazy loading of members change answers.
    func applyFilter(_ filter: String, session: Session, to query: inout SyncQuery) throws {
        let text: String
        if filter.hasPrefix("{") {
            text = filter
        } else {
            guard let stored = state.userData.filter(user: session.userID, id: filter) else {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "unknown filter \(filter)")
            }
            text = stored
        }
        // A form-encoded query writes spaces as "+", which JSON never has outside strings.
        guard let object = JSONValue(parsing: text.utf8)?.members
            ?? JSONValue(parsing: text.replacingOccurrences(of: "+", with: " ").utf8)?.members else {
            throw MatrixError(.badRequest, "M_BAD_JSON", "the filter is not a JSON object")
        }
        if case .int(let limit)? = object["room"]?["timeline"]?["limit"] {
            query.timelineLimit = Int(min(max(limit, 1), Int64(Self.timelineLimitMax)))
        }
        if case .bool(let lazy)? = object["room"]?["state"]?["lazy_load_members"] {
            query.lazyMembers = lazy
        }
    }

    /// The long-poll planner: one look at what `query` should get at `now`,
    /// from what the gateway holds: answer now, or wait for the user's
    /// generation to move (until the query's deadline). No awaiting and no
    /// clock of its own, so the event loop's fast path runs it as well and
    /// tests give it the time. Throws `NeedHistory` when a room's events are
    /// neither cached nor in `fetched`.
    func syncStep(_ query: SyncQuery, now: Duration, fetched: [String: [RoomEvent]] = [:]) throws -> SyncStep {
        let generation = state.generations.of(query.session.userID)
        let (position, token, cacheEpoch) = state.cache.positionWithToken
        // Nothing was written anywhere since the token: nothing to assemble.
        // (Most long polls arrive so, right after the answer they follow.)
        if let since = query.since, !query.fullState, since == position, now < query.deadline {
            return .wait(generation: generation)
        }
        let since = query.fullState ? nil : query.since
        // Read once for the key and the body alike, so a body shared under
        // a key always carries the counts the key names.
        let keyCounts = deviceKeyCounts(query.session)
        var shared = since.flatMap {
            query.plainFilter ? sharedAnswerKey(query.session, since: $0, position: position, token: token, cacheEpoch: cacheEpoch, keyCounts: keyCounts) : nil
        }
        let body: SharedAnswers.Piece
        if let shared, let answer = state.shared.answer(shared), !answer.senders.contains(query.session.devicePrefix) {
            body = answer
        } else {
            body = try syncBody(query, since: since, position: position, token: token, cacheEpoch: cacheEpoch, fetched: fetched, keyCounts: keyCounts)
            if let key = shared {
                // The sender's own body carries its transaction ids: not shared.
                if body.senders.contains(query.session.devicePrefix) { shared = nil } else { state.shared.storeAnswer(key, body) }
            }
        }
        if body.changed || query.since == nil || now >= query.deadline {
            // A shared body carries its first reader's unread counts: each
            // member gets their own in its place (the fast path keeps the
            // bytes per key and counts).
            if let key = shared, let unread = body.unread, let room = state.directory.room(unread.roomID) {
                let end = position.timeline[Int(state.partition(ofRoom: unread.roomID))]
                let own = try unreadJSON(query.session, unread.roomID, room, end: end, fetched: fetched)
                var json = body.json
                let utf8 = json.utf8
                let start = utf8.index(utf8.startIndex, offsetBy: unread.range.lowerBound)
                let stop = utf8.index(utf8.startIndex, offsetBy: unread.range.upperBound)
                if json[start..<stop] != own { json.replaceSubrange(start..<stop, with: own) }
                return .answer(json, shared: key + "|" + own)
            }
            return .answer(body.json, shared: shared)
        }
        return .wait(generation: generation)
    }

    /// `/sync` through the router: a user new here, a room not cached, a
    /// request the fast path (SyncFastPath) left alone.
    func sync(_ request: Request) async throws -> Response {
        let query = try syncQuery(authorization: request.headers[.authorization], uri: request.uri)
        state.registration.touch(user: query.session.userID)
        // A user new here waits until the fan-out routes their rooms here:
        // from then on every message wakes this sync.
        await state.waitRegistered(query.session.userID, timeout: .seconds(3))
        var fetched: [String: [RoomEvent]] = [:]
        while true {
            do {
                switch try syncStep(query, now: clock.now, fetched: fetched) {
                case .answer(let body, _):
                    return Self.ok(body)
                case .wait(let generation):
                    Self.longPolls.increment()
                    await state.waitForUser(query.session.userID, after: generation, timeout: query.deadline - clock.now)
                    Self.longPolls.decrement()
                }
            } catch let need as NeedHistory {
                fetched[need.key] = try await history(need.roomID, upTo: need.end, limit: need.limit ?? query.timelineLimit)
            }
        }
    }

    /// The key of a sync body that every member of the user's room gets
    /// alike: the user is in that one room, joined before `since`, and no
    /// read marker was written since (markers differ per user). The members
    /// of a large room answered for one message all sync again from the
    /// same position, and get the same bytes for the next; nil otherwise.
    func sharedAnswerKey(_ session: Session, since: SyncPosition, position: SyncPosition, token: String, cacheEpoch: UInt64, keyCounts: String) -> String? {
        guard since.markers == position.markers, !state.userData.changed(user: session.userID, since: since.userData) else { return nil }
        // To-device messages and device list changes are a device's own;
        // its one-time key counts are in the key, so the encrypting devices
        // of a room whose counts agree (clients keep theirs topped up to
        // the same number) share an answer as the others do.
        guard state.keys.keysChanged(since: since.userData).isEmpty,
              !state.toDevice.pendingAfterAcknowledging(user: session.userID, device: session.deviceID, upTo: since.toDevice) else { return nil }
        let rooms = state.directory.rooms(of: session.userID)
        guard rooms.count == 1, let only = rooms.first, only.member.membership == "join", only.member.stateOffset < since.state else { return nil }
        let partition = Int(state.partition(ofRoom: only.roomID))
        // The state offset too: membership changes since it (device_lists) differ.
        return "\(cacheEpoch)|\(only.roomID)|\(since.timeline[partition])|\(since.state)|\(since.typing)|\(token)|\(keyCounts)"
    }

    /// The end of a device's sync answer: `"device_one_time_keys_count":{…},"device_unused_fallback_key_types":[…]`.
    func deviceKeyCounts(_ session: Session) -> String {
        let counts = state.keys.oneTimeKeyCounts(user: session.userID, device: session.deviceID).sorted { $0.key < $1.key }.map { "\(JSONText.string($0.key)):\($0.value)" }
        let fallback = state.keys.unusedFallbackTypes(user: session.userID, device: session.deviceID).map(JSONText.string)
        return "\"device_one_time_keys_count\":{\(counts.joined(separator: ","))},\"device_unused_fallback_key_types\":[\(fallback.joined(separator: ","))]"
    }

    func syncBody(_ query: SyncQuery, since: SyncPosition?, position: SyncPosition, token: String, cacheEpoch: UInt64, fetched: [String: [RoomEvent]],
                  keyCounts: String) throws -> SharedAnswers.Piece {
        let session = query.session
        var joined: [String] = []
        var invited: [String] = []
        var left: [String] = []
        var senders: Set<String> = []
        // The unread counts of the last joined room written: where they
        // are in a body of one room, which members share.
        var unread = ""
        var unreadRoom = ""
        let now = clock.now.milliseconds
        for (roomID, member) in state.directory.rooms(of: session.userID).sorted(by: { $0.roomID < $1.roomID }) {
            guard let room = state.directory.room(roomID) else { continue }
            // Seen by the token when written before its state offset.
            let membershipChanged = since.map { member.stateOffset >= $0.state } ?? true
            let partition = Int(state.partition(ofRoom: roomID))
            switch member.membership {
            case "join":
                if membershipChanged {
                    let sections = roomSections(session, roomID, since: nil, now: now)
                    unread = try unreadJSON(session, roomID, room, end: position.timeline[partition], fetched: fetched)
                    unreadRoom = roomID
                    joined.append(try fullRoom(query, roomID, room, end: position.timeline[partition], sections: sections, unread: unread, fetched: fetched, senders: &senders))
                } else if let since {
                    let timeline = try timelineDelta(query, roomID, from: since.timeline[partition], to: position.timeline[partition], cacheEpoch: cacheEpoch, fetched: fetched, senders: &senders)
                    let sections = roomSections(session, roomID, since: since, now: now)
                    if timeline != nil || sections.changed {
                        let events = timeline ?? "{\"events\":[],\"limited\":false}"
                        unread = try unreadJSON(session, roomID, room, end: position.timeline[partition], fetched: fetched)
                        unreadRoom = roomID
                        joined.append("\(JSONText.string(roomID)):{\"timeline\":\(events),\"state\":{\"events\":[]},\"ephemeral\":\(sections.ephemeral),\"account_data\":\(sections.accountData),\(summary(room)),\(unread)}")
                    }
                }
            case "invite" where membershipChanged:
                let stripped = room.state.values.filter { ["m.room.create", "m.room.name", "m.room.join_rules", "m.room.member"].contains($0.type) && ($0.type != "m.room.member" || $0.stateKey == session.userID) }
                    .compactMap(Self.stripped)
                invited.append("\(JSONText.string(roomID)):{\"invite_state\":{\"events\":[\(stripped.joined(separator: ","))]}}")
            case "leave", "ban":
                if membershipChanged && since != nil {
                    left.append("\(JSONText.string(roomID)):{\"timeline\":{\"events\":[]},\"state\":{\"events\":[]}}")
                }
            default:
                break
            }
        }
        let accountData = globalAccountData(session, since: since?.userData)
        // To-device messages below the token the device synced with are
        // acknowledged (dropped); the rest up to this answer's position go out.
        let toDevice = state.toDevice.take(user: session.userID, device: session.deviceID, acknowledged: query.since?.toDevice, upTo: position.toDevice)
        let devicesChanged = since.map { deviceListChanges(session, since: $0) } ?? []
        let devicesLeft = since.map { deviceListsLeft(session, since: $0, position: position) } ?? []
        let changed = !joined.isEmpty || !invited.isEmpty || !left.isEmpty || !accountData.isEmpty || !toDevice.isEmpty || !devicesChanged.isEmpty || !devicesLeft.isEmpty
        let head = "{\"next_batch\":\(JSONText.string(token)),\"rooms\":{\"join\":{"
        var unreadAt: (roomID: String, range: Range<Int>)?
        if joined.count == 1, invited.isEmpty, left.isEmpty, let only = joined.first {
            // The room's text ends with its counts and a brace.
            let offset = head.utf8.count + only.utf8.count - unread.utf8.count - 1
            unreadAt = (unreadRoom, offset..<offset + unread.utf8.count)
        }
        let body = head + "\(joined.joined(separator: ","))},\"invite\":{\(invited.joined(separator: ","))},\"leave\":{\(left.joined(separator: ","))}},"
            + "\"account_data\":{\"events\":[\(accountData.joined(separator: ","))]},\"presence\":{\"events\":[]},\"to_device\":{\"events\":[\(toDevice.joined(separator: ","))]},"
            + "\"device_lists\":{\"changed\":[\(devicesChanged.map(JSONText.string).joined(separator: ","))],\"left\":[\(devicesLeft.map(JSONText.string).joined(separator: ","))]},"
            + keyCounts + "}"
        return SharedAnswers.Piece(json: body, changed: changed, senders: senders, unread: unreadAt)
    }

    /// Users sharing a room with the session's user whose devices changed
    /// since the token, and the members of rooms joined since it (their
    /// devices are new to this user), sorted.
    func deviceListChanges(_ session: Session, since: SyncPosition) -> [String] {
        var changed = state.keys.keysChanged(since: since.userData)
        if !changed.isEmpty { changed.formIntersection(state.sharingRooms(with: session.userID)) }
        for (roomID, member) in state.directory.rooms(of: session.userID) where member.membership == "join" && member.stateOffset >= since.state {
            changed.formUnion(state.directory.members(of: roomID, in: ["join"]).filter { !state.keys.deviceKeys(of: $0).isEmpty })
        }
        return changed.sorted()
    }

    /// Users who since the token stopped sharing every room with the
    /// session's user (`device_lists.left`): members who left a room the
    /// user is in, and the members of a room the user left, unless another
    /// room still joins them. Their device changes no longer reach the
    /// user, and an encrypting client stops tracking their devices. Only
    /// looked for when membership moved since the token (`position.state`),
    /// so a sync in a quiet large room does not walk its members.
    func deviceListsLeft(_ session: Session, since: SyncPosition, position: SyncPosition) -> [String] {
        guard since.state < position.state else { return [] }
        var candidates: Set<String> = []
        for (roomID, member) in state.directory.rooms(of: session.userID) {
            guard let room = state.directory.room(roomID) else { continue }
            if member.membership == "join" {
                for (user, other) in room.members where other.membership != "join" && other.stateOffset >= since.state {
                    candidates.insert(user)
                }
            } else if member.stateOffset >= since.state {
                candidates.formUnion(room.members(in: ["join"]))
            }
        }
        candidates.remove(session.userID)
        guard !candidates.isEmpty else { return [] }
        return candidates.subtracting(state.sharingRooms(with: session.userID)).sorted()
    }

    /// The user's global account data events written since `since` (all,
    /// with the push rules, on a first sync).
    func globalAccountData(_ session: Session, since: Int64?) -> [String] {
        var entries = state.userData.accountData(user: session.userID, since: since)
        if since == nil, entries[PushRules.accountDataType] == nil {
            entries[PushRules.accountDataType] = UserDataTable.Entry(json: MatrixJSON.encode(pushRules(session).accountData), offset: 0)
        }
        return entries.sorted { $0.key < $1.key }.map { "{\"type\":\(JSONText.string($0.key)),\"content\":\($0.value.json)}" }
    }

    func summary(_ room: RoomDirectory.Room) -> String { room.summary }

    /// A joined room's ephemeral events (read receipts, who is typing) and
    /// the user's account data for it (their fully-read marker and what
    /// they stored), changed since `since` (all with nil).
    func roomSections(_ session: Session, _ roomID: String, since: SyncPosition?, now: Int64) -> (ephemeral: String, accountData: String, changed: Bool) {
        let changed = state.markers.since(roomID: roomID, offset: since?.markers)
        var receipts: [String: ReceiptEvent.Receipts] = [:]
        for entry in changed {
            guard let eventID = entry.markers["m.read"] else { continue }
            receipts[eventID, default: ReceiptEvent.Receipts(read: [:])].read[entry.user] = ReceiptEvent.Read(ts: entry.timestamp)
        }
        var ephemeral: [String] = receipts.isEmpty ? [] : [MatrixJSON.encode(ReceiptEvent(content: receipts))]
        if let typing = state.typing.typing(room: roomID, since: since?.typing, now: now), since == nil ? !typing.isEmpty : true {
            ephemeral.append("{\"type\":\"m.typing\",\"content\":{\"user_ids\":[\(typing.map(JSONText.string).joined(separator: ","))]}}")
        }
        var accountData: [String] = []
        if let fullyRead = changed.first(where: { $0.user == session.userID })?.markers["m.fully_read"] {
            accountData.append(MatrixJSON.encode(FullyReadEvent(content: .init(eventID: fullyRead))))
        }
        for (type, entry) in state.userData.roomAccountData(user: session.userID, room: roomID, since: since?.userData).sorted(by: { $0.key < $1.key }) {
            accountData.append("{\"type\":\(JSONText.string(type)),\"content\":\(entry.json)}")
        }
        return ("{\"events\":[\(ephemeral.joined(separator: ","))]}", "{\"events\":[\(accountData.joined(separator: ","))]}", !ephemeral.isEmpty || !accountData.isEmpty)
    }

    static func stripped(_ event: RoomEvent) -> String? {
        guard let content = content(event.json) else { return nil }
        return MatrixJSON.encode(StrippedStateEvent(type: event.type, stateKey: event.stateKey ?? "", sender: event.sender, content: content))
    }

    /// A room the user has just joined (or any room on a first sync): its
    /// current state and its latest events.
    func fullRoom(_ query: SyncQuery, _ roomID: String, _ room: RoomDirectory.Room, end: Int64, sections: (ephemeral: String, accountData: String, changed: Bool),
                  unread: String, fetched: [String: [RoomEvent]], senders: inout Set<String>) throws -> String {
        let limit = query.timelineLimit
        var events: [RoomEvent]
        var limited = false
        if let cached = state.cache.newest(roomID: roomID, upTo: end, limit: limit) {
            (events, limited) = cached
        } else {
            let need = NeedHistory(roomID: roomID, end: end)
            guard let page = fetched[need.key] else { throw need }
            events = page
            limited = events.count >= limit
        }
        if events.count > limit {
            events = Array(events.suffix(limit))
            limited = true
        }
        var stateEvents = state.directory.stateEventsJSON(roomID: roomID, room)
        if query.lazyMembers {
            // Only the members the timeline shows, and the user.
            let needed = Set(events.map(\.sender)).union([query.session.userID])
            stateEvents = room.state.values.filter { $0.type != "m.room.member" || needed.contains($0.stateKey ?? "") }
                .sorted { $0.eventID < $1.eventID }.map(\.json).joined(separator: ",")
        }
        let prev = "o\(events.first?.offset ?? end)"
        return "\(JSONText.string(roomID)):{\"timeline\":{\"events\":[\(timelineJSON(events, query.session, senders: &senders))],\"limited\":\(limited),\"prev_batch\":\"\(prev)\"},"
            + "\"state\":{\"events\":[\(stateEvents)]},\"ephemeral\":\(sections.ephemeral),\"account_data\":\(sections.accountData),\(summary(room)),\(unread)}"
    }

    /// Events as a timeline's inside, the session's own sends with their
    /// transaction ids; `senders` collects the devices whose sends are in it.
    func timelineJSON(_ events: [RoomEvent], _ session: Session, senders: inout Set<String>) -> String {
        let own = session.devicePrefix
        return events.map { event in
            if let transaction = event.transaction, let device = Session.devicePrefix(ofTransaction: transaction) { senders.insert(device) }
            var event = event
            event.json = bundled(event, viewer: nil)
            return event.json(forDevice: own) ?? event.json
        }.joined(separator: ",")
    }

    /// The room's newest events below `end`, oldest first, from the index.
    func history(_ roomID: String, upTo end: Int64, limit: Int) async throws -> [RoomEvent] {
        let page = try await link.history(topic: ChatTopics.conversations, conversation: Array(roomID.utf8), position: .latest, limit: Int32(limit), maxOffset: end)
        let partition = state.partition(ofRoom: roomID)
        return page.messages.compactMap { record in
            guard var event = ChatState.clientEvent(roomID: roomID, partition: partition, record: record) else { return nil }
            event.json = prunedIfRedacted(event)
            return event
        }
    }

    /// The room's events in [from, to), as a serialised timeline object;
    /// nil when there are none. Shared by every member syncing from the same
    /// position: serialised once (but for the device that sent one of them,
    /// which sees its transaction id). The key carries the cache's epoch: a
    /// delta made from a cache that has since restarted is never served.
    func timelineDelta(_ query: SyncQuery, _ roomID: String, from: Int64, to: Int64, cacheEpoch: UInt64, fetched: [String: [RoomEvent]], senders: inout Set<String>) throws -> String? {
        guard from < to else { return nil }
        let own = query.session.devicePrefix
        let key = "\(cacheEpoch)|\(roomID)|\(from)|\(to)|\(query.timelineLimit)"
        if let shared = state.shared.delta(key), !shared.senders.contains(own) {
            senders.formUnion(shared.senders)
            return shared.json.isEmpty ? nil : shared.json
        }
        var events: [RoomEvent]
        var limited = false
        if let cached = state.cache.events(roomID: roomID, after: from, upTo: to), cached.complete {
            events = cached.events
        } else {
            let need = NeedHistory(roomID: roomID, end: to)
            guard let page = fetched[need.key] else { throw need }
            events = page.filter { $0.offset >= from }
            limited = events.count >= query.timelineLimit
        }
        if events.count > query.timelineLimit {
            events = Array(events.suffix(query.timelineLimit))
            limited = true
        }
        var inDelta: Set<String> = []
        let json = events.isEmpty ? "" : "{\"events\":[\(timelineJSON(events, query.session, senders: &inDelta))],\"limited\":\(limited),\"prev_batch\":\"o\(events.first!.offset)\"}"
        senders.formUnion(inDelta)
        if !inDelta.contains(own) { state.shared.storeDelta(key, SharedAnswers.Piece(json: json, senders: inDelta)) }
        return json.isEmpty ? nil : json
    }
}
