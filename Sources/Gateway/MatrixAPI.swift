import Foundation
import Hummingbird
import HummingbirdCore
import KafkaWire
import Logging
import Metrics
import NIOCore

/// A Matrix error: JSON `{"errcode", "error"}` with its HTTP status.
struct MatrixError: HTTPResponseError {
    var status: HTTPResponse.Status
    var code: String
    var message: String

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        MatrixAPI.json(status, body)
    }

    /// The JSON every Matrix error answers with.
    var body: String { "{\"errcode\":\(JSONText.string(code)),\"error\":\(JSONText.string(message))}" }

    /// A write the broker refused (logged where it happened).
    static let storeUnavailable = MatrixError(.serviceUnavailable, "M_UNKNOWN", "the message store is unavailable; retry")

    static func forbidden(_ message: String = "You are not a member of this room") -> MatrixError {
        MatrixError(.forbidden, "M_FORBIDDEN", message)
    }
}

/// Every error leaves as Matrix JSON, including the router's own 404 and 405.
struct MatrixErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as MatrixError {
            return try error.response(from: request, context: context)
        } catch let error as HTTPError {
            let code = error.status == .notFound || error.status == .methodNotAllowed ? "M_UNRECOGNIZED" : (error.status == .contentTooLarge ? "M_TOO_LARGE" : "M_UNKNOWN")
            return MatrixAPI.json(error.status, "{\"errcode\":\"\(code)\",\"error\":\(JSONText.string(error.body ?? "\(error.status)"))}")
        } catch let error as BrokerRefusal {
            logger.error("broker refused a chat write", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return try MatrixError.storeUnavailable.response(from: request, context: context)
        } catch {
            logger.error("chat request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return MatrixAPI.json(.internalServerError, "{\"errcode\":\"M_UNKNOWN\",\"error\":\"internal error\"}")
        }
    }
}

/// The Matrix client-server API subset of Docs/chat.md, over the chat topics.
struct MatrixAPI: Sendable {
    let state: ChatState
    let link: BrokerLink
    let configuration: GatewayConfiguration
    let logger: Logger
    static let prefix = "/_matrix/client/v3"
    static let timelineLimit = 20
    /// `/sync` requests parked, waiting for something new.
    static let longPolls = Meter(label: "postduif_gateway_long_polls")

    var server: String { configuration.serverName }

    static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func ok(_ text: String) -> Response { json(.ok, text) }

