import Synchronization

/// A record's key in `chat-user-data`: what it is and whose. The topic is
/// compacted, so each key's newest record is all that is kept; a null value
/// removes the thing.
enum UserDataKey: Equatable, Sendable {
    /// Account data of a user: global (`room` nil) or for one room.
    case accountData(user: String, room: String?, type: String)
    /// A sync filter, by its id (a digest of its JSON: the same filter
    /// uploaded twice is one record).
    case filter(user: String, id: String)
    /// Display name and avatar URL.
    case profile(user: String)
    /// A device's display name.
    case device(user: String, id: String)
    /// A device's identity keys (`keys/upload`'s `device_keys`).
    case deviceKeys(user: String, device: String)
    /// One one-time key (`algorithm:id`); a null claims it.
    case oneTimeKey(user: String, device: String, id: String)
    /// A device's fallback key for an algorithm.
    case fallbackKey(user: String, device: String, algorithm: String)
    /// A cross-signing key: `master`, `self_signing` or `user_signing`.
    case crossSigning(user: String, usage: String)
    /// A key backup version's algorithm and auth data.
    case backupVersion(user: String, version: String)
    /// One session's key in a backup.
    case backupKey(user: String, version: String, room: String, session: String)

    var user: String {
        switch self {
        case .accountData(let user, _, _), .filter(let user, _), .profile(let user), .device(let user, _), .deviceKeys(let user, _),
             .oneTimeKey(let user, _, _), .fallbackKey(let user, _, _), .crossSigning(let user, _), .backupVersion(let user, _),
             .backupKey(let user, _, _, _): user
        }
    }

    /// Parts joined by NUL, which no user id, room id or type holds.
    var bytes: [UInt8] {
        let parts: [String] = switch self {
        case .accountData(let user, let room, let type): ["a", user, room ?? "", type]
        case .filter(let user, let id): ["f", user, id]
        case .profile(let user): ["p", user]
        case .device(let user, let id): ["d", user, id]
        case .deviceKeys(let user, let device): ["k", user, device]
        case .oneTimeKey(let user, let device, let id): ["o", user, device, id]
        case .fallbackKey(let user, let device, let algorithm): ["b", user, device, algorithm]
        case .crossSigning(let user, let usage): ["x", user, usage]
        case .backupVersion(let user, let version): ["v", user, version]
        case .backupKey(let user, let version, let room, let session): ["r", user, version, room, session]
        }
        return Array(parts.joined(separator: "\u{0}").utf8)
    }

    init?(_ bytes: [UInt8]) {
        let parts = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        switch (parts.first, parts.count) {
        case ("a", 4): self = .accountData(user: parts[1], room: parts[2].isEmpty ? nil : parts[2], type: parts[3])
        case ("f", 3): self = .filter(user: parts[1], id: parts[2])
        case ("p", 2): self = .profile(user: parts[1])
        case ("d", 3): self = .device(user: parts[1], id: parts[2])
        case ("k", 3): self = .deviceKeys(user: parts[1], device: parts[2])
        case ("o", 4): self = .oneTimeKey(user: parts[1], device: parts[2], id: parts[3])
        case ("b", 4): self = .fallbackKey(user: parts[1], device: parts[2], algorithm: parts[3])
        case ("x", 3): self = .crossSigning(user: parts[1], usage: parts[2])
        case ("v", 3): self = .backupVersion(user: parts[1], version: parts[2])
        case ("r", 5): self = .backupKey(user: parts[1], version: parts[2], room: parts[3], session: parts[4])
        default: return nil
        }
    }
}

/// Each user's own records as `chat-user-data` holds them, read whole by
/// the topic's tail (`apply`); the values are JSON objects kept as text.
final class UserDataTable: Sendable {
    /// A value and where in the topic it was written: a sync token below
    /// the offset has not seen it.
    struct Entry: Sendable, Equatable {
        var json: String
        var offset: Int64
    }

    private struct UserData {
        var accountData: [String: Entry] = [:]
        var roomAccountData: [String: [String: Entry]] = [:]
        var filters: [String: String] = [:]
        var profile: Entry?
        var devices: [String: Entry] = [:]
        /// The newest offset of anything a sync shows (account data): a
        /// token at or past it has nothing new of this user's.
        var syncedChange: Int64 = -1
    }

    private let users = Mutex<[String: UserData]>([:])

