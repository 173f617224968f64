import ChatWire
import Foundation
import Hummingbird
import HummingbirdCore
import KafkaNIO
import NIOCore
import Synchronization

/// Room aliases and the public room list, as chat-directory holds them.
/// An alias goes to the first record that claims it (two gateways may
/// claim one at once), until a null frees it; the topic is not compacted,
/// since compaction would keep the last claim instead.
final class DirectoryTable: Sendable {
    struct Alias: Sendable, Equatable {
        var roomID: String
        var creator: String
        var offset: Int64
    }

    private struct Tables {
        var aliases: [String: Alias] = [:]
        var published: Set<String> = []
    }

    private let tables = Mutex(Tables())

    func apply(_ record: StoredRecord) {
        guard let key = String(validating: record.key, as: UTF8.self), let separator = key.firstIndex(of: "\u{0}") else { return }
        let kind = key[..<separator]
        let name = String(key[key.index(after: separator)...])
        let value = record.value.flatMap { JSONValue(parsing: $0)?.members }
        tables.withLock { tables in
            switch kind {
            case "alias":
                if let value, let roomID = value["room_id"]?.string, let creator = value["creator"]?.string {
                    if tables.aliases[name] == nil { tables.aliases[name] = Alias(roomID: roomID, creator: creator, offset: record.offset) }
                } else if value == nil {
                    tables.aliases[name] = nil
                }
            case "visibility":
                if value?["visibility"]?.string == "public" { tables.published.insert(name) } else { tables.published.remove(name) }
            default:
                break
            }
        }
    }

    func alias(_ alias: String) -> Alias? { tables.withLock { $0.aliases[alias] } }

    func aliases(of roomID: String) -> [String] { tables.withLock { $0.aliases.filter { $0.value.roomID == roomID }.keys.sorted() } }

    func isPublished(_ roomID: String) -> Bool { tables.withLock { $0.published.contains(roomID) } }

    var published: [String] { tables.withLock { $0.published.sorted() } }
}

// Aliases (#name:server), the public room list, and joining by alias.
extension MatrixAPI {
    func addDirectoryRoutes(_ routes: RouterGroup<GatewayRequestContext>) {
        routes.put("directory/room/:alias") { request, context in
            let session = try authenticate(request)
            let alias = try checkedAlias(parameter(context, "alias"))
            guard let roomID = try await body([String: JSONValue].self, request)["room_id"]?.string else { throw MatrixError(.badRequest, "M_MISSING_PARAM", "room_id is required") }
            try requireJoined(session, roomID)
            try await claimAlias(alias, roomID: roomID, creator: session.userID)
            return Self.ok("{}")
        }
        routes.get("directory/room/:alias") { _, context in
            guard let found = state.aliases.alias(parameter(context, "alias")) else { throw MatrixError(.notFound, "M_NOT_FOUND", "no room has this alias") }
            return Self.ok(["room_id": .string(found.roomID), "servers": [.string(server)]] as JSONValue)
        }
        routes.delete("directory/room/:alias") { request, context in
            let session = try authenticate(request)
            let alias = parameter(context, "alias")
            guard let found = state.aliases.alias(alias) else { throw MatrixError(.notFound, "M_NOT_FOUND", "no room has this alias") }
            // Its creator, or someone who may set the room's canonical alias.
            let levels = state.directory.levels(of: found.roomID) ?? PowerLevels()
            guard found.creator == session.userID || (state.directory.membership(of: session.userID, in: found.roomID) == "join"
                && levels.level(of: session.userID) >= levels.required("m.room.canonical_alias", state: true)) else {
                throw MatrixError.forbidden("only the alias's creator or the room's moderators may remove it")
            }
            try await writeDirectory("alias\u{0}" + alias, nil)
            return Self.ok("{}")
        }
        routes.get("rooms/:roomId/aliases") { request, context in
            let (_, roomID, _) = try joinedRoom(request, context)
            return Self.ok(["aliases": .array(state.aliases.aliases(of: roomID).map { .string($0) })] as JSONValue)
        }
        routes.get("directory/list/room/:roomId") { _, context in
            let roomID = parameter(context, "roomId")
            guard state.directory.room(roomID) != nil else { throw MatrixError(.notFound, "M_NOT_FOUND", "no such room") }
            return Self.ok(["visibility": .string(state.aliases.isPublished(roomID) ? "public" : "private")] as JSONValue)
        }
        routes.put("directory/list/room/:roomId") { request, context in
            let (session, roomID, room) = try joinedRoom(request, context)
            let levels = room.levels
            guard levels.level(of: session.userID) >= levels.required("m.room.canonical_alias", state: true) else {
                throw MatrixError.forbidden("publishing the room needs the level of m.room.canonical_alias")
            }
            let visibility = try await body([String: JSONValue].self, request)["visibility"]?.string ?? "public"
            guard ["public", "private"].contains(visibility) else { throw MatrixError(.badRequest, "M_INVALID_PARAM", "visibility is public or private") }
            try await writeDirectory("visibility\u{0}" + roomID, MatrixJSON.encode(["visibility": .string(visibility)] as JSONValue))
            return Self.ok("{}")
        }
        routes.get("publicRooms") { request, _ in
            let query = request.uri.queryParameters
            return Self.ok(publicRooms(limit: Int(query.get("limit") ?? ""), since: query.get("since").map { String($0) }, term: nil))
        }
        routes.post("publicRooms") { request, _ in
            _ = try authenticate(request)
            let body = try await body([String: JSONValue].self, request)
            let limit: Int? = if case .int(let value)? = body["limit"] { Int(value) } else { nil }
            return Self.ok(publicRooms(limit: limit, since: body["since"]?.string, term: body["filter"]?["generic_search_term"]?.string))
        }
    }

