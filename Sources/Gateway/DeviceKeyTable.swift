import Synchronization

/// End-to-end encryption's keys as `chat-user-data` holds them: device
/// identity keys, one-time and fallback keys, cross-signing keys and key
/// backups. The server stores and relays; it never sees a room key in the
/// clear (backups are encrypted by the client).
///
/// A one-time key is claimed by writing a null over it; every gateway
/// applies the topic in the same order, so the first null written for a key
/// is the claim that counts (`claimedAt`), and a gateway that lost a race
/// picks another key.
final class DeviceKeyTable: Sendable {
    private struct Device {
        var keys: String?
        /// Unclaimed one-time keys by `algorithm:id`.
        var oneTimeKeys: [String: String] = [:]
        /// The same counted by algorithm, kept as keys come and go: every
        /// sync of an encrypting device reports them, and counting the
        /// keys there was a quarter of the gateway's CPU in encrypted rooms.
        var oneTimeCounts: [String: Int] = [:]
        /// Fallback keys by algorithm: `{"key": ..., "used": bool}`.
        var fallbackKeys: [String: String] = [:]
        /// The algorithms of the fallback keys not handed out, sorted.
        var unusedFallback: [String] = []
    }

    /// The algorithm of a one-time key id (`algorithm:id`).
    private static func algorithm(of id: String) -> String { String(id.prefix { $0 != ":" }) }

    struct Backup: Sendable {
        /// `{"algorithm", "auth_data"}`.
        var json: String
        /// Session keys by room and session id.
        var keys: [String: [String: String]] = [:]
        /// Moves with every change: the backup's etag.
        var changed: Int64
    }

    private struct Tables {
        var devices: [String: [String: Device]] = [:]
        var crossSigning: [String: [String: String]] = [:]
        /// Per user, where their device or cross-signing keys last changed.
        var keysChanged: [String: Int64] = [:]
        var lastKeysChange: Int64 = -1
        /// The offset of the first claim of each one-time key (`user\0device\0id`).
        var claims: [String: Int64] = [:]
        var backups: [String: [String: Backup]] = [:]
    }

    private let tables = Mutex(Tables())

    /// Applies a key record; returns whether it changed someone's device
    /// list (which the users sharing a room with them are told).
    func apply(_ key: UserDataKey, json: String?, offset: Int64) -> Bool {
        tables.withLock { tables in
            switch key {
            case .deviceKeys(let user, let device):
                if let json {
                    tables.devices[user, default: [:]][device, default: Device()].keys = json
                } else {
                    // The device was deleted: its keys go with it.
                    tables.devices[user]?[device] = nil
                }
                tables.keysChanged[user] = offset
                tables.lastKeysChange = offset
                return true
            case .crossSigning(let user, let usage):
                tables.crossSigning[user, default: [:]][usage] = json
                tables.keysChanged[user] = offset
                tables.lastKeysChange = offset
                return true
            case .oneTimeKey(let user, let device, let id):
                if let json {
                    if tables.devices[user, default: [:]][device, default: Device()].oneTimeKeys.updateValue(json, forKey: id) == nil {
                        tables.devices[user]?[device]?.oneTimeCounts[Self.algorithm(of: id), default: 0] += 1
                    }
                } else if tables.devices[user]?[device]?.oneTimeKeys.removeValue(forKey: id) != nil {
                    let algorithm = Self.algorithm(of: id)
                    // Absent at zero, as when they were counted from the keys.
                    if let left = tables.devices[user]?[device]?.oneTimeCounts[algorithm], left > 1 {
                        tables.devices[user]?[device]?.oneTimeCounts[algorithm] = left - 1
                    } else {
                        tables.devices[user]?[device]?.oneTimeCounts[algorithm] = nil
                    }
                    tables.claims[user + "\u{0}" + device + "\u{0}" + id] = offset
                }
            case .fallbackKey(let user, let device, let algorithm):
                tables.devices[user, default: [:]][device, default: Device()].fallbackKeys[algorithm] = json
                let fallbacks = tables.devices[user]?[device]?.fallbackKeys ?? [:]
                tables.devices[user]?[device]?.unusedFallback = fallbacks.filter { FallbackKey($0.value)?.used == false }.keys.sorted()
            case .backupVersion(let user, let version):
                if let json {
                    let keys = tables.backups[user]?[version]?.keys ?? [:]
                    tables.backups[user, default: [:]][version] = Backup(json: json, keys: keys, changed: offset)
                } else {
                    tables.backups[user]?[version] = nil
                }
            case .backupKey(let user, let version, let room, let session):
                tables.backups[user]?[version]?.keys[room, default: [:]][session] = json
                tables.backups[user]?[version]?.changed = offset
            default:
                break
            }
            return false
        }
    }

