import ChatWire
import Foundation
import Hummingbird
import HummingbirdCore
import KafkaWire
import NIOCore
import Synchronization

/// Redacted events, as chat-redactions holds them: event id to the
/// redaction that removed its content. Written by that topic's tail.
final class RedactionTable: Sendable {
    private let redactions = Mutex<[String: String]>([:])

    func set(_ eventID: String, redaction: String) { redactions.withLock { $0[eventID] = redaction } }

    func redaction(of eventID: String) -> String? { redactions.withLock { $0[eventID] } }
}

// Rooms beyond messages: state with power levels, members, moderation,
// redactions, single events with their context, and relations.
extension MatrixAPI {
    func addStateRoutes(_ routes: RouterGroup<GatewayRequestContext>) {
        routes.get("rooms/:roomId/state") { request, context in
            let (session, roomID, room) = try joinedRoom(request, context)
            let events = room.state.values.sorted { $0.eventID < $1.eventID }.map { served($0, roomID: roomID, viewer: session.userID) }
            return Self.ok("[\(events.joined(separator: ","))]")
        }
        for path in ["rooms/:roomId/state/:eventType", "rooms/:roomId/state/:eventType/:stateKey"] {
            routes.get(RouterPath(path)) { request, context in
                let (_, _, room) = try joinedRoom(request, context)
                let type = parameter(context, "eventType")
                let key = context.parameters.get("stateKey").map(Self.pathParameter) ?? ""
                guard let event = room.stateEvent(type, key), let content = Self.content(event.json) else {
                    throw MatrixError(.notFound, "M_NOT_FOUND", "no \(type) state with that key")
                }
                return Self.ok(content)
            }
            routes.put(RouterPath(path)) { request, context in try await putState(request, context) }
        }
        routes.get("rooms/:roomId/members") { request, context in
            let (session, roomID, room) = try joinedRoom(request, context)
            let query = request.uri.queryParameters
            let only: String? = query.get("membership").map { String($0) }
            let not: String? = query.get("not_membership").map { String($0) }
            let members = room.state.values.filter { $0.type == "m.room.member" && (only == nil || $0.membership == only) && (not == nil || $0.membership != not) }
                .sorted { ($0.stateKey ?? "") < ($1.stateKey ?? "") }.map { served($0, roomID: roomID, viewer: session.userID) }
            return Self.ok("{\"chunk\":[\(members.joined(separator: ","))]}")
        }
        for action in ["kick", "ban", "unban"] {
            routes.post(RouterPath("rooms/:roomId/\(action)")) { request, context in try await moderate(action, request, context) }
        }
        routes.put("rooms/:roomId/redact/:eventId/:txnId") { request, context in try await redact(request, context) }
        routes.post("rooms/:roomId/redact/:eventId") { request, context in try await redact(request, context) }
        routes.get("rooms/:roomId/event/:eventId") { request, context in
            let (session, roomID, _) = try joinedRoom(request, context)
            guard let event = try await event(roomID, parameter(context, "eventId")) else { throw MatrixError(.notFound, "M_NOT_FOUND", "no such event") }
            return Self.ok(served(event.event, roomID: roomID, viewer: session.userID))
        }
        routes.get("rooms/:roomId/context/:eventId") { request, context in try await eventContext(request, context) }
        for path in ["rooms/:roomId/relations/:eventId", "rooms/:roomId/relations/:eventId/:relType", "rooms/:roomId/relations/:eventId/:relType/:eventType"] {
            routes.get(RouterPath(path)) { request, context in try await relations(request, context) }
        }
    }

    /// The session, the room and its state, for a joined member only.
    func joinedRoom(_ request: Request, _ context: GatewayRequestContext) throws -> (Session, String, RoomDirectory.Room) {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        try requireJoined(session, roomID)
        guard let room = state.directory.room(roomID) else { throw MatrixError.forbidden() }
        return (session, roomID, room)
    }

    /// A member's content for joining: their profile's name and avatar.
    func memberContent(_ userID: String, membership: String = "join") -> JSONValue {
        var content: [String: JSONValue] = ["membership": .string(membership)]
        for (key, value) in (try? profile(userID)) ?? ["displayname": .string(Self.localpart(of: userID))] { content[key] = value }
        return .object(content)
    }

    // MARK: State

