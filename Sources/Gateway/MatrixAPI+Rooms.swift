import ChatWire
import Foundation
import Hummingbird
import HummingbirdCore
import KafkaWire
import Logging
import Metrics
import NIOCore

// createRoom, invite, join, leave, send, members and read markers.
extension MatrixAPI {
    /// Appends a state event to the room's timeline and to the room's
    /// state, read back before returning (so the next request sees the
    /// membership). A membership change goes to the fan-out's topic first.
    @discardableResult
    func appendState(roomID: String, type: String, sender: String, content: JSONValue, stateKey: String) async throws -> String {
        var event = StoredEvent(type: type, sender: sender, content: content, stateKey: stateKey)
        let timestamp = Self.now
        var headers: [RecordHeader] = []
        if type == "m.room.member", let membership = content["membership"]?.string {
            // The fan-out routes by this topic: written first, so the member
            // receives what follows their join. The event carries the change
            // too: the fan-out's replica of this topic may lag the
            // conversation's partition when another broker leads it.
            let change = MatrixJSON.encodeBytes(MembershipChange(member: stateKey, membership: membership))
            _ = try await link.produce(topic: ChatTopics.members, key: MembershipChange.key(room: roomID, member: stateKey), partitionKey: Array(roomID.utf8),
                                       value: change, timestamp: timestamp)
            headers.append(RecordHeader(key: MembershipChange.headerKey, value: change))
        }
        let (partition, offset) = try await link.produce(topic: ChatTopics.conversations, key: Array(roomID.utf8), value: MatrixJSON.encodeBytes(event),
                                                         headers: headers, timestamp: timestamp)
        let eventID = ChatState.eventID(partition: partition, offset: offset)
        event.eventID = eventID
        event.roomID = roomID
        event.originServerMs = timestamp
        let key = roomID + "\u{0}" + type + "\u{0}" + stateKey
        let (statePartition, stateOffset) = try await link.produce(topic: ChatTopics.state, key: Array(key.utf8), value: MatrixJSON.encodeBytes(event), timestamp: timestamp)
        await state.waitApplied(topic: ChatTopics.state, partition: statePartition, offset: stateOffset)
        return eventID
    }

    /// Appends a message to the room's timeline, its content as the client
    /// sent it. Messages reach syncs through the fan-out.
    func appendMessage(roomID: String, type: String, sender: String, contentText: String, transaction: String,
                       relation: (type: String, target: String)? = nil) async throws -> String {
        // Stored as the client sent it (already checked to be a JSON object),
        // in the same key order as a serialised event: serialising it again
        // was a fourteenth of the gateway's work in rooms of 2.
        let value = Self.messageValue(type: type, sender: sender, contentText: contentText)
        let timestamp = Self.now
        let (partition, offset) = try await link.produce(topic: ChatTopics.conversations, key: Array(roomID.utf8), value: Array(value.utf8),
                                                         headers: Self.transactionHeaders(transaction), timestamp: timestamp)
        let eventID = ChatState.eventID(partition: partition, offset: offset)
        if let relation, let event = ChatState.clientEvent(roomID: roomID, partition: partition, offset: offset, timestamp: timestamp, stored: Array(value.utf8)) {
            // After the event itself: a relation is never aggregated before
            // its event is stored. Waited for, so the sender's next request
            // sees it bundled on this gateway. A failure here does not fail
            // the send: the event is stored, and an error would make the
            // client send it again; the relation is then found through
            // `/relations` only.
            do {
                let (registryPartition, registryOffset) = try await link.produce(
                    topic: ChatTopics.relations, key: Array(eventID.utf8), value: Array(event.json.utf8),
                    headers: ChatState.relationHeaders(relType: relation.type, target: relation.target), timestamp: timestamp)
                await state.waitApplied(topic: ChatTopics.relations, partition: registryPartition, offset: registryOffset)
            } catch {
                logger.warning("a relation was not recorded for aggregation", metadata: ["event": "\(eventID)", "relatesTo": "\(relation.target)", "error": "\(error)"])
            }
        }
        return eventID
    }

    /// A message's record in `conversations`: its content as the client
    /// sent it (already checked to be a JSON object), in the key order of a
    /// serialised event.
    static func messageValue(type: String, sender: String, contentText: String) -> String {
        "{\"content\":\(contentText),\"sender\":\(JSONText.string(sender)),\"type\":\(JSONText.string(type))}"
    }

