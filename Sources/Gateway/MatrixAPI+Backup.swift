import Foundation
import Hummingbird
import HummingbirdCore
import NIOCore

// Server-side key backups (`room_keys`): versions with the client's
// algorithm and auth data, and session keys the client encrypted itself.
// Writes go to the newest version only (M_WRONG_ROOM_KEYS_VERSION otherwise).
extension MatrixAPI {
    func addBackupRoutes(_ routes: RouterGroup<GatewayRequestContext>) {
        routes.post("room_keys/version") { request, _ in
            let session = try authenticate(request)
            let body = try await backupVersionBody(request)
            let next = (state.keys.backups(of: session.userID).keys.compactMap { Int($0) }.max() ?? 0) + 1
            try await writeUserData(.backupVersion(user: session.userID, version: String(next)), MatrixJSON.encode(JSONValue.object(body)))
            return Self.ok(["version": .string(String(next))] as JSONValue)
        }
        routes.get("room_keys/version") { request, _ in
            let session = try authenticate(request)
            guard let version = newestBackup(session) else { throw MatrixError(.notFound, "M_NOT_FOUND", "no key backup") }
            return Self.ok(try backupVersionAnswer(session, version))
        }
        routes.get("room_keys/version/:version") { request, context in
            Self.ok(try backupVersionAnswer(try authenticate(request), parameter(context, "version")))
        }
        routes.put("room_keys/version/:version") { request, context in
            let session = try authenticate(request)
            let version = parameter(context, "version")
            guard state.keys.backups(of: session.userID)[version] != nil else { throw MatrixError(.notFound, "M_NOT_FOUND", "no key backup version \(version)") }
            var body = try await backupVersionBody(request)
            if let named = body.removeValue(forKey: "version"), named.string != version {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "the body's version is not the path's")
            }
            try await writeUserData(.backupVersion(user: session.userID, version: version), MatrixJSON.encode(JSONValue.object(body)))
            return Self.ok("{}")
        }
        routes.delete("room_keys/version/:version") { request, context in
            let session = try authenticate(request)
            let version = parameter(context, "version")
            guard let backup = state.keys.backups(of: session.userID)[version] else { throw MatrixError(.notFound, "M_NOT_FOUND", "no key backup version \(version)") }
            var records: [(UserDataKey, String?)] = backup.keys.flatMap { room, sessions in
                sessions.keys.map { (UserDataKey.backupKey(user: session.userID, version: version, room: room, session: $0), nil as String?) }
            }
            records.append((.backupVersion(user: session.userID, version: version), nil))
            try await writeUserData(records)
            return Self.ok("{}")
        }
        for path in ["room_keys/keys", "room_keys/keys/:roomId", "room_keys/keys/:roomId/:sessionId"] {
            routes.put(RouterPath(path)) { request, context in try await putBackupKeys(request, context) }
            routes.get(RouterPath(path)) { request, context in try getBackupKeys(request, context) }
            routes.delete(RouterPath(path)) { request, context in try await deleteBackupKeys(request, context) }
        }
    }

    func backupVersionBody(_ request: Request) async throws -> [String: JSONValue] {
        let body = try await body([String: JSONValue].self, request)
        guard body["algorithm"]?.string != nil, Self.object(body["auth_data"]) != nil else {
            throw MatrixError(.badRequest, "M_BAD_JSON", "a key backup version needs algorithm and auth_data")
        }
        return body
    }

    func newestBackup(_ session: Session) -> String? {
        state.keys.backups(of: session.userID).keys.max { (Int($0) ?? 0) < (Int($1) ?? 0) }
    }

    func backupVersionAnswer(_ session: Session, _ version: String) throws -> JSONValue {
        guard let backup = state.keys.backups(of: session.userID)[version], case .object(var answer)? = JSONValue(parsing: backup.json.utf8) else {
            throw MatrixError(.notFound, "M_NOT_FOUND", "no key backup version \(version)")
        }
        answer["version"] = .string(version)
        answer["count"] = .int(Int64(backup.keys.values.reduce(0) { $0 + $1.count }))
        answer["etag"] = .string(String(backup.changed))
        return .object(answer)
    }

    /// The `version` query parameter, which must name the newest backup for writes.
    func backupVersion(_ request: Request, _ session: Session, writing: Bool) throws -> String {
        guard let raw = request.uri.queryParameters.get("version") else {
            throw MatrixError(.badRequest, "M_MISSING_PARAM", "version is required")
        }
        let version = String(raw)
        guard state.keys.backups(of: session.userID)[version] != nil else { throw MatrixError(.notFound, "M_NOT_FOUND", "no key backup version \(version)") }
        if writing, let newest = newestBackup(session), newest != version {
            var error = MatrixError(.forbidden, "M_WRONG_ROOM_KEYS_VERSION", "the newest key backup is \(newest)")
            error.currentVersion = newest
            throw error
        }
        return version
    }

    /// The sessions a request's path and body name: `{room: {session: key}}`.
    func backupSessions(_ request: Request, _ context: GatewayRequestContext) async throws -> [String: [String: JSONValue]] {
        let body = try await body([String: JSONValue].self, request, limit: Self.keyBodyBytesMax)
        let room = context.parameters.get("roomId").map(Self.pathParameter)
        let sessionID = context.parameters.get("sessionId").map(Self.pathParameter)
        switch (room, sessionID) {
        case (let room?, let sessionID?):
            return [room: [sessionID: .object(body)]]
        case (let room?, nil):
            return [room: Self.object(body["sessions"]) ?? [:]]
        default:
            return (Self.object(body["rooms"]) ?? [:]).mapValues { Self.object(Self.object($0)?["sessions"]) ?? [:] }
        }
    }

    /// Whether `new` should replace `old` (the specification's order: a
    /// verified key, then the lower first message index, then the fewer forwards).
    static func betterBackupKey(_ new: JSONValue, than old: JSONValue) -> Bool {
        func rank(_ key: JSONValue) -> (Int, Int64, Int64) {
            let verified = key["is_verified"]?.bool == true ? 0 : 1
            let index: Int64 = if case .int(let value)? = key["first_message_index"] { value } else { .max }
            let forwards: Int64 = if case .int(let value)? = key["forwarded_count"] { value } else { .max }
            return (verified, index, forwards)
        }
        return rank(new) <= rank(old)
    }

    func putBackupKeys(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let version = try backupVersion(request, session, writing: true)
        let stored = state.keys.backups(of: session.userID)[version]?.keys ?? [:]
        var records: [(UserDataKey, String?)] = []
        for (room, sessions) in try await backupSessions(request, context) {
            for (sessionID, key) in sessions {
                guard Self.object(key)?["session_data"] != nil else { throw MatrixError(.badRequest, "M_BAD_JSON", "a backed-up key needs session_data") }
                if let old = stored[room]?[sessionID].flatMap({ JSONValue(parsing: $0.utf8) }), !Self.betterBackupKey(key, than: old) { continue }
                records.append((.backupKey(user: session.userID, version: version, room: room, session: sessionID), MatrixJSON.encode(key)))
            }
        }
        try await writeUserData(records)
        let answer = try backupVersionAnswer(session, version)
        return Self.ok(["etag": answer["etag"] ?? "0", "count": answer["count"] ?? 0] as JSONValue)
    }

    func getBackupKeys(_ request: Request, _ context: GatewayRequestContext) throws -> Response {
        let session = try authenticate(request)
        let version = try backupVersion(request, session, writing: false)
        let keys = (state.keys.backups(of: session.userID)[version]?.keys ?? [:]).mapValues { sessions in
            sessions.compactMapValues { JSONValue(parsing: $0.utf8) }
        }
        let room = context.parameters.get("roomId").map(Self.pathParameter)
        let sessionID = context.parameters.get("sessionId").map(Self.pathParameter)
        switch (room, sessionID) {
        case (let room?, let sessionID?):
            guard let key = keys[room]?[sessionID] else { throw MatrixError(.notFound, "M_NOT_FOUND", "no backed-up key for that session") }
            return Self.ok(key)
        case (let room?, nil):
            return Self.ok(["sessions": .object(keys[room] ?? [:])] as JSONValue)
        default:
            return Self.ok(["rooms": .object(keys.mapValues { ["sessions": .object($0)] })] as JSONValue)
        }
    }

    func deleteBackupKeys(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let version = try backupVersion(request, session, writing: true)
        let keys = state.keys.backups(of: session.userID)[version]?.keys ?? [:]
        let room = context.parameters.get("roomId").map(Self.pathParameter)
        let sessionID = context.parameters.get("sessionId").map(Self.pathParameter)
        var records: [(UserDataKey, String?)] = []
        for (storedRoom, sessions) in keys where room == nil || room == storedRoom {
            for stored in sessions.keys where sessionID == nil || sessionID == stored {
                records.append((.backupKey(user: session.userID, version: version, room: storedRoom, session: stored), nil))
            }
        }
        try await writeUserData(records)
        let answer = try backupVersionAnswer(session, version)
        return Self.ok(["etag": answer["etag"] ?? "0", "count": answer["count"] ?? 0] as JSONValue)
    }
}