    func putState(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (session, roomID, room) = try joinedRoom(request, context)
        let type = parameter(context, "eventType")
        let key = context.parameters.get("stateKey").map(Self.pathParameter) ?? ""
        let contentText = try Self.contentText(try await collectBody(request))
        guard let content = JSONValue(parsing: contentText.utf8) else { throw MatrixError(.badRequest, "M_NOT_JSON", "the content is not JSON") }
        guard !type.isEmpty, type.utf8.count <= 255, key.utf8.count <= 255 else { throw MatrixError(.badRequest, "M_INVALID_PARAM", "an event type and state key are at most 255 bytes") }
        let levels = room.levels
        switch type {
        case "m.room.create":
            throw MatrixError.forbidden("a room's creation cannot be changed")
        case "m.room.member":
            // Membership moves through invite, join, leave, kick and ban;
            // here only a member's own profile in the room.
            guard key == session.userID, content["membership"]?.string == "join" else {
                throw MatrixError.forbidden("membership changes go through /invite, /join, /leave, /kick and /ban")
            }
        default:
            break
        }
        let own = levels.level(of: session.userID)
        let needed = levels.required(type, state: true)
        guard own >= needed else { throw MatrixError.forbidden("\(type) needs power level \(needed); yours is \(own)") }
        if type == "m.room.power_levels" {
            if let refusal = levels.refusal(of: PowerLevels(content: content), by: session.userID) { throw MatrixError.forbidden(refusal) }
        }
        let eventID = try await appendState(roomID: roomID, type: type, sender: session.userID, content: content, stateKey: key)
        return Self.ok(["event_id": .string(eventID)] as JSONValue)
    }

    /// kick, ban and unban: the level the room asks for, and a target below one's own.
    func moderate(_ action: String, _ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (session, roomID, room) = try joinedRoom(request, context)
        let body = try await body([String: JSONValue].self, request)
        guard let target = body["user_id"]?.string else { throw MatrixError(.badRequest, "M_MISSING_PARAM", "user_id is required") }
        let levels = room.levels
        let own = levels.level(of: session.userID)
        let needed = action == "kick" ? levels.kick : levels.ban
        guard own >= needed else { throw MatrixError.forbidden("\(action) needs power level \(needed); yours is \(own)") }
        guard target == session.userID || levels.level(of: target) < own else { throw MatrixError.forbidden("\(target) is at or above your level") }
        let current = room.members[target]?.membership
        let membership: String
        switch action {
        case "kick":
            guard current == "join" || current == "invite" else { throw MatrixError.forbidden("\(target) is not in the room") }
            membership = "leave"
        case "ban":
            membership = "ban"
        default:
            guard current == "ban" else { throw MatrixError.forbidden("\(target) is not banned") }
            membership = "leave"
        }
        var content: [String: JSONValue] = ["membership": .string(membership)]
        if let reason = body["reason"]?.string { content["reason"] = .string(reason) }
        try await appendState(roomID: roomID, type: "m.room.member", sender: session.userID, content: .object(content), stateKey: target)
        return Self.ok("{}")
    }

    // MARK: Single events

    /// A room's event by id (`$partition_offset`), from the cache or the
    /// conversation index, with its sequence.
    func event(_ roomID: String, _ eventID: String) async throws -> (event: RoomEvent, sequence: UInt64)? {
        let parts = eventID.dropFirst().split(separator: "_")
        guard eventID.hasPrefix("$"), parts.count == 2, let partition = Int32(parts[0]), let offset = Int64(parts[1]),
              partition == state.partition(ofRoom: roomID) else { return nil }
        if let cached = state.cache.event(roomID: roomID, offset: offset), let sequence = cached.sequence { return (cached, sequence) }
        let page = try await link.history(topic: ChatTopics.conversations, conversation: Array(roomID.utf8), position: .latest, limit: 1, maxOffset: offset + 1)
        guard let record = page.messages.last, record.offset == offset, let event = ChatState.clientEvent(roomID: roomID, partition: partition, record: record) else { return nil }
        return (event, record.sequence)
    }

    /// An event as clients get it: pruned, with the redaction that pruned
    /// it, if it was redacted.
    /// An event as served outside `/sync`: pruned when redacted, else with
    /// its aggregations bundled for `viewer` (`bundled`).
    func served(_ event: RoomEvent, roomID: String, viewer: String) -> String {
        state.redactions.redaction(of: event.eventID) == nil ? bundled(event, viewer: viewer) : prunedIfRedacted(event)
    }

    /// An event pruned when redacted, as is otherwise; a sync's timeline
    /// bundles aggregations when it is serialised (`timelineJSON`).
    func prunedIfRedacted(_ event: RoomEvent) -> String {
        guard let redaction = state.redactions.redaction(of: event.eventID) else { return event.json }
        return Self.pruned(event.json, redactedBecause: redaction) ?? event.json
    }