    /// An alias of this server: `#localpart:server`.
    func checkedAlias(_ alias: String) throws -> String {
        guard alias.hasPrefix("#"), alias.hasSuffix(":" + server), alias.utf8.count <= 255, alias.count > server.count + 2 else {
            throw MatrixError(.badRequest, "M_INVALID_PARAM", "an alias here is #name:\(server)")
        }
        return alias
    }

    func writeDirectory(_ key: String, _ json: String?) async throws {
        let (partition, offset) = try await link.produce(topic: ChatTopics.directory, key: Array(key.utf8), value: json.map { Array($0.utf8) }, timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.directory, partition: partition, offset: offset)
    }

    /// Claims an alias for a room: the first claim read back wins.
    func claimAlias(_ alias: String, roomID: String, creator: String) async throws {
        if let taken = state.aliases.alias(alias) {
            throw MatrixError(.conflict, "M_UNKNOWN", taken.roomID == roomID ? "the room already has this alias" : "the alias is taken")
        }
        let value = MatrixJSON.encode(["room_id": .string(roomID), "creator": .string(creator)] as JSONValue)
        let (partition, offset) = try await link.produce(topic: ChatTopics.directory, key: Array(("alias\u{0}" + alias).utf8), value: Array(value.utf8), timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.directory, partition: partition, offset: offset)
        guard state.aliases.alias(alias)?.offset == offset else { throw MatrixError(.conflict, "M_UNKNOWN", "the alias is taken") }
    }

    /// The published rooms, by joined members (most first), `since` an index.
    func publicRooms(limit: Int?, since: String?, term: String?) -> JSONValue {
        var rooms: [(members: Int, entry: [String: JSONValue])] = []
        for roomID in state.aliases.published {
            guard let room = state.directory.room(roomID) else { continue }
            func content(_ type: String) -> JSONValue? { room.stateEvent(type).flatMap { Self.content($0.json) } }
            let members = room.members(in: ["join"]).count
            var entry: [String: JSONValue] = ["room_id": .string(roomID), "num_joined_members": .int(Int64(members)),
                                              "world_readable": .bool(content("m.room.history_visibility")?["history_visibility"]?.string == "world_readable"),
                                              "guest_can_join": .bool(content("m.room.guest_access")?["guest_access"]?.string == "can_join"),
                                              "join_rule": .string(content("m.room.join_rules")?["join_rule"]?.string ?? "invite")]
            entry["name"] = content("m.room.name")?["name"]
            entry["topic"] = content("m.room.topic")?["topic"]
            entry["avatar_url"] = content("m.room.avatar")?["url"]
            entry["canonical_alias"] = content("m.room.canonical_alias")?["alias"]
            if let term = term?.lowercased(), !term.isEmpty {
                let text = [entry["name"]?.string, entry["topic"]?.string, entry["canonical_alias"]?.string].compactMap { $0?.lowercased() }
                guard text.contains(where: { $0.contains(term) }) else { continue }
            }
            rooms.append((members, entry))
        }
        rooms.sort { $0.members != $1.members ? $0.members > $1.members : ($0.entry["room_id"]?.string ?? "") < ($1.entry["room_id"]?.string ?? "") }
        let start = since.flatMap { Int($0) } ?? 0
        let count = max(1, min(limit ?? 100, 500))
        let page = rooms.dropFirst(start).prefix(count)
        var answer: [String: JSONValue] = ["chunk": .array(page.map { .object($0.entry) }), "total_room_count_estimate": .int(Int64(rooms.count))]
        if start + page.count < rooms.count { answer["next_batch"] = .string(String(start + page.count)) }
        if start > 0 { answer["prev_batch"] = .string(String(max(0, start - count))) }
        return .object(answer)
    }
}