    /// A user's devices' identity keys, by device id.
    func deviceKeys(of user: String) -> [String: String] {
        tables.withLock { $0.devices[user]?.compactMapValues(\.keys) ?? [:] }
    }

    func hasDeviceKeys(user: String, device: String) -> Bool {
        tables.withLock { $0.devices[user]?[device]?.keys != nil }
    }

    func crossSigning(of user: String) -> [String: String] { tables.withLock { $0.crossSigning[user] ?? [:] } }

    /// Unclaimed one-time keys of a device, counted by algorithm.
    func oneTimeKeyCounts(user: String, device: String) -> [String: Int] {
        tables.withLock { $0.devices[user]?[device]?.oneTimeCounts ?? [:] }
    }

    func hasOneTimeKey(user: String, device: String, id: String) -> String? {
        tables.withLock { $0.devices[user]?[device]?.oneTimeKeys[id] }
    }

    /// An unclaimed one-time key of `algorithm`, not among `skipping`.
    func oneTimeKey(user: String, device: String, algorithm: String, skipping: Set<String>) -> (id: String, json: String)? {
        tables.withLock { tables in
            let keys = tables.devices[user]?[device]?.oneTimeKeys ?? [:]
            return keys.filter { $0.key.hasPrefix(algorithm + ":") && !skipping.contains($0.key) }.min { $0.key < $1.key }.map { ($0.key, $0.value) }
        }
    }

    /// Where the first claim of a one-time key was written.
    func claimedAt(user: String, device: String, id: String) -> Int64? {
        tables.withLock { $0.claims[user + "\u{0}" + device + "\u{0}" + id] }
    }

    func fallbackKey(user: String, device: String, algorithm: String) -> String? {
        tables.withLock { $0.devices[user]?[device]?.fallbackKeys[algorithm] }
    }

    /// The algorithms of a device's fallback keys not yet handed out.
    func unusedFallbackTypes(user: String, device: String) -> [String] {
        tables.withLock { $0.devices[user]?[device]?.unusedFallback ?? [] }
    }

    /// Users whose device lists changed last at or after `since` (and
    /// before `before`).
    func keysChanged(since: Int64, before: Int64 = .max) -> Set<String> {
        tables.withLock { tables in
            guard tables.lastKeysChange >= since else { return [] }
            return Set(tables.keysChanged.filter { $0.value >= since && $0.value < before }.keys)
        }
    }

    func backups(of user: String) -> [String: Backup] { tables.withLock { $0.backups[user] ?? [:] } }
}

/// A stored fallback key: the key as uploaded, its id, and whether it was
/// handed out (it stays usable until replaced, as the specification says).
struct FallbackKey: Codable, Equatable {
    var id: String
    var key: JSONValue
    var used: Bool

    init(id: String, key: JSONValue, used: Bool) {
        self.id = id
        self.key = key
        self.used = used
    }

    init?(_ json: String) {
        guard let decoded = MatrixJSON.decodeRecord(FallbackKey.self, from: Array(json.utf8)) else { return nil }
        self = decoded
    }
}
