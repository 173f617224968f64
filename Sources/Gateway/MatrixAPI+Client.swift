import Foundation
import Hummingbird
import HummingbirdCore
import NIOCore

// What clients ask for as they start: capabilities, push rules, filters,
// profiles, account data, devices, typing, TURN. Each user's records live
// in chat-user-data (`UserDataTable`); typing stays in this gateway.
extension MatrixAPI {
    func addClientRoutes(_ routes: RouterGroup<GatewayRequestContext>) {
        routes.get("capabilities") { request, _ in
            _ = try authenticate(request)
            return Self.ok(Self.capabilities)
        }
        // No TURN server is configured: clients fall back to direct or STUN-less calls.
        routes.get("voip/turnServer") { request, _ in
            _ = try authenticate(request)
            return Self.ok("{}")
        }
        routes.get("pushrules") { request, _ in Self.ok(["global": try pushRules(authenticate(request)).ruleset] as JSONValue) }
        routes.get("pushrules/global") { request, _ in Self.ok(try pushRules(authenticate(request)).ruleset) }
        routes.get("pushrules/global/:kind/:ruleId") { request, context in
            let (rules, kind, id) = try pushRule(request, context)
            guard let rule = rules.rule(kind: kind, id: id) else { throw MatrixError(.notFound, "M_NOT_FOUND", "no push rule \(id)") }
            return Self.ok(rule)
        }
        routes.get("pushrules/global/:kind/:ruleId/:attribute") { request, context in
            let (rules, kind, id) = try pushRule(request, context)
            let attribute = parameter(context, "attribute")
            guard ["enabled", "actions"].contains(attribute), let rule = rules.rule(kind: kind, id: id) else {
                throw MatrixError(.notFound, "M_NOT_FOUND", "no push rule \(id)")
            }
            return Self.ok([attribute: rule[attribute] ?? .bool(true)] as JSONValue)
        }
        routes.put("pushrules/global/:kind/:ruleId") { request, context in try await putPushRule(request, context) }
        routes.delete("pushrules/global/:kind/:ruleId") { request, context in
            let session = try authenticate(request)
            var (rules, kind, id) = try pushRule(request, context)
            try rules.delete(kind: kind, id: id)
            try await storePushRules(rules, session)
            return Self.ok("{}")
        }
        routes.put("pushrules/global/:kind/:ruleId/:attribute") { request, context in
            let session = try authenticate(request)
            var (rules, kind, id) = try pushRule(request, context)
            let attribute = parameter(context, "attribute")
            let body = try await body([String: JSONValue].self, request)
            switch attribute {
            case "enabled":
                guard case .bool(let enabled)? = body["enabled"] else { throw MatrixError(.badRequest, "M_BAD_JSON", "enabled must be true or false") }
                try rules.set(kind: kind, id: id, attribute: "enabled", value: .bool(enabled))
            case "actions":
                guard case .array(let actions)? = body["actions"] else { throw MatrixError(.badRequest, "M_BAD_JSON", "actions must be a list") }
                try rules.set(kind: kind, id: id, attribute: "actions", value: .array(actions))
            default:
                throw MatrixError(.notFound, "M_UNRECOGNIZED", "push rules have no attribute \(attribute) to set")
            }
            try await storePushRules(rules, session)
            return Self.ok("{}")
        }
        routes.post("user/:userId/filter") { request, context in
            let session = try ownUser(request, context)
            let text = try Self.contentText(try await collectBody(request))
            let id = String(Secrets.tokenDigest(text).prefix(16))
            if state.userData.filter(user: session.userID, id: id) == nil {
                try await writeUserData(.filter(user: session.userID, id: id), text)
            }
            return Self.ok(["filter_id": .string(id)] as JSONValue)
        }
        routes.get("user/:userId/filter/:filterId") { request, context in
            let session = try ownUser(request, context)
            guard let filter = state.userData.filter(user: session.userID, id: parameter(context, "filterId")) else {
                throw MatrixError(.notFound, "M_NOT_FOUND", "no such filter")
            }
            return Self.ok(filter)
        }
        routes.get("user/:userId/account_data/:type") { request, context in
            let session = try ownUser(request, context)
            let type = parameter(context, "type")
            if type == PushRules.accountDataType { return Self.ok(pushRules(session).accountData) }
            guard let entry = state.userData.accountData(user: session.userID, type: type), entry.json != "{}" else {
                throw MatrixError(.notFound, "M_NOT_FOUND", "no account data of type \(type)")
            }
            return Self.ok(entry.json)
        }
        routes.put("user/:userId/account_data/:type") { request, context in
            let session = try ownUser(request, context)
            let type = parameter(context, "type")
            guard type != PushRules.accountDataType else {
                throw MatrixError(.badRequest, "M_BAD_JSON", "push rules are changed through /pushrules")
            }
            try await writeUserData(.accountData(user: session.userID, room: nil, type: type), try Self.contentText(try await collectBody(request)))
            return Self.ok("{}")
        }
        routes.get("user/:userId/rooms/:roomId/account_data/:type") { request, context in
            let session = try ownUser(request, context)
            let type = parameter(context, "type")
            guard let entry = state.userData.roomAccountData(user: session.userID, room: parameter(context, "roomId"), type: type), entry.json != "{}" else {
                throw MatrixError(.notFound, "M_NOT_FOUND", "no account data of type \(type)")
            }
            return Self.ok(entry.json)
        }
        routes.put("user/:userId/rooms/:roomId/account_data/:type") { request, context in
            let session = try ownUser(request, context)
            let roomID = parameter(context, "roomId")
            guard state.directory.membership(of: session.userID, in: roomID) != nil else { throw MatrixError.forbidden() }
            try await writeUserData(.accountData(user: session.userID, room: roomID, type: parameter(context, "type")),
                                    try Self.contentText(try await collectBody(request)))
            return Self.ok("{}")
        }
        routes.get("profile/:userId") { _, context in Self.ok(try profile(parameter(context, "userId"))) }
        routes.get("profile/:userId/:field") { _, context in
            let field = parameter(context, "field")
            guard ["displayname", "avatar_url"].contains(field) else { throw MatrixError(.notFound, "M_NOT_FOUND", "no profile field \(field)") }
            guard let value = try profile(parameter(context, "userId"))[field] else { throw MatrixError(.notFound, "M_NOT_FOUND", "\(field) is not set") }
            return Self.ok([field: value] as JSONValue)
        }
        routes.put("profile/:userId/:field") { request, context in try await setProfile(request, context) }
        routes.get("devices") { request, _ in
            let session = try authenticate(request)
            return Self.ok(["devices": .array(devices(of: session.userID))] as JSONValue)
        }
        routes.get("devices/:deviceId") { request, context in
            let session = try authenticate(request)
            let id = parameter(context, "deviceId")
            guard let device = devices(of: session.userID).first(where: { $0["device_id"]?.string == id }) else {
                throw MatrixError(.notFound, "M_NOT_FOUND", "no device \(id)")
            }
            return Self.ok(device)
        }
        routes.put("devices/:deviceId") { request, context in
            let session = try authenticate(request)
            let id = parameter(context, "deviceId")
            guard devices(of: session.userID).contains(where: { $0["device_id"]?.string == id }) else {
                throw MatrixError(.notFound, "M_NOT_FOUND", "no device \(id)")
            }
            let body = try await body([String: JSONValue].self, request)
            if let name = body["display_name"]?.string {
                try await writeUserData(.device(user: session.userID, id: id), MatrixJSON.encode(["display_name": .string(name)] as JSONValue))
            }
            return Self.ok("{}")
        }
        routes.delete("devices/:deviceId") { request, context in
            try await deleteDevices(request, ids: [parameter(context, "deviceId")])
        }
        routes.post("delete_devices") { request, _ in
            let buffer = try await collectBody(request)
            let ids = try MatrixJSON.decodeBody(DeleteDevicesRequest.self, from: buffer).devices
            return try await deleteDevices(request, ids: ids, buffer: buffer)
        }
        routes.put("rooms/:roomId/typing/:userId") { request, context in
            let session = try ownUser(request, context)
            let roomID = parameter(context, "roomId")
            try requireJoined(session, roomID)
            let body = try await body(TypingRequest.self, request)
            // At most 30 s, so a client that vanished stops "typing" soon.
            let timeout = min(max(body.timeout ?? 30_000, 0), 30_000)
            state.setTyping(room: roomID, user: session.userID, typing: body.typing, until: clock.now.milliseconds + timeout)
            // The other gateways hear it through chat-typing (this one has it
            // already; its own record read back only renews it). A hint: when
            // the broker cannot take it, only this gateway's syncs show it.
            let record = MatrixJSON.encode(TypingRecord(user: session.userID, typing: body.typing, timeout: timeout))
            do {
                _ = try await link.produce(topic: ChatTopics.typing, key: Array(roomID.utf8), value: Array(record.utf8), timestamp: Self.now)
            } catch {
                logger.debug("typing not relayed to other gateways", metadata: ["room": "\(roomID)", "error": "\(error)"])
            }
            return Self.ok("{}")
        }
    }