    /// An event with `unsigned.m.relations`, when something relates to it:
    /// its newest valid edit whole (`m.replace`: same sender and type, not
    /// redacted, of an event that is not state), its thread's summary
    /// (`m.thread`, for a `viewer` only: whether they took part differs per
    /// member, and a sync's timeline is serialised once for all of them),
    /// the events referencing it (`m.reference`). A redacted event bundles
    /// nothing; callers that prune have done so already.
    func bundled(_ event: RoomEvent, viewer: String?) -> String {
        guard let aggregation = state.relations.aggregation(of: event.eventID, in: event.roomID), state.redactions.redaction(of: event.eventID) == nil else { return event.json }
        var members: [String] = []
        let edit = aggregation.edits
            .filter { $0.sender == event.sender && $0.type == event.type && event.stateKey == nil && state.redactions.redaction(of: $0.eventID) == nil }
            .max { $1.isNewer(than: $0) }
        if let edit { members.append("\"m.replace\":\(edit.json)") }
        if let viewer, let newest = aggregation.threadNewest {
            let latest = state.redactions.redaction(of: newest.eventID).flatMap { Self.pruned(newest.json, redactedBecause: $0) } ?? newest.json
            let participated = viewer == event.sender || aggregation.threadParticipants.contains(viewer)
            members.append("\"m.thread\":{\"latest_event\":\(latest),\"count\":\(aggregation.threadEvents.count),\"current_user_participated\":\(participated)}")
        }
        if !aggregation.references.isEmpty {
            let chunk = aggregation.references.map { "{\"event_id\":\(JSONText.string($0))}" }.joined(separator: ",")
            members.append("\"m.reference\":{\"chunk\":[\(chunk)]}")
        }
        guard !members.isEmpty else { return event.json }
        return event.json(addingUnsigned: "\"m.relations\":{\(members.joined(separator: ","))}")
    }

    /// The specification's redaction algorithm (room versions 10 and 11):
    /// only the keys that keep the room working stay in `content`.
    static func pruned(_ json: String, redactedBecause redaction: String) -> String? {
        guard case .object(var event)? = JSONValue(parsing: json.utf8) else { return nil }
        let type = event["type"]?.string ?? ""
        let kept: Set<String> = switch type {
        case "m.room.member": ["membership", "join_authorised_via_users_server"]
        case "m.room.create": ["creator", "room_version", "m.federate", "predecessor", "type"]
        case "m.room.join_rules": ["join_rule", "allow"]
        case "m.room.power_levels": ["ban", "events", "events_default", "invite", "kick", "redact", "state_default", "users", "users_default"]
        case "m.room.history_visibility": ["history_visibility"]
        case "m.room.redaction": ["redacts"]
        default: []
        }
        event["content"] = .object((Self.object(event["content"]) ?? [:]).filter { kept.contains($0.key) })
        var unsigned = Self.object(event["unsigned"]) ?? [:]
        unsigned["redacted_because"] = JSONValue(parsing: redaction.utf8)
        event["unsigned"] = .object(unsigned)
        return MatrixJSON.encode(JSONValue.object(event))
    }

    func redact(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (session, roomID, room) = try joinedRoom(request, context)
        let target = parameter(context, "eventId")
        let body = try await body([String: JSONValue].self, request)
        guard let original = try await event(roomID, target) else { throw MatrixError(.notFound, "M_NOT_FOUND", "no such event in this room") }
        let levels = room.levels
        guard original.event.sender == session.userID || levels.level(of: session.userID) >= levels.redact else {
            throw MatrixError.forbidden("redacting another's event needs power level \(levels.redact)")
        }
        if let done = state.redactions.redaction(of: target).flatMap({ JSONValue(parsing: $0.utf8)?.members })?["event_id"] {
            return Self.ok(["event_id": done] as JSONValue)
        }
        var content: [String: JSONValue] = ["redacts": .string(target)]
        if let reason = body["reason"]?.string { content["reason"] = .string(reason) }
        // In the timeline (clients prune what they hold), then in the
        // registry every gateway serves pruned events from.
        let value = MatrixJSON.encode(["type": "m.room.redaction", "sender": .string(session.userID), "content": .object(content), "redacts": .string(target)] as JSONValue)
        let timestamp = Self.now
        let (partition, offset) = try await link.produce(topic: ChatTopics.conversations, key: Array(roomID.utf8), value: Array(value.utf8), timestamp: timestamp)
        let eventID = ChatState.eventID(partition: partition, offset: offset)
        guard let stored = ChatState.clientEvent(roomID: roomID, partition: partition, offset: offset, timestamp: timestamp, stored: Array(value.utf8)) else {
            throw MatrixError.storeUnavailable
        }
        let (registryPartition, registryOffset) = try await link.produce(topic: ChatTopics.redactions, key: Array(target.utf8), value: Array(stored.json.utf8), timestamp: timestamp)
        await state.waitApplied(topic: ChatTopics.redactions, partition: registryPartition, offset: registryOffset)
        return Self.ok(["event_id": .string(eventID)] as JSONValue)
    }

