import Synchronization

/// The rooms as the chat-state topic holds them: each room's current state
/// and members, and the rooms of each user. Written by that topic's tail
/// alone (`apply`), read by every request.
final class RoomDirectory: Sendable {
    struct Member: Sendable {
        var membership: String
        /// Where in `chat-state` this membership was written: a sync token
        /// older than this has not seen it.
        var stateOffset: Int64
    }

    struct Room: Sendable {
        /// Current state events by type and state key (`type\0stateKey`).
        var state: [String: RoomEvent] = [:]
        /// Moves with every change of `state`: the key of its serialised form.
        var stateVersion: UInt64 = 0
        var members: [String: Member] = [:]
        /// The room's power levels, parsed when they change (not per request).
        var powerLevels: PowerLevels?
        var creator: String?
        /// The sync summary, serialised when membership changes (not per sync).
        var summary = "\"summary\":{\"m.heroes\":[],\"m.joined_member_count\":0,\"m.invited_member_count\":0}"
        var joinedCount = 0

        mutating func summarize() {
            let joined = members.filter { $0.value.membership == "join" }.keys.sorted()
            let invited = members.filter { $0.value.membership == "invite" }.count
            joinedCount = joined.count
            let heroes = joined.prefix(5).map { JSONText.string($0) }.joined(separator: ",")
            summary = "\"summary\":{\"m.heroes\":[\(heroes)],\"m.joined_member_count\":\(joined.count),\"m.invited_member_count\":\(invited)}"
        }

        /// The levels in force: the room's, or its creator's before it has any.
        var levels: PowerLevels { powerLevels ?? .beforeAny(creator: creator) }

        /// The current state event of a type and key.
        func stateEvent(_ type: String, _ stateKey: String = "") -> RoomEvent? { state[type + "\u{0}" + stateKey] }

        /// Members with one of `memberships`.
        func members(in memberships: Set<String>) -> [String] {
            members.filter { memberships.contains($0.value.membership) }.map(\.key)
        }
    }

    private struct Tables {
        var rooms: [String: Room] = [:]
        var roomsOfUser: [String: Set<String>] = [:]
        /// Per room: its serialised state events and the state version they are of.
        var stateJSON: [String: (version: UInt64, json: String)] = [:]
    }

    private let tables = Mutex(Tables())

    func room(_ roomID: String) -> Room? { tables.withLock { $0.rooms[roomID] } }

    /// The power levels in force in a room.
    func levels(of roomID: String) -> PowerLevels? { tables.withLock { $0.rooms[roomID]?.levels } }

    func membership(of userID: String, in roomID: String) -> String? {
        tables.withLock { $0.rooms[roomID]?.members[userID]?.membership }
    }

    func rooms(of userID: String) -> [(roomID: String, member: Member)] {
        tables.withLock { tables in
            (tables.roomsOfUser[userID] ?? []).compactMap { id in tables.rooms[id]?.members[userID].map { (id, $0) } }
        }
    }

    func roomIDs(of userID: String) -> Set<String> { tables.withLock { $0.roomsOfUser[userID] ?? [] } }

    /// The members of a room with one of `memberships`.
    func members(of roomID: String, in memberships: Set<String>) -> [String] {
        tables.withLock { $0.rooms[roomID]?.members(in: memberships) ?? [] }
    }

    /// Every room's members and their memberships.
    func allMemberships() -> [(roomID: String, member: String, membership: String)] {
        tables.withLock { tables in
            tables.rooms.flatMap { roomID, room in room.members.map { (roomID, $0.key, $0.value.membership) } }
        }
    }

    /// A room's state events as the inside of a JSON array, serialised once
    /// per state version and shared by every member's first sync: sorting
    /// and joining a 1,000-member room's state for each of its members made
    /// their first syncs quadratic.
    func stateEventsJSON(roomID: String, _ room: Room) -> String {
        if let cached = tables.withLock({ $0.stateJSON[roomID] }), cached.version == room.stateVersion {
            return cached.json
        }
        let json = room.state.values.sorted { $0.eventID < $1.eventID }.map(\.json).joined(separator: ",")
        tables.withLock { tables in
            if (tables.stateJSON[roomID]?.version ?? 0) <= room.stateVersion {
                tables.stateJSON[roomID] = (room.stateVersion, json)
            }
        }
        return json
    }

    /// A state event, written at `offset` of chat-state, becomes the room's
    /// current state for its type and key (and a membership, its member's).
    func apply(_ event: RoomEvent, stateKey: String, offset: Int64) {
        tables.withLock { tables in
            // Taken out of the table while it changes, so it is not copied.
            var room = tables.rooms.removeValue(forKey: event.roomID) ?? Room()
            room.state[event.type + "\u{0}" + stateKey] = event
            room.stateVersion &+= 1
            if event.type == "m.room.power_levels", stateKey.isEmpty {
                room.powerLevels = MatrixAPI.content(event.json).map(PowerLevels.init(content:))
            } else if event.type == "m.room.create", stateKey.isEmpty {
                room.creator = event.sender
            }
            if let membership = event.membership {
                room.members[stateKey] = Member(membership: membership, stateOffset: offset)
                room.summarize()
                tables.roomsOfUser[stateKey, default: []].insert(event.roomID)
            }
            tables.rooms[event.roomID] = room
        }
    }
}