    /// `/.well-known/matrix/client`: the base URL clients should use (the
    /// configured one, or the one this request came to).
    func wellKnown(_ request: Request) -> Response {
        let base = configuration.publicBaseURL ?? "\(configuration.tls == nil ? "http" : "https")://\(request.head.authority ?? "\(configuration.host):\(configuration.port)")"
        return Self.ok(["m.homeserver": ["base_url": .string(base)]] as JSONValue)
    }

    static let capabilities: JSONValue = ["capabilities": [
        "m.change_password": ["enabled": false],
        "m.room_versions": ["default": "10", "available": ["10": "stable", "11": "stable"]],
        "m.set_displayname": ["enabled": true],
        "m.set_avatar_url": ["enabled": true],
        "m.3pid_changes": ["enabled": false],
        "m.get_login_token": ["enabled": false],
    ]]

    /// The session, refusing a path's `userId` that is not its own.
    func ownUser(_ request: Request, _ context: GatewayRequestContext) throws -> Session {
        let session = try authenticate(request)
        guard parameter(context, "userId") == session.userID else {
            throw MatrixError(.forbidden, "M_FORBIDDEN", "cannot act for another user")
        }
        return session
    }

    /// Writes a record of `chat-user-data` and waits until this gateway's
    /// tail has read it, so the next request sees it.
    func writeUserData(_ key: UserDataKey, _ json: String?) async throws {
        try await writeUserData([(key, json)])
    }

