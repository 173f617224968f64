import Foundation
import Hummingbird
import HummingbirdCore
import KafkaWire
import Logging
import Metrics
import NIOCore

// createRoom, invite, join, leave, send, members and read markers.
extension MatrixAPI {
    /// Appends an event to the room's timeline; a state event also to the
    /// room's state, read back before returning (so the next request sees
    /// the membership). Messages reach syncs through the fan-out.
    @discardableResult
    func append(roomID: String, type: String, sender: String, content: [String: Any], contentText: String? = nil, stateKey: String? = nil,
                transaction: String? = nil) async throws -> String {
        var stored: [String: Any] = ["type": type, "sender": sender, "content": content]
        if let stateKey { stored["state_key"] = stateKey }
        // A message's content is stored as the client sent it (already checked
        // to be a JSON object), in the same key order as a serialised event:
        // serialising it again was a fourteenth of the gateway's work in rooms of 2.
        let value: String
        if let contentText, stateKey == nil {
            value = Self.messageValue(type: type, sender: sender, contentText: contentText)
        } else {
            value = JSONText.serialize(stored)
        }
        let timestamp = Self.now
        let headers = transaction.map(Self.transactionHeaders) ?? []
        if type == "m.room.member", let stateKey, let membership = content["membership"] as? String {
            // The fan-out routes by this topic: written first, so the member
            // receives what follows their join.
            let change = JSONText.serialize(["member": stateKey, "membership": membership])
            _ = try await link.produce(topic: ChatTopics.members, key: Array(roomID.utf8), value: Array(change.utf8), timestamp: timestamp)
        }
        let (partition, offset) = try await link.produce(topic: ChatTopics.conversations, key: Array(roomID.utf8), value: Array(value.utf8), headers: headers, timestamp: timestamp)
        let eventID = ChatState.eventID(partition: partition, offset: offset)
        if let stateKey {
            var event = stored
            event["event_id"] = eventID
            event["room_id"] = roomID
            event["origin_server_ts"] = timestamp
            let key = roomID + "\u{0}" + type + "\u{0}" + stateKey
            let (statePartition, stateOffset) = try await link.produce(topic: ChatTopics.state, key: Array(key.utf8), value: Array(JSONText.serialize(event).utf8), timestamp: timestamp)
            await state.waitApplied(topic: ChatTopics.state, partition: statePartition, offset: stateOffset)
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

    func createRoom(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let body = try await body(request, context)
        let version = (body["room_version"] as? String) ?? "10"
        guard ["10", "11"].contains(version) else {
            throw MatrixError(.badRequest, "M_UNSUPPORTED_ROOM_VERSION", "room versions 10 and 11 are supported")
        }
        let invites = (body["invite"] as? [String]) ?? []
        for invitee in invites where state.account(userID(from: invitee))?.hash == nil {
            throw MatrixError(.badRequest, "M_INVALID_PARAM", "unknown user \(invitee)")
        }
        let roomID = "!\(Secrets.opaque(18)):\(server)"
        let creator = session.userID
        var create: [String: Any] = ["room_version": version, "m.federate": ((body["creation_content"] as? [String: Any])?["m.federate"] as? Bool) ?? true]
        if version == "10" { create["creator"] = creator }
        try await append(roomID: roomID, type: "m.room.create", sender: creator, content: create, stateKey: "")
        try await append(roomID: roomID, type: "m.room.member", sender: creator, content: ["membership": "join", "displayname": creator.dropFirst().split(separator: ":").first.map(String.init) ?? creator], stateKey: creator)
        let preset = (body["preset"] as? String) ?? ((body["visibility"] as? String) == "public" ? "public_chat" : "private_chat")
        var powerLevels: [String: Any] = [
            "users": [creator: 100], "users_default": 0, "events_default": 0, "state_default": 50,
            "invite": preset == "public_chat" ? 50 : 0, "kick": 50, "ban": 50, "redact": 50,
            "events": ["m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.canonical_alias": 50, "m.room.avatar": 50],
            "notifications": ["room": 50],
        ]
        if let override = body["power_level_content_override"] as? [String: Any] {
            for (key, value) in override { powerLevels[key] = value }
        }
        try await append(roomID: roomID, type: "m.room.power_levels", sender: creator, content: powerLevels, stateKey: "")
        try await append(roomID: roomID, type: "m.room.join_rules", sender: creator, content: ["join_rule": preset == "public_chat" ? "public" : "invite"], stateKey: "")
        try await append(roomID: roomID, type: "m.room.history_visibility", sender: creator, content: ["history_visibility": "shared"], stateKey: "")
        try await append(roomID: roomID, type: "m.room.guest_access", sender: creator, content: ["guest_access": "forbidden"], stateKey: "")
        if let name = body["name"] as? String {
            try await append(roomID: roomID, type: "m.room.name", sender: creator, content: ["name": name], stateKey: "")
        }
        if let topic = body["topic"] as? String {
            try await append(roomID: roomID, type: "m.room.topic", sender: creator, content: ["topic": topic], stateKey: "")
        }
        for invitee in invites {
            try await append(roomID: roomID, type: "m.room.member", sender: creator, content: ["membership": "invite"], stateKey: userID(from: invitee))
        }
        return Self.ok("{\"room_id\":\(JSONText.string(roomID))}")
    }

    /// The caller must be joined; anyone else learns nothing about the room.
    func requireJoined(_ session: Session, _ roomID: String) throws {
        guard state.membership(of: session.userID, in: roomID) == "join" else { throw MatrixError.forbidden() }
    }

    func invite(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        try requireJoined(session, roomID)
        let body = try await body(request, context)
        guard let invitee = body["user_id"] as? String else { throw MatrixError(.badRequest, "M_MISSING_PARAM", "user_id is required") }
        guard state.account(invitee)?.hash != nil else { throw MatrixError(.notFound, "M_NOT_FOUND", "unknown user \(invitee)") }
        switch state.membership(of: invitee, in: roomID) {
        case "join": throw MatrixError(.forbidden, "M_FORBIDDEN", "\(invitee) is already in the room")
        case "ban": throw MatrixError(.forbidden, "M_FORBIDDEN", "\(invitee) is banned from the room")
        case "invite": return Self.ok("{}")
        default: break
        }
        try await append(roomID: roomID, type: "m.room.member", sender: session.userID, content: ["membership": "invite"], stateKey: invitee)
        return Self.ok("{}")
    }

    func join(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        let current = state.membership(of: session.userID, in: roomID)
        if current != "join" {
            let rule = state.room(roomID)?.state["m.room.join_rules\u{0}"].flatMap { Self.content($0.json)?["join_rule"] as? String }
            guard current == "invite" || (rule == "public" && current != "ban") else { throw MatrixError.forbidden("You are not invited to this room") }
            try await append(roomID: roomID, type: "m.room.member", sender: session.userID,
                             content: ["membership": "join", "displayname": String(session.userID.dropFirst().split(separator: ":").first ?? "")], stateKey: session.userID)
        }
        return Self.ok("{\"room_id\":\(JSONText.string(roomID))}")
    }

    func leave(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        let current = state.membership(of: session.userID, in: roomID)
        guard current == "join" || current == "invite" else { throw MatrixError.forbidden() }
        try await append(roomID: roomID, type: "m.room.member", sender: session.userID, content: ["membership": "leave"], stateKey: session.userID)
        return Self.ok("{}")
    }

    func send(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        let eventType = parameter(context, "eventType")
        let txnID = parameter(context, "txnId")
        try requireJoined(session, roomID)
        switch try planSend(session: session, roomID: roomID, eventType: eventType, txnID: txnID, body: try await collectBody(request)) {
        case .answered(let answer):
            return Self.ok(answer)
        case .append(let message):
            let eventID = try await append(roomID: roomID, type: eventType, sender: session.userID, content: message.content, contentText: message.contentText,
                                           transaction: message.transaction)
            state.remember(transaction: message.transaction, eventID: eventID)
            return Self.ok(Self.sendAnswer(eventID))
        }
    }

    /// A message to append, checked.
    struct OutgoingMessage: @unchecked Sendable {
        var content: [String: Any]
        var contentText: String
        /// user|device|txnId: the same is the same event.
        var transaction: String
    }

    enum SendPlan {
        /// A retry of a send already made: its answer.
        case answered(String)
        case append(OutgoingMessage)
    }

    /// Checks a message send of a joined member (after its body was read,
    /// here and in the event loop's fast path): the body, the path's
    /// parameters, and whether this transaction was sent before.
    func planSend(session: Session, roomID: String, eventType: String, txnID: String, body: ByteBuffer) throws -> SendPlan {
        let (content, contentText) = try Self.jsonObject(body)
        guard !eventType.isEmpty, eventType.utf8.count <= 255, !txnID.isEmpty else {
            throw MatrixError(.badRequest, "M_INVALID_PARAM", "an event type and a transaction id are required")
        }
        // The same (device, txnId) is the same event: a retried PUT gets the first answer.
        let transaction = "\(session.userID)|\(session.deviceID)|\(txnID)"
        if let eventID = state.transaction(transaction) {
            return .answered(Self.sendAnswer(eventID))
        }
        return .append(OutgoingMessage(content: content, contentText: contentText, transaction: transaction))
    }

    static func sendAnswer(_ eventID: String) -> String { "{\"event_id\":\(JSONText.string(eventID))}" }

    func joinedMembers(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        try requireJoined(session, roomID)
        let members = (state.room(roomID)?.members ?? [:]).filter { $0.value.membership == "join" }.keys.sorted()
        let entries = members.map { "\(JSONText.string($0)):{\"display_name\":null,\"avatar_url\":null}" }
        return Self.ok("{\"joined\":{\(entries.joined(separator: ","))}}")
    }

    func readMarkers(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        try requireJoined(session, roomID)
        let body = try await body(request, context)
        // The markers kept: the fully-read marker and the public read receipt.
        var markers = state.ownReadMarkers(user: session.userID, roomID: roomID)
        if let eventID = context.parameters.get("eventId") {
            let type = parameter(context, "receiptType")
            guard ["m.read", "m.read.private", "m.fully_read"].contains(type) else {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "unknown receipt type \(type)")
            }
            markers[type == "m.read.private" ? "m.read" : type] = Self.percentDecoded(eventID) ?? eventID
        } else {
            for type in ["m.fully_read", "m.read"] {
                if let eventID = body[type] as? String { markers[type] = eventID }
            }
        }
        let key = session.userID + "\u{0}" + roomID
        let (partition, offset) = try await link.produce(topic: ChatTopics.readMarkers, key: Array(key.utf8), value: Array(JSONText.serialize(markers).utf8), timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.readMarkers, partition: partition, offset: offset)
        return Self.ok("{}")
    }

    static func content(_ json: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["content"] as? [String: Any]
    }
}