    /// The header that makes a send idempotent across a gateway's restart.
    static func transactionHeaders(_ transaction: String) -> [RecordHeader] {
        [RecordHeader(key: Array("txn".utf8), value: Array(transaction.utf8))]
    }

    func createRoom(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let body = try await body(CreateRoomRequest.self, request)
        let version = body.roomVersion ?? "10"
        guard ["10", "11"].contains(version) else {
            throw MatrixError(.badRequest, "M_UNSUPPORTED_ROOM_VERSION", "room versions 10 and 11 are supported")
        }
        let invites = body.invite ?? []
        for invitee in invites where state.credentials.account(userID(from: invitee))?.hash == nil {
            throw MatrixError(.badRequest, "M_INVALID_PARAM", "unknown user \(invitee)")
        }
        for event in body.initialState ?? [] {
            // Membership and the room's creation are the server's to write.
            guard !["m.room.member", "m.room.create", "m.room.power_levels"].contains(event.type), case .object = event.content else {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "initial_state cannot set \(event.type), and its content is an object")
            }
        }
        // An alias asked for is checked before anything is written.
        let alias = try body.roomAliasName.map { try checkedAlias("#\($0):\(server)") }
        if let alias, state.aliases.alias(alias) != nil { throw MatrixError(.badRequest, "M_ROOM_IN_USE", "\(alias) is taken") }
        let roomID = "!\(Secrets.opaque(18)):\(server)"
        // New here: no send of it was made before, nothing to recall.
        state.transactions.markRecalled(roomID)
        let creator = session.userID
        var create: [String: JSONValue] = ["room_version": .string(version), "m.federate": .bool(body.creationContent?["m.federate"]?.bool ?? true)]
        if version == "10" { create["creator"] = .string(creator) }
        try await appendState(roomID: roomID, type: "m.room.create", sender: creator, content: .object(create), stateKey: "")
        try await appendState(roomID: roomID, type: "m.room.member", sender: creator, content: memberContent(creator), stateKey: creator)
        let preset = body.preset ?? (body.visibility == "public" ? "public_chat" : "private_chat")
        var powerLevels: [String: JSONValue] = [
            "users": .object([creator: 100]), "users_default": 0, "events_default": 0, "state_default": 50,
            "invite": preset == "public_chat" ? 50 : 0, "kick": 50, "ban": 50, "redact": 50,
            "events": ["m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.canonical_alias": 50, "m.room.avatar": 50],
            "notifications": ["room": 50],
        ]
        for (key, value) in body.powerLevelContentOverride ?? [:] { powerLevels[key] = value }
        try await appendState(roomID: roomID, type: "m.room.power_levels", sender: creator, content: .object(powerLevels), stateKey: "")
        try await appendState(roomID: roomID, type: "m.room.join_rules", sender: creator, content: ["join_rule": preset == "public_chat" ? "public" : "invite"], stateKey: "")
        try await appendState(roomID: roomID, type: "m.room.history_visibility", sender: creator, content: ["history_visibility": "shared"], stateKey: "")
        try await appendState(roomID: roomID, type: "m.room.guest_access", sender: creator, content: ["guest_access": "forbidden"], stateKey: "")
        for event in body.initialState ?? [] {
            try await appendState(roomID: roomID, type: event.type, sender: creator, content: event.content, stateKey: event.stateKey ?? "")
        }
        if let name = body.name {
            try await appendState(roomID: roomID, type: "m.room.name", sender: creator, content: ["name": .string(name)], stateKey: "")
        }
        if let topic = body.topic {
            try await appendState(roomID: roomID, type: "m.room.topic", sender: creator, content: ["topic": .string(topic)], stateKey: "")
        }
        for invitee in invites {
            try await appendState(roomID: roomID, type: "m.room.member", sender: creator, content: ["membership": "invite"], stateKey: userID(from: invitee))
        }
        if let alias {
            try await claimAlias(alias, roomID: roomID, creator: creator)
            try await appendState(roomID: roomID, type: "m.room.canonical_alias", sender: creator, content: ["alias": .string(alias)], stateKey: "")
        }
        if body.visibility == "public" {
            try await writeDirectory("visibility\u{0}" + roomID, MatrixJSON.encode(["visibility": "public"] as JSONValue))
        }
        return Self.ok(RoomIDAnswer(roomID: roomID))
    }

    /// A user id's localpart (`alice` of `@alice:gov.example`): the display name until profiles exist.
    static func localpart(of userID: String) -> String {
        userID.dropFirst().split(separator: ":").first.map(String.init) ?? userID
    }

    /// The caller must be joined; anyone else learns nothing about the room.
    func requireJoined(_ session: Session, _ roomID: String) throws {
        guard state.directory.membership(of: session.userID, in: roomID) == "join" else { throw MatrixError.forbidden() }
    }

    func invite(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        try requireJoined(session, roomID)
        guard let invitee = try await body(InviteRequest.self, request).userID else { throw MatrixError(.badRequest, "M_MISSING_PARAM", "user_id is required") }
        guard state.credentials.account(invitee)?.hash != nil else { throw MatrixError(.notFound, "M_NOT_FOUND", "unknown user \(invitee)") }
        switch state.directory.membership(of: invitee, in: roomID) {
        case "join": throw MatrixError(.forbidden, "M_FORBIDDEN", "\(invitee) is already in the room")
        case "ban": throw MatrixError(.forbidden, "M_FORBIDDEN", "\(invitee) is banned from the room")
        case "invite": return Self.ok("{}")
        default: break
        }
        try await appendState(roomID: roomID, type: "m.room.member", sender: session.userID, content: ["membership": "invite"], stateKey: invitee)
        return Self.ok("{}")
    }

    func join(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        var roomID = parameter(context, "roomId")
        if roomID.hasPrefix("#") {
            guard let found = state.aliases.alias(roomID) else { throw MatrixError(.notFound, "M_NOT_FOUND", "no room has this alias") }
            roomID = found.roomID
        }
        let current = state.directory.membership(of: session.userID, in: roomID)
        if current != "join" {
            let rule = state.directory.room(roomID)?.state["m.room.join_rules\u{0}"].flatMap { Self.content($0.json)?["join_rule"]?.string }
            guard current == "invite" || (rule == "public" && current != "ban") else { throw MatrixError.forbidden("You are not invited to this room") }
            try await appendState(roomID: roomID, type: "m.room.member", sender: session.userID, content: memberContent(session.userID), stateKey: session.userID)
        }
        return Self.ok(RoomIDAnswer(roomID: roomID))
    }

    func leave(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        let current = state.directory.membership(of: session.userID, in: roomID)
        guard current == "join" || current == "invite" else { throw MatrixError.forbidden() }
        try await appendState(roomID: roomID, type: "m.room.member", sender: session.userID, content: ["membership": "leave"], stateKey: session.userID)
        return Self.ok("{}")
    }

    func send(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        let eventType = parameter(context, "eventType")
        let txnID = parameter(context, "txnId")
        try requireJoined(session, roomID)
        let body = try await collectBody(request)
        var plan = try planSend(session: session, roomID: roomID, eventType: eventType, txnID: txnID, body: body)
        if case .recall = plan {
            try await recallTransactions(roomID)
            plan = try planSend(session: session, roomID: roomID, eventType: eventType, txnID: txnID, body: body)
        }
        switch plan {
        case .answered(let answer):
            return Self.ok(answer)
        case .recall:
            throw MatrixError.storeUnavailable
        case .append(let message):
            let eventID = try await appendMessage(roomID: roomID, type: eventType, sender: session.userID, contentText: message.contentText,
                                                  transaction: message.transaction, relation: message.relation)
            state.transactions.remember(message.transaction, eventID: eventID)
            return Self.ok(Self.sendAnswer(eventID))
        }
    }

    /// A message to append, checked.
    struct OutgoingMessage: Sendable {
        /// The content as the client sent it, checked to be a JSON object.
        var contentText: String
        /// user|device|txnId: the same is the same event.
        var transaction: String
        /// An aggregated relation (`RelationsTable.aggregated`) in the
        /// content's `m.relates_to`: such a send takes the router's way,
        /// which records it in chat-relations too.
        var relation: (type: String, target: String)? = nil
    }

    enum SendPlan {
        /// A retry of a send already made: its answer.
        case answered(String)
        case append(OutgoingMessage)
        /// The room's latest sends are not known here yet (`TransactionMemory`).
        case recall
    }

    /// The number of a room's latest events read back for their transaction ids.
    static let recalledEventsMax: Int32 = 200

    /// Reads the room's latest sends back from the broker's index and
    /// remembers their transactions.
    func recallTransactions(_ roomID: String) async throws {
        let page = try await link.history(topic: ChatTopics.conversations, conversation: Array(roomID.utf8), position: .latest, limit: Self.recalledEventsMax)
        let partition = state.partition(ofRoom: roomID)
        for record in page.messages {
            if let transaction = ChatState.transaction(record.headers) {
                state.transactions.remember(transaction, eventID: ChatState.eventID(partition: partition, offset: record.offset))
            }
        }
        state.transactions.markRecalled(roomID)
    }

    /// Checks a message send of a joined member (after its body was read,
    /// here and in the event loop's fast path): the body, the path's
    /// parameters, and whether this transaction was sent before.
    func planSend(session: Session, roomID: String, eventType: String, txnID: String, body: ByteBuffer) throws -> SendPlan {
        let contentText = try Self.contentText(body)
        guard !eventType.isEmpty, eventType.utf8.count <= 255, !txnID.isEmpty else {
            throw MatrixError(.badRequest, "M_INVALID_PARAM", "an event type and a transaction id are required")
        }
        // The same (device, txnId) is the same event: a retried PUT gets the first answer.
        let transaction = "\(session.userID)|\(session.deviceID)|\(txnID)"
        if let eventID = state.transactions.eventID(for: transaction) {
            return .answered(Self.sendAnswer(eventID))
        }
        if let levels = state.directory.levels(of: roomID) {
            let needed = levels.required(eventType, state: false)
            guard levels.level(of: session.userID) >= needed else { throw MatrixError.forbidden("\(eventType) needs power level \(needed)") }
        }
        guard state.transactions.isRecalled(roomID) else { return .recall }
        return .append(OutgoingMessage(contentText: contentText, transaction: transaction, relation: Self.aggregatedRelation(contentText)))
    }

    /// The relation of a message's content that is aggregated, if any; the
    /// text is searched first, as nearly every message has none.
    static func aggregatedRelation(_ contentText: String) -> (type: String, target: String)? {
        guard JSONText.utf8Offset(of: "m.relates_to", in: contentText) != nil, case .object(let content)? = JSONValue(parsing: contentText.utf8),
              case .object(let relates)? = content["m.relates_to"], let type = relates["rel_type"]?.string, let target = relates["event_id"]?.string,
              RelationsTable.aggregated.contains(type) else { return nil }
        return (type, target)
    }

    static func sendAnswer(_ eventID: String) -> String { "{\"event_id\":\(JSONText.string(eventID))}" }

    func joinedMembers(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        try requireJoined(session, roomID)
        let members = (state.directory.room(roomID)?.members ?? [:]).filter { $0.value.membership == "join" }.keys.sorted()
        return Self.ok(JoinedMembersAnswer(joined: Dictionary(uniqueKeysWithValues: members.map { ($0, JoinedMembersAnswer.Profile()) })))
    }

    func readMarkers(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        try requireJoined(session, roomID)
        let body = try await body(ReadMarkersRequest.self, request)
        // The markers kept: the fully-read marker and the public read receipt.
        var markers = state.markers.own(user: session.userID, roomID: roomID)
        if let eventID = context.parameters.get("eventId") {
            let type = parameter(context, "receiptType")
            guard ["m.read", "m.read.private", "m.fully_read"].contains(type) else {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "unknown receipt type \(type)")
            }
            markers[type == "m.read.private" ? "m.read" : type] = Self.percentDecoded(eventID) ?? eventID
        } else {
            if let eventID = body.fullyRead { markers["m.fully_read"] = eventID }
            if let eventID = body.read { markers["m.read"] = eventID }
        }
        let key = session.userID + "\u{0}" + roomID
        let (partition, offset) = try await link.produce(topic: ChatTopics.readMarkers, key: Array(key.utf8), value: MatrixJSON.encodeBytes(markers), timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.readMarkers, partition: partition, offset: offset)
        return Self.ok("{}")
    }

    /// A serialised event's content.
    static func content(_ json: String) -> JSONValue? {
        JSONValue(parsing: json.utf8)?["content"]
    }
}