    // MARK: Push rules

    func pushRules(_ session: Session) -> PushRules {
        state.userData.accountData(user: session.userID, type: PushRules.accountDataType).flatMap { PushRules(accountData: $0.json) }
            ?? PushRules.defaults(for: session.userID)
    }

    func pushRule(_ request: Request, _ context: GatewayRequestContext) throws -> (PushRules, String, String) {
        let session = try authenticate(request)
        let kind = parameter(context, "kind")
        guard PushRules.kinds.contains(kind) else { throw MatrixError(.badRequest, "M_INVALID_PARAM", "unknown push rule kind \(kind)") }
        return (pushRules(session), kind, parameter(context, "ruleId"))
    }

    func storePushRules(_ rules: PushRules, _ session: Session) async throws {
        try await writeUserData(.accountData(user: session.userID, room: nil, type: PushRules.accountDataType), MatrixJSON.encode(rules.accountData))
    }

    func putPushRule(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        var (rules, kind, id) = try pushRule(request, context)
        let body = try await body([String: JSONValue].self, request)
        guard case .array(let actions)? = body["actions"] else { throw MatrixError(.badRequest, "M_BAD_JSON", "actions must be a list") }
        var rule: [String: JSONValue] = ["rule_id": .string(id), "default": false, "enabled": true, "actions": .array(actions)]
        switch kind {
        case "override", "underride":
            rule["conditions"] = body["conditions"] ?? .array([])
        case "content":
            guard let pattern = body["pattern"]?.string else { throw MatrixError(.badRequest, "M_MISSING_PARAM", "a content rule needs a pattern") }
            rule["pattern"] = .string(pattern)
        default:
            break
        }
        let query = request.uri.queryParameters
        try rules.put(kind: kind, id: id, rule: .object(rule), before: query.get("before"), after: query.get("after"))
        try await storePushRules(rules, session)
        return Self.ok("{}")
    }

    // MARK: Profiles

    /// `displayname` and `avatar_url` of a local user (the localpart as
    /// display name until one is set).
    func profile(_ userID: String) throws -> [String: JSONValue] {
        guard state.credentials.account(userID)?.hash != nil else { throw MatrixError(.notFound, "M_NOT_FOUND", "no such user") }
        var profile: [String: JSONValue] = ["displayname": .string(Self.localpart(of: userID))]
        if let json = state.userData.profile(user: userID), let stored = JSONValue(parsing: json.utf8)?.members {
            profile.merge(stored) { $1 }
        }
        return profile.filter { $0.value != .null }
    }

