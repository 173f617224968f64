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
        var key: String { "\(roomID)|\(end)" }
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
        return SyncQuery(session: session, since: since, fullState: query.get("full_state") == "true", deadline: clock.now + timeout)
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
        let shared = since.flatMap { sharedAnswerKey(query.session, since: $0, position: position, token: token, cacheEpoch: cacheEpoch) }
        let (body, changed): (String, Bool)
        if let shared, let answer = state.shared.answer(shared) {
            (body, changed) = answer
        } else {
            (body, changed) = try syncBody(query.session, since: since, position: position, token: token, cacheEpoch: cacheEpoch, fetched: fetched)
            if let shared { state.shared.storeAnswer(shared, (body, changed)) }
        }
        if changed || query.since == nil || now >= query.deadline {
            return .answer(body, shared: shared)
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
                fetched[need.key] = try await history(need.roomID, upTo: need.end, limit: Self.timelineLimit)
            }
        }
    }

    /// The key of a sync body that every member of the user's room gets
    /// alike: the user is in that one room, joined before `since`, and no
    /// read marker was written since (markers differ per user). The members
    /// of a large room answered for one message all sync again from the
    /// same position, and get the same bytes for the next; nil otherwise.
    func sharedAnswerKey(_ session: Session, since: SyncPosition, position: SyncPosition, token: String, cacheEpoch: UInt64) -> String? {
        guard since.markers == position.markers else { return nil }
        let rooms = state.directory.rooms(of: session.userID)
        guard rooms.count == 1, let only = rooms.first, only.member.membership == "join", only.member.stateOffset < since.state else { return nil }
        let partition = Int(state.partition(ofRoom: only.roomID))
        return "\(cacheEpoch)|\(only.roomID)|\(since.timeline[partition])|\(token)"
    }

    func syncBody(_ session: Session, since: SyncPosition?, position: SyncPosition, token: String, cacheEpoch: UInt64, fetched: [String: [RoomEvent]]) throws -> (String, Bool) {
        var joined: [String] = []
        var invited: [String] = []
        var left: [String] = []
        for (roomID, member) in state.directory.rooms(of: session.userID).sorted(by: { $0.roomID < $1.roomID }) {
            guard let room = state.directory.room(roomID) else { continue }
            // Seen by the token when written before its state offset.
            let membershipChanged = since.map { member.stateOffset >= $0.state } ?? true
            let partition = Int(state.partition(ofRoom: roomID))
            switch member.membership {
            case "join":
                if membershipChanged {
                    let markers = markerSections(session, roomID, since: nil)
                    joined.append(try fullRoom(roomID, room, end: position.timeline[partition], markers: markers, fetched: fetched))
                } else if let since {
                    let timeline = try timelineDelta(roomID, from: since.timeline[partition], to: position.timeline[partition], cacheEpoch: cacheEpoch, fetched: fetched)
                    let markers = markerSections(session, roomID, since: since.markers)
                    if timeline != nil || markers.changed {
                        let events = timeline ?? "{\"events\":[],\"limited\":false}"
                        joined.append("\(JSONText.string(roomID)):{\"timeline\":\(events),\"state\":{\"events\":[]},\"ephemeral\":\(markers.ephemeral),\"account_data\":\(markers.accountData),\(summary(room)),\"unread_notifications\":{\"notification_count\":0,\"highlight_count\":0}}")
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
        let changed = !joined.isEmpty || !invited.isEmpty || !left.isEmpty
        let body = "{\"next_batch\":\(JSONText.string(token)),\"rooms\":{\"join\":{\(joined.joined(separator: ","))},\"invite\":{\(invited.joined(separator: ","))},\"leave\":{\(left.joined(separator: ","))}},"
            + "\"account_data\":{\"events\":[]},\"presence\":{\"events\":[]},\"to_device\":{\"events\":[]},\"device_lists\":{\"changed\":[],\"left\":[]},\"device_one_time_keys_count\":{}}"
        return (body, changed)
    }

    func summary(_ room: RoomDirectory.Room) -> String { room.summary }

    /// The room's read receipts (`m.receipt`, everyone's `m.read`) and the
    /// user's own fully-read marker, written since `since` (all with nil).
    func markerSections(_ session: Session, _ roomID: String, since: Int64?) -> (ephemeral: String, accountData: String, changed: Bool) {
        let changed = state.markers.since(roomID: roomID, offset: since)
        var receipts: [String: ReceiptEvent.Receipts] = [:]
        for entry in changed {
            guard let eventID = entry.markers["m.read"] else { continue }
            receipts[eventID, default: ReceiptEvent.Receipts(read: [:])].read[entry.user] = ReceiptEvent.Read(ts: entry.timestamp)
        }
        let ephemeral = receipts.isEmpty ? "{\"events\":[]}" : "{\"events\":[\(MatrixJSON.encode(ReceiptEvent(content: receipts)))]}"
        var accountData = "{\"events\":[]}"
        let fullyRead = changed.first(where: { $0.user == session.userID })?.markers["m.fully_read"]
        if let fullyRead {
            accountData = "{\"events\":[\(MatrixJSON.encode(FullyReadEvent(content: .init(eventID: fullyRead))))]}"
        }
        return (ephemeral, accountData, !receipts.isEmpty || fullyRead != nil)
    }

    static func stripped(_ event: RoomEvent) -> String? {
        guard let content = content(event.json) else { return nil }
        return MatrixJSON.encode(StrippedStateEvent(type: event.type, stateKey: event.stateKey ?? "", sender: event.sender, content: content))
    }

    /// A room the user has just joined (or any room on a first sync): its
    /// current state and its latest events.
    func fullRoom(_ roomID: String, _ room: RoomDirectory.Room, end: Int64, markers: (ephemeral: String, accountData: String, changed: Bool), fetched: [String: [RoomEvent]]) throws -> String {
        let stateEvents = state.directory.stateEventsJSON(roomID: roomID, room)
        var events: [RoomEvent]
        var limited = false
        if let cached = state.cache.newest(roomID: roomID, upTo: end, limit: Self.timelineLimit) {
            (events, limited) = cached
        } else {
            let need = NeedHistory(roomID: roomID, end: end)
            guard let page = fetched[need.key] else { throw need }
            events = page
            limited = events.count == Self.timelineLimit
        }
        if events.count > Self.timelineLimit {
            events = Array(events.suffix(Self.timelineLimit))
            limited = true
        }
        let prev = "o\(events.first?.offset ?? end)"
        return "\(JSONText.string(roomID)):{\"timeline\":{\"events\":[\(events.map(\.json).joined(separator: ","))],\"limited\":\(limited),\"prev_batch\":\"\(prev)\"},"
            + "\"state\":{\"events\":[\(stateEvents)]},\"ephemeral\":\(markers.ephemeral),\"account_data\":\(markers.accountData),\(summary(room)),\"unread_notifications\":{\"notification_count\":0,\"highlight_count\":0}}"
    }

    /// The room's newest events below `end`, oldest first, from the index.
    func history(_ roomID: String, upTo end: Int64, limit: Int) async throws -> [RoomEvent] {
        let page = try await link.history(topic: ChatTopics.conversations, conversation: Array(roomID.utf8), position: .latest, limit: Int32(limit), maxOffset: end)
        let partition = state.partition(ofRoom: roomID)
        return page.messages.compactMap { ChatState.clientEvent(roomID: roomID, partition: partition, record: $0) }
    }

    /// The room's events in [from, to), as a serialised timeline object;
    /// nil when there are none. Shared by every member syncing from the same
    /// position: serialised once. The key carries the cache's epoch: a delta
    /// made from a cache that has since restarted is never served.
    func timelineDelta(_ roomID: String, from: Int64, to: Int64, cacheEpoch: UInt64, fetched: [String: [RoomEvent]]) throws -> String? {
        guard from < to else { return nil }
        let key = "\(cacheEpoch)|\(roomID)|\(from)|\(to)"
        if let shared = state.shared.delta(key) { return shared.isEmpty ? nil : shared }
        var events: [RoomEvent]
        var limited = false
        if let cached = state.cache.events(roomID: roomID, after: from, upTo: to), cached.complete {
            events = cached.events
        } else {
            let need = NeedHistory(roomID: roomID, end: to)
            guard let page = fetched[need.key] else { throw need }
            events = page.filter { $0.offset >= from }
            limited = events.count == Self.timelineLimit
        }
        if events.count > Self.timelineLimit {
            events = Array(events.suffix(Self.timelineLimit))
            limited = true
        }
        let json = events.isEmpty ? "" : "{\"events\":[\(events.map(\.json).joined(separator: ","))],\"limited\":\(limited),\"prev_batch\":\"o\(events.first!.offset)\"}"
        state.shared.storeDelta(key, json)
        return json.isEmpty ? nil : json
    }
}