    /// `/context`: the event, some before and after it, and the room's state.
    func eventContext(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (session, roomID, room) = try joinedRoom(request, context)
        guard let (event, sequence) = try await event(roomID, parameter(context, "eventId")) else { throw MatrixError(.notFound, "M_NOT_FOUND", "no such event") }
        let limit = max(0, min(Int(request.uri.queryParameters.get("limit") ?? "") ?? 10, 100))
        let conversation = Array(roomID.utf8)
        let partition = state.partition(ofRoom: roomID)
        let before = limit / 2 == 0 ? [] : try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .before(sequence: sequence), limit: Int32(limit / 2)).messages
        let after = limit - limit / 2 == 0 ? [] : try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .after(sequence: sequence), limit: Int32(limit - limit / 2)).messages
        func list(_ records: [ConversationRecord]) -> String {
            records.compactMap { ChatState.clientEvent(roomID: roomID, partition: partition, record: $0) }.map { served($0, roomID: roomID, viewer: session.userID) }.joined(separator: ",")
        }
        let stateEvents = room.state.values.sorted { $0.eventID < $1.eventID }.map { served($0, roomID: roomID, viewer: session.userID) }.joined(separator: ",")
        let start = "q\(before.first?.sequence ?? sequence)"
        let end = "q\(after.last?.sequence ?? sequence)"
        return Self.ok("{\"event\":\(served(event, roomID: roomID, viewer: session.userID)),\"events_before\":[\(list(before.reversed()))],\"events_after\":[\(list(after))],"
            + "\"start\":\(JSONText.string(start)),\"end\":\(JSONText.string(end)),\"state\":[\(stateEvents)]}")
    }

    /// The most events one `/relations` page reads through.
    static let relationsScanMax = 2_000

    /// `/relations`: the room's events that relate to one (`m.relates_to`),
    /// newest first (`dir=b`, the default) or oldest first (`dir=f`), read
    /// from the room's history a page at a time. `from` and `to` are
    /// history tokens (`q<sequence>`, as `/messages` gives; `to` bounds
    /// the page); `next_batch` is where the next page begins, given when
    /// `limit` was reached or `relationsScanMax` events were read with
    /// history left.
    func relations(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (session, roomID, _) = try joinedRoom(request, context)
        let target = parameter(context, "eventId")
        let relType = context.parameters.get("relType").map(Self.pathParameter)
        let eventType = context.parameters.get("eventType").map(Self.pathParameter)
        let query = request.uri.queryParameters
        let limit = max(1, min(Int(query.get("limit") ?? "") ?? 50, 100))
        let direction = query.get("dir").map { String($0) } ?? "b"
        guard direction == "b" || direction == "f" else {
            throw MatrixError(.badRequest, "M_INVALID_PARAM", "dir must be b or f")
        }
        let forward = direction == "f"
        func sequence(_ token: String?) throws -> UInt64? {
            guard let token else { return nil }
            guard token.hasPrefix("q"), let sequence = UInt64(token.dropFirst()) else {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "\(token) is not a token of this room's history")
            }
            return sequence
        }
        let from = try sequence(query.get("from").map { String($0) })
        let to = try sequence(query.get("to").map { String($0) })
        let conversation = Array(roomID.utf8)
        let partition = state.partition(ofRoom: roomID)
        var found: [String] = []
        var next: UInt64? = nil
        var position: ConversationHistoryRequest.Position = .latest
        if forward {
            position = .after(sequence: from ?? 0)
        } else if let from {
            position = .before(sequence: from)
        }
        var scanned = 0
        scan: while true {
            let page = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: position, limit: 100)
            for record in forward ? page.messages : page.messages.reversed() {
                if let to, forward ? record.sequence >= to : record.sequence <= to { break scan }
                scanned += 1
                if let event = ChatState.clientEvent(roomID: roomID, partition: partition, record: record),
                   let relates = Self.content(event.json)?["m.relates_to"], relates["event_id"]?.string == target,
                   relType == nil || relates["rel_type"]?.string == relType, eventType == nil || event.type == eventType {
                    found.append(served(event, roomID: roomID, viewer: session.userID))
                    if found.count == limit {
                        next = record.sequence
                        break scan
                    }
                }
            }
            // A short page is the end of the history.
            guard page.messages.count == 100, let oldest = page.messages.first, let newest = page.messages.last else { break }
            let edge = forward ? newest.sequence : oldest.sequence
            if scanned >= Self.relationsScanMax {
                next = edge
                break
            }
            position = forward ? .after(sequence: edge) : .before(sequence: edge)
        }
        let batch = next.map { ",\"next_batch\":\(JSONText.string("q\($0)"))" } ?? ""
        return Self.ok("{\"chunk\":[\(found.joined(separator: ","))]\(batch)}")
    }
}