    func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        // Requests and durations per route (swift-metrics), then Matrix errors.
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: MatrixErrorMiddleware(logger: logger))
        let v3 = router.group(RouterPath(Self.prefix))
        router.get("/_matrix/client/versions") { _, _ in
            Self.ok("{\"versions\":[\"v1.1\",\"v1.2\",\"v1.3\",\"v1.4\",\"v1.5\",\"v1.6\",\"v1.7\",\"v1.8\",\"v1.9\",\"v1.10\",\"v1.11\"],\"unstable_features\":{}}")
        }
        v3.get("login") { _, _ in Self.ok("{\"flows\":[{\"type\":\"m.login.password\"}]}") }
        v3.post("register") { request, context in try await register(request, context) }
        v3.post("login") { request, context in try await login(request, context) }
        v3.post("logout") { request, _ in try await logout(request) }
        v3.get("account/whoami") { request, _ in
            let session = try authenticate(request)
            return Self.ok("{\"user_id\":\(JSONText.string(session.userID)),\"device_id\":\(JSONText.string(session.deviceID))}")
        }
        v3.post("createRoom") { request, context in try await createRoom(request, context) }
        v3.post("rooms/:roomId/invite") { request, context in try await invite(request, context) }
        v3.post("join/:roomId") { request, context in try await join(request, context) }
        v3.post("rooms/:roomId/join") { request, context in try await join(request, context) }
        v3.post("rooms/:roomId/leave") { request, context in try await leave(request, context) }
        v3.put("rooms/:roomId/send/:eventType/:txnId") { request, context in try await send(request, context) }
        v3.get("sync") { request, _ in try await sync(request) }
        v3.get("rooms/:roomId/messages") { request, context in try await messages(request, context) }
        v3.get("joined_rooms") { request, _ in
            let session = try authenticate(request)
            let rooms = state.rooms(of: session.userID).filter { $0.member.membership == "join" }.map { JSONText.string($0.roomID) }
            return Self.ok("{\"joined_rooms\":[\(rooms.sorted().joined(separator: ","))]}")
        }
        v3.get("rooms/:roomId/joined_members") { request, context in try await joinedMembers(request, context) }
        v3.post("rooms/:roomId/read_markers") { request, context in try await readMarkers(request, context) }
        v3.post("rooms/:roomId/receipt/:receiptType/:eventId") { request, context in try await readMarkers(request, context) }
        return router
    }

    // MARK: Helpers

    func body(_ request: Request, _ context: BasicRequestContext) async throws -> [String: Any] {
        try await bodyWithText(request, context).object
    }

    /// The body as a JSON object, and its text (`{}` when empty).
    func bodyWithText(_ request: Request, _ context: BasicRequestContext) async throws -> (object: [String: Any], text: String) {
        try Self.jsonObject(try await collectBody(request))
    }

    func collectBody(_ request: Request) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: configuration.bodyBytesMax)
        } catch {
            throw tooLarge
        }
    }

    var tooLarge: MatrixError {
        MatrixError(.contentTooLarge, "M_TOO_LARGE", "the request body is over \(configuration.bodyBytesMax) bytes")
    }

    /// A body as a JSON object, and its text (`{}` when empty).
    static func jsonObject(_ buffer: ByteBuffer) throws -> (object: [String: Any], text: String) {
        if buffer.readableBytes == 0 { return ([:], "{}") }
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) else {
            throw MatrixError(.badRequest, "M_NOT_JSON", "the body is not JSON")
        }
        guard let dictionary = object as? [String: Any] else {
            throw MatrixError(.badRequest, "M_BAD_JSON", "the body must be a JSON object")
        }
        return (dictionary, String(buffer: buffer))
    }

    func authenticate(_ request: Request) throws -> Session {
        try authenticate(authorization: request.headers[.authorization], query: request.uri)
    }

    /// The session of a request's bearer token (header, or `access_token`
    /// in the query).
    func authenticate(authorization: String?, query uri: URI) throws -> Session {
        var token: String?
        if let header = authorization, header.hasPrefix("Bearer ") {
            token = String(header.dropFirst("Bearer ".count))
        } else if let query = uri.queryParameters.get("access_token") {
            token = query
        }
        guard let token else { throw MatrixError(.unauthorized, "M_MISSING_TOKEN", "no access token") }
        // A removed account's tokens stop working with it.
        guard let session = state.session(forDigest: Secrets.tokenDigest(token)), state.account(session.userID)?.hash != nil else {
            throw MatrixError(.unauthorized, "M_UNKNOWN_TOKEN", "unknown or revoked access token")
        }
        return session
    }

    func parameter(_ context: BasicRequestContext, _ name: String) -> String {
        Self.pathParameter(context.parameters.get(name) ?? "")
    }

    /// A path parameter as handlers see it: percent-decoded where that works.
    static func pathParameter(_ raw: String) -> String {
        percentDecoded(raw) ?? raw
    }

    /// `text` with its `%XX` escapes decoded; nil where an escape is
    /// malformed or the result is not UTF-8 (as Foundation's
    /// `removingPercentEncoding`, which cost a CFString round trip per
    /// path parameter: two for every message sent).
    static func percentDecoded(_ text: String) -> String? {
        let utf8 = text.utf8
        guard utf8.contains(UInt8(ascii: "%")) else { return text }
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hex), let low = iterator.next().flatMap(hex) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    func userID(localpart: String) -> String { "@\(localpart):\(server)" }

    /// A local user id from what a client sent: a localpart or a full id.
    func userID(from text: String) -> String {
        text.hasPrefix("@") ? text : userID(localpart: text)
    }

    // MARK: Accounts and sessions

    func register(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        guard configuration.openRegistration else {
            throw MatrixError(.forbidden, "M_FORBIDDEN", "registration is closed: ask an administrator for an account")
        }
        let body = try await body(request, context)
        guard let username = body["username"] as? String, let password = body["password"] as? String else {
            throw MatrixError(.badRequest, "M_MISSING_PARAM", "username and password are required")
        }
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789._=-/")
        guard !username.isEmpty, username.count <= 64, username.allSatisfy({ allowed.contains($0) }) else {
            throw MatrixError(.badRequest, "M_INVALID_USERNAME", "a username is 1 to 64 of a-z, 0-9, . _ = - /")
        }
        guard !password.isEmpty, password.utf8.count <= 1024 else {
            throw MatrixError(.badRequest, "M_WEAK_PASSWORD", "a password is 1 to 1024 bytes")
        }
        let user = userID(localpart: username)
        guard state.account(user) == nil else { throw MatrixError(.badRequest, "M_USER_IN_USE", "\(user) is taken") }
        let hash = Secrets.hashPassword(password, n: 1 << UInt64(min(max(configuration.passwordHashLogN, 10), 20)))
        let value = JSONText.serialize(["password_hash": hash, "created_ts": Self.now])
        let (partition, offset) = try await link.produce(topic: ChatTopics.accounts, key: Array(user.utf8), value: Array(value.utf8), timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.accounts, partition: partition, offset: offset)
        // Two gateways may register one name at once: the first record wins.
        guard state.account(user)?.offset == offset else { throw MatrixError(.badRequest, "M_USER_IN_USE", "\(user) is taken") }
        return try await newSession(user: user, deviceID: body["device_id"] as? String)
    }

    func login(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let body = try await body(request, context)
        guard (body["type"] as? String) == "m.login.password" else {
            throw MatrixError(.badRequest, "M_UNKNOWN", "only m.login.password is supported")
        }
        let identifier = body["identifier"] as? [String: Any]
        guard let name = (identifier?["user"] as? String) ?? (body["user"] as? String), let password = body["password"] as? String else {
            throw MatrixError(.badRequest, "M_MISSING_PARAM", "identifier.user and password are required")
        }
        let user = userID(from: name)
        guard let hash = state.account(user)?.hash, Secrets.verifyPassword(password, against: hash) else {
            throw MatrixError(.forbidden, "M_FORBIDDEN", "invalid username or password")
        }
        return try await newSession(user: user, deviceID: body["device_id"] as? String)
    }

    func newSession(user: String, deviceID: String?) async throws -> Response {
        let device = deviceID.flatMap { $0.isEmpty ? nil : $0 } ?? Secrets.opaque(10)
        let token = Secrets.newToken()
        let value = JSONText.serialize(["user_id": user, "device_id": device, "created_ts": Self.now])
        let (partition, offset) = try await link.produce(topic: ChatTopics.sessions, key: Array(Secrets.tokenDigest(token).utf8), value: Array(value.utf8), timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.sessions, partition: partition, offset: offset)
        return Self.ok(JSONText.serialize(["user_id": user, "device_id": device, "access_token": token, "home_server": server]))
    }

    func logout(_ request: Request) async throws -> Response {
        _ = try authenticate(request)
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else { return Self.ok("{}") }
        let digest = Secrets.tokenDigest(String(header.dropFirst("Bearer ".count)))
        let (partition, offset) = try await link.produce(topic: ChatTopics.sessions, key: Array(digest.utf8), value: nil, timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.sessions, partition: partition, offset: offset)
        return Self.ok("{}")
    }

    static var now: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    // MARK: Rooms

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

    // MARK: History

    /// `/messages`: pages through the broker's conversation index. Tokens:
    /// `q<sequence>` (a conversation sequence) or `o<offset>` (a timeline
    /// offset, from /sync's prev_batch).
    func messages(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        try requireJoined(session, roomID)
        let query = request.uri.queryParameters
        let backwards = (query.get("dir") ?? "b") == "b"
        let limit = Int32(max(1, min(Int(query.get("limit") ?? "") ?? 10, 100)))
        let from = query.get("from")
        let conversation = Array(roomID.utf8)
        let partition = state.partition(ofRoom: roomID)
        let page: ConversationHistoryResponse
        if backwards {
            if let from, from.hasPrefix("q"), let sequence = UInt64(from.dropFirst()) {
                page = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .before(sequence: sequence), limit: limit)
            } else if let from, from.hasPrefix("o"), let offset = Int64(from.dropFirst()) {
                page = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .latest, limit: limit, maxOffset: offset)
            } else {
                page = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .latest, limit: limit)
            }
        } else {
            var after: UInt64 = 0
            if let from, from.hasPrefix("q"), let sequence = UInt64(from.dropFirst()) {
                after = sequence
            } else if let from, from.hasPrefix("o"), let offset = Int64(from.dropFirst()) {
                let before = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .latest, limit: 1, maxOffset: offset)
                after = before.messages.last?.sequence ?? 0
            }
            page = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .after(sequence: after), limit: limit)
        }
        let ordered = backwards ? page.messages.reversed() : page.messages
        let events = ordered.compactMap { ChatState.clientEvent(roomID: roomID, partition: partition, record: $0)?.json }
        let start = from ?? (backwards ? "o\(page.highWatermark)" : "q0")
        var answer = "{\"chunk\":[\(events.joined(separator: ","))],\"start\":\(JSONText.string(start))"
        // A full page may have more beyond it; a short one ends the history.
        if page.messages.count == Int(limit), let edge = backwards ? page.messages.first : page.messages.last {
            answer += ",\"end\":\(JSONText.string("q\(edge.sequence)"))"
        }
        return Self.ok(answer + "}")
    }

    // MARK: Sync

    /// A parsed `/sync` request.
    struct SyncQuery: Sendable {
        var session: Session
        var since: SyncPosition?
        var fullState: Bool
        var deadline: ContinuousClock.Instant
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
        return SyncQuery(session: session, since: since, fullState: query.get("full_state") == "true", deadline: ContinuousClock.now + timeout)
    }

    /// One look at what `query` should get, from what the gateway holds:
    /// no awaiting, so the event loop's fast path runs it as well.
    /// Throws `NeedHistory` when a room's events are neither cached nor in `fetched`.
    func syncStep(_ query: SyncQuery, fetched: [String: [RoomEvent]] = [:]) throws -> SyncStep {
        let generation = state.generation(of: query.session.userID)
        let (position, token, cacheEpoch) = state.positionWithToken
        // Nothing was written anywhere since the token: nothing to assemble.
        // (Most long polls arrive so, right after the answer they follow.)
        if let since = query.since, !query.fullState, since == position, ContinuousClock.now < query.deadline {
            return .wait(generation: generation)
        }
        let since = query.fullState ? nil : query.since
        let shared = since.flatMap { sharedAnswerKey(query.session, since: $0, position: position, token: token, cacheEpoch: cacheEpoch) }
        let (body, changed): (String, Bool)
        if let shared, let answer = state.sharedAnswer(shared) {
            (body, changed) = answer
        } else {
            (body, changed) = try syncBody(query.session, since: since, position: position, token: token, fetched: fetched)
            if let shared { state.storeAnswer(shared, (body, changed)) }
        }
        if changed || query.since == nil || ContinuousClock.now >= query.deadline {
            return .answer(body, shared: shared)
        }
        return .wait(generation: generation)
    }

    /// `/sync` through the router: a user new here, a room not cached, a
    /// request the fast path (SyncFastPath) left alone.
    func sync(_ request: Request) async throws -> Response {
        let query = try syncQuery(authorization: request.headers[.authorization], uri: request.uri)
        state.touch(user: query.session.userID)
        // A user new here waits until the fan-out routes their rooms here:
        // from then on every message wakes this sync.
        await state.waitRegistered(query.session.userID, timeout: .seconds(3))
        var fetched: [String: [RoomEvent]] = [:]
        while true {
            do {
                switch try syncStep(query, fetched: fetched) {
                case .answer(let body, _):
                    return Self.ok(body)
                case .wait(let generation):
                    Self.longPolls.increment()
                    await state.waitForUser(query.session.userID, after: generation, timeout: query.deadline - ContinuousClock.now)
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
        let rooms = state.rooms(of: session.userID)
        guard rooms.count == 1, let only = rooms.first, only.member.membership == "join", only.member.stateOffset < since.state else { return nil }
        let partition = Int(state.partition(ofRoom: only.roomID))
        return "\(cacheEpoch)|\(only.roomID)|\(since.timeline[partition])|\(token)"
    }

    func syncBody(_ session: Session, since: SyncPosition?, position: SyncPosition, token: String, fetched: [String: [RoomEvent]]) throws -> (String, Bool) {
        var joined: [String] = []
        var invited: [String] = []
        var left: [String] = []
        for (roomID, member) in state.rooms(of: session.userID).sorted(by: { $0.roomID < $1.roomID }) {
            guard let room = state.room(roomID) else { continue }
            // Seen by the token when written before its state offset.
            let membershipChanged = since.map { member.stateOffset >= $0.state } ?? true
            let partition = Int(state.partition(ofRoom: roomID))
            switch member.membership {
            case "join":
                if membershipChanged {
                    let markers = markerSections(session, roomID, since: nil)
                    joined.append(try fullRoom(roomID, room, end: position.timeline[partition], markers: markers, fetched: fetched))
                } else if let since {
                    let timeline = try timelineDelta(roomID, from: since.timeline[partition], to: position.timeline[partition], fetched: fetched)
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

    func summary(_ room: ChatState.Room) -> String { room.summary }

    /// The room's read receipts (`m.receipt`, everyone's `m.read`) and the
    /// user's own fully-read marker, written since `since` (all with nil).
    func markerSections(_ session: Session, _ roomID: String, since: Int64?) -> (ephemeral: String, accountData: String, changed: Bool) {
        let changed = state.readMarkers(roomID: roomID, since: since)
        var receipts: [String: [String: [String: Any]]] = [:]
        for entry in changed {
            guard let eventID = entry.markers["m.read"] else { continue }
            receipts[eventID, default: [:]][entry.user] = ["ts": entry.timestamp]
        }
        let ephemeral = receipts.isEmpty ? "{\"events\":[]}"
            : "{\"events\":[\(JSONText.serialize(["type": "m.receipt", "content": receipts.mapValues { ["m.read": $0] }]))]}"
        var accountData = "{\"events\":[]}"
        let fullyRead = changed.first(where: { $0.user == session.userID })?.markers["m.fully_read"]
        if let fullyRead {
            accountData = "{\"events\":[\(JSONText.serialize(["type": "m.fully_read", "content": ["event_id": fullyRead]]))]}"
        }
        return (ephemeral, accountData, !receipts.isEmpty || fullyRead != nil)
    }

    static func stripped(_ event: RoomEvent) -> String? {
        guard let content = content(event.json) else { return nil }
        return JSONText.serialize(["type": event.type, "state_key": event.stateKey ?? "", "sender": event.sender, "content": content])
    }

    /// A room the user has just joined (or any room on a first sync): its
    /// current state and its latest events.
    func fullRoom(_ roomID: String, _ room: ChatState.Room, end: Int64, markers: (ephemeral: String, accountData: String, changed: Bool), fetched: [String: [RoomEvent]]) throws -> String {
        let stateEvents = state.stateEventsJSON(roomID: roomID, room)
        var events: [RoomEvent]
        var limited = false
        if let cached = state.recentEvents(roomID: roomID, upTo: end, limit: Self.timelineLimit) {
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
    /// position: serialised once.
    func timelineDelta(_ roomID: String, from: Int64, to: Int64, fetched: [String: [RoomEvent]]) throws -> String? {
        guard from < to else { return nil }
        let key = "\(roomID)|\(from)|\(to)"
        if let shared = state.sharedDelta(key) { return shared.isEmpty ? nil : shared }
        var events: [RoomEvent]
        var limited = false
        if let cached = state.cachedEvents(roomID: roomID, after: from, upTo: to), cached.complete {
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
        state.storeDelta(key, json)
        return json.isEmpty ? nil : json
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