    /// Sets a profile field, then the member event of each joined room
    /// (where other members read display names and avatars from).
    func setProfile(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try ownUser(request, context)
        let field = parameter(context, "field")
        guard ["displayname", "avatar_url"].contains(field) else { throw MatrixError(.badRequest, "M_INVALID_PARAM", "no profile field \(field)") }
        let body = try await body([String: JSONValue].self, request)
        let value = body[field] ?? .null
        guard value == .null || (value.string.map { $0.utf8.count <= 256 } ?? false) else {
            throw MatrixError(.badRequest, "M_INVALID_PARAM", "\(field) is a string of at most 256 bytes")
        }
        var stored = (state.userData.profile(user: session.userID)).flatMap { JSONValue(parsing: $0.utf8)?.members } ?? [:]
        stored[field] = value
        try await writeUserData(.profile(user: session.userID), MatrixJSON.encode(JSONValue.object(stored)))
        for (roomID, member) in state.directory.rooms(of: session.userID) where member.membership == "join" {
            var content: [String: JSONValue] = ["membership": "join"]
            for (key, value) in try profile(session.userID) { content[key] = value }
            try await appendState(roomID: roomID, type: "m.room.member", sender: session.userID, content: .object(content), stateKey: session.userID)
        }
        return Self.ok("{}")
    }

    // MARK: Devices

    /// The user's devices: those with a live session, named where named.
    func devices(of userID: String) -> [JSONValue] {
        state.credentials.devices(of: userID).map { id in
            var device: [String: JSONValue] = ["device_id": .string(id)]
            if let json = state.userData.deviceName(user: userID, id: id), let stored = JSONValue(parsing: json.utf8)?.members {
                device["display_name"] = stored["display_name"]
            }
            return .object(device)
        }
    }

    /// Deleting devices asks for the password again (user-interactive
    /// authentication with one stage, `m.login.password`); then every
    /// access token of the devices is revoked.
    func deleteDevices(_ request: Request, ids: [String], buffer: ByteBuffer? = nil) async throws -> Response {
        let session = try authenticate(request)
        let bodyBuffer: ByteBuffer
        if let buffer { bodyBuffer = buffer } else { bodyBuffer = try await collectBody(request) }
        let auth = bodyBuffer.readableBytes == 0 ? nil : try MatrixJSON.decodeBody(UserInteractiveRequest.self, from: bodyBuffer).auth
        guard let auth else { return Self.json(.unauthorized, Self.passwordStage(error: nil)) }
        guard try checkPassword(auth, session) else { return Self.json(.unauthorized, Self.passwordStage(error: "invalid password")) }
        for id in ids {
            for digest in state.credentials.tokenDigests(of: session.userID, device: id) {
                let (partition, offset) = try await link.produce(topic: ChatTopics.sessions, key: Array(digest.utf8), value: nil, timestamp: Self.now)
                await state.waitApplied(topic: ChatTopics.sessions, partition: partition, offset: offset)
            }
            // Its name and identity keys go with it (the users sharing a
            // room with it are told, through device_lists).
            var records: [(UserDataKey, String?)] = []
            if state.userData.deviceName(user: session.userID, id: id) != nil { records.append((.device(user: session.userID, id: id), nil)) }
            if state.keys.deviceKeys(of: session.userID)[id] != nil { records.append((.deviceKeys(user: session.userID, device: id), nil)) }
            try await writeUserData(records)
        }
        return Self.ok("{}")
    }

    /// The 401 of user-interactive authentication: the password stage, and
    /// why the last try failed.
    static func passwordStage(error: String?) -> String {
        var answer: [String: JSONValue] = ["flows": [["stages": ["m.login.password"]]], "params": [:], "session": .string(Secrets.opaque(12))]
        if let error {
            answer["errcode"] = "M_FORBIDDEN"
            answer["error"] = .string(error)
        }
        return MatrixJSON.encode(JSONValue.object(answer))
    }
}

struct TypingRequest: Decodable {
    var typing: Bool
    var timeout: Int64?
}

/// A chat-typing record's value.
struct TypingRecord: Codable {
    var user: String
    var typing: Bool
    var timeout: Int64
}

struct DeleteDevicesRequest: Decodable {
    var devices: [String]
}

struct UserInteractiveRequest: Decodable {
    var auth: LoginRequest?
}