    /// Applies a record; returns whether a sync of its user shows it.
    @discardableResult
    func apply(_ key: UserDataKey, json: String?, offset: Int64) -> Bool {
        users.withLock { users in
            var data = users.removeValue(forKey: key.user) ?? UserData()
            defer { users[key.user] = data }
            let entry = json.map { Entry(json: $0, offset: offset) }
            switch key {
            case .accountData(_, let room?, let type):
                data.roomAccountData[room, default: [:]][type] = entry ?? Entry(json: "{}", offset: offset)
                data.syncedChange = offset
                return true
            case .accountData(_, nil, let type):
                data.accountData[type] = entry ?? Entry(json: "{}", offset: offset)
                data.syncedChange = offset
                return true
            case .filter(_, let id):
                data.filters[id] = json
            case .profile:
                data.profile = entry
            case .device(_, let id):
                data.devices[id] = entry
            default:
                // Keys are DeviceKeyTable's.
                break
            }
            return false
        }
    }

    func accountData(user: String, type: String) -> Entry? { users.withLock { $0[user]?.accountData[type] } }

    func roomAccountData(user: String, room: String, type: String) -> Entry? { users.withLock { $0[user]?.roomAccountData[room]?[type] } }

    /// Global account data written at or after `since` (all with nil), by type.
    func accountData(user: String, since: Int64?) -> [String: Entry] {
        users.withLock { $0[user]?.accountData.filter { since == nil || $0.value.offset >= since! } ?? [:] }
    }

    /// A room's account data written at or after `since` (all with nil), by type.
    func roomAccountData(user: String, room: String, since: Int64?) -> [String: Entry] {
        users.withLock { $0[user]?.roomAccountData[room]?.filter { since == nil || $0.value.offset >= since! } ?? [:] }
    }

    /// Whether anything a sync of `user` shows was written at or after `since`.
    func changed(user: String, since: Int64) -> Bool { users.withLock { ($0[user]?.syncedChange ?? -1) >= since } }

    func filter(user: String, id: String) -> String? { users.withLock { $0[user]?.filters[id] } }

    func profile(user: String) -> String? { users.withLock { $0[user]?.profile?.json } }

    func deviceName(user: String, id: String) -> String? { users.withLock { $0[user]?.devices[id]?.json } }
}

/// Who is typing in each room: kept by this gateway alone and never
/// written to the log (typing is a hint that is stale in seconds). Each
/// change takes the next serial, which sync tokens carry.
final class TypingTable: Sendable {
    private struct Tables {
        /// Per room, each typing user's expiry (milliseconds on the gateway's clock).
        var rooms: [String: [String: Int64]] = [:]
        /// Per room, the serial of its last change.
        var changed: [String: Int64] = [:]
        var serial: Int64 = 0
    }

    private let tables = Mutex(Tables())

    /// Sets or clears `user`'s typing in `room`; returns the new serial, or
    /// nil when nothing changed (a renewal of the same typing).
    func set(room: String, user: String, typing: Bool, until expiry: Int64) -> Int64? {
        tables.withLock { tables in
            let was = tables.rooms[room]?[user] != nil
            if typing {
                tables.rooms[room, default: [:]][user] = expiry
            } else {
                tables.rooms[room]?[user] = nil
            }
            guard was != typing else { return nil }
            tables.serial += 1
            tables.changed[room] = tables.serial
            return tables.serial
        }
    }

    var serial: Int64 { tables.withLock { $0.serial } }

    /// Ends the typing that expired by `now`; returns the rooms that changed.
    func expire(now: Int64) -> [String] {
        tables.withLock { tables in
            var rooms: [String] = []
            for (room, users) in tables.rooms where users.values.contains(where: { $0 <= now }) {
                tables.rooms[room] = users.filter { $0.value > now }
                tables.serial += 1
                tables.changed[room] = tables.serial
                rooms.append(room)
            }
            return rooms
        }
    }

    /// The users typing in `room` at `now`, if the room changed after
    /// `since` (always with nil, and when `since` is past this gateway's
    /// serial: a token of another gateway or of before a restart).
    func typing(room: String, since: Int64?, now: Int64) -> [String]? {
        tables.withLock { tables in
            let changed = tables.changed[room] ?? 0
            if let since, since <= tables.serial, changed <= since { return nil }
            if since != nil, changed == 0 { return nil }
            return (tables.rooms[room] ?? [:]).filter { $0.value > now }.keys.sorted()
        }
    }
}
