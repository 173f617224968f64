import ChatWire
import Core
import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import Synchronization

/// The topics the chat lives in. The gateway keeps no chat state of its
/// own: everything below is read back from these, and any gateway reading
/// them serves the same rooms.
enum ChatTopics {
    /// Every room event (messages and state changes), keyed by room id:
    /// the room's timeline, in order, with the broker's conversation index.
    static let conversations = ChatTopicNames.conversations
    /// A room's current state, keyed by room, event type and state key
    /// (the latest record per key wins): members, name, power levels.
    static let state = "chat-state"
    /// Accounts, keyed by user id; the first record for a user wins.
    static let accounts = "chat-accounts"
    /// Access tokens by their SHA-256; a null value revokes one.
    static let sessions = "chat-sessions"
    /// Per user and room, the read markers the client set.
    static let readMarkers = "chat-read-markers"
    /// Membership changes keyed by room id, `{"member", "membership"}`: what
    /// the broker's fan-out routes by (written before the member event).
    static let members = ChatTopicNames.members
}

/// One room event as clients see it.
struct RoomEvent: Sendable {
    var roomID: String
    var eventID: String
    var type: String
    var sender: String
    var stateKey: String?
    /// For `m.room.member`: the membership it sets.
    var membership: String?
    var partition: Int32
    var offset: Int64
    /// The event's sequence in its room (`unsigned.postduif.seq`), by
    /// which a client drops a duplicate; nil for state-topic copies.
    var sequence: UInt64? = nil
    /// The client-format event, serialised once.
    var json: String
}

/// A position in the chat's topics: the sync token.
struct SyncPosition: Sendable, Equatable {
    /// Next offset per partition of `conversations`.
    var timeline: [Int64]
    /// Next offset of `chat-state`.
    var state: Int64
    /// Next offset of `chat-read-markers`.
    var markers: Int64 = 0

    var token: String { "s\(state)_" + timeline.map(String.init).joined(separator: "_") + "_\(markers)" }

    init(timeline: [Int64], state: Int64) {
        self.timeline = timeline
        self.state = state
    }

    init?(token: String, partitions: Int) {
        // By hand: split and Int64 parsing were a tenth of a sync's own work.
        var utf8 = token.utf8.makeIterator()
        guard utf8.next() == UInt8(ascii: "s") else { return nil }
        var numbers: [Int64] = []
        numbers.reserveCapacity(partitions + 2)
        var value: Int64 = 0
        var digits = 0
        while true {
            let byte = utf8.next()
            if let byte, byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
                guard digits < 18 else { return nil }
                value = value * 10 + Int64(byte - UInt8(ascii: "0"))
                digits += 1
                continue
            }
            guard digits > 0, byte == nil || byte == UInt8(ascii: "_") else { return nil }
            numbers.append(value)
            value = 0
            digits = 0
            if byte == nil { break }
        }
        guard numbers.count == partitions + 2 else { return nil }
        state = numbers[0]
        timeline = Array(numbers.dropFirst().prefix(partitions))
        markers = numbers[partitions + 1]
    }
}

struct Session: Sendable {
    var userID: String
    var deviceID: String
}

/// What the gateway has read from the chat topics, kept current by its
/// tails, with the recent timeline of each room as a cache. Waiting
/// `/sync` requests park here and are woken per user.
final class ChatState: Sendable {
    struct Member: Sendable {
        var membership: String
        /// Where in `chat-state` this membership was written: a sync token
        /// older than this has not seen it.
        var stateOffset: Int64
    }

    struct Room: Sendable {
        var state: [String: RoomEvent] = [:]
        /// Moves with every change of `state`: the key of its serialised form.
        var stateVersion: UInt64 = 0
        var members: [String: Member] = [:]
        /// The newest events, oldest first: `timelineCacheMax` and up to 31 more.
        var recent: [RoomEvent] = []
        /// The cache holds every event of the room from this offset on: the
        /// first delivered since the fan-out began sending this room here.
        var coveredFrom: Int64? = nil
        /// The sync summary, serialised when membership changes (not per sync).
        var summary = "\"summary\":{\"m.heroes\":[],\"m.joined_member_count\":0,\"m.invited_member_count\":0}"

        mutating func summarize() {
            let joined = members.filter { $0.value.membership == "join" }.keys.sorted()
            let invited = members.filter { $0.value.membership == "invite" }.count
            let heroes = joined.prefix(5).map { JSONText.string($0) }.joined(separator: ",")
            summary = "\"summary\":{\"m.heroes\":[\(heroes)],\"m.joined_member_count\":\(joined.count),\"m.invited_member_count\":\(invited)}"
        }
    }

    struct Inner {
        /// A nil hash: the account was removed; its name stays taken.
        var accounts: [String: (hash: String?, offset: Int64)] = [:]
        var sessions: [String: Session] = [:]
        var rooms: [String: Room] = [:]
        var roomsOfUser: [String: Set<String>] = [:]
        var position: SyncPosition
        /// Where the timeline cache of each partition begins: every event
        /// at or after it is in `recent` (up to the per-room bound).
        var cacheStart: [Int64]
        /// Offsets applied per topic and partition (for read-your-writes).
        var applied: [String: [Int32: Int64]] = [:]
        /// Client transaction ids and their events; the least recently used go first.
        var transactions = RecencyCache<String, String>(countMax: Limits.transactionsRememberedMax)
        /// Per room: its serialised state events and the state version they are of.
        var stateJSON: [String: (version: UInt64, json: String)] = [:]
        /// Per room, each member's read markers (`m.fully_read`, `m.read`)
        /// and where in `chat-read-markers` they were written.
        var readMarkers: [String: [String: (markers: [String: String], offset: Int64, timestamp: Int64)]] = [:]
        /// Serialised timeline deltas shared by every member syncing a room
        /// from the same position.
        var deltas: [String: String] = [:]
        /// Users with a session syncing here, and when they last synced
        /// (monotonic seconds): the fan-out routes their rooms to this gateway.
        var localUsers: [String: Int64] = [:]
        /// Moves each time a user's waiting syncs are woken.
        var userGenerations: [String: UInt64] = [:]
        /// Per partition, the fan-out worker this gateway last heard from.
        var workers: [Int32: String] = [:]
        /// The brokers this gateway polls, and per user the brokers whose
        /// fan-out has confirmed routing the user here.
        var pollAddresses: Set<String> = []
        var registeredAt: [String: Set<String>] = [:]
        var positionToken: (position: SyncPosition, token: String)?
        /// Whole sync bodies shared by the members of a room syncing from
        /// the same position (see `MatrixAPI.syncBody`).
        var answers: [String: (body: String, changed: Bool)] = [:]
        /// Moves when a partition's cache restarts: shared answers made
        /// before (and their bytes, kept by key elsewhere) no longer count.
        var cacheEpoch: UInt64 = 0
    }

    static let timelineCacheMax = Limits.roomTimelineCacheCountMax
    let serverName: String
    /// Moves with every change to sessions or accounts: a connection that
    /// authenticated a token keeps the session while this stands still.
    let credentialsRevision = Atomic<UInt64>(0)
    let timelinePartitions: Int32
    let inner: Mutex<Inner>
    /// Deadlines of parked `/sync`s and of waits for the gateway's own
    /// writes: one timer for all, rather than a sleeping task per request.
    let timeouts = ParkedTimeouts(tick: .milliseconds(10))
    /// Parked `/sync`s by user: a task's wait (the router's path) or a
    /// callback that schedules the answer on the connection's event loop
    /// (the sync fast path).
    let syncWaiters: ParkedWaiters<String, Void>
    /// Requests waiting for this gateway's tail to read their own write.
    let appliedWaiters: ParkedWaiters<AppliedKey, Void>
    /// First syncs waiting for every broker's fan-out to route their user here.
    let registrationWaiters: ParkedWaiters<String, Void>
    /// Uptime's origin: the fan-out registration counts idle time from it.
    let clockStart = ContinuousClock.now

    init(serverName: String, timelinePartitions: Int32) {
        self.serverName = serverName
        self.timelinePartitions = timelinePartitions
        let zeros = [Int64](repeating: 0, count: Int(timelinePartitions))
        inner = Mutex(Inner(position: SyncPosition(timeline: zeros, state: 0), cacheStart: zeros))
        syncWaiters = ParkedWaiters(deadlines: timeouts, expired: (), waitersMax: Limits.parkedSyncsMax)
        appliedWaiters = ParkedWaiters(deadlines: timeouts, expired: (), waitersMax: Limits.parkedSyncsMax)
        registrationWaiters = ParkedWaiters(deadlines: timeouts, expired: (), waitersMax: Limits.parkedSyncsMax)
    }

    func partition(ofRoom roomID: String) -> Int32 {
        KafkaPartitioner.partition(forKey: Array(roomID.utf8), partitionCount: timelinePartitions)
    }

    // MARK: Reading

    var position: SyncPosition { inner.withLock { $0.position } }

    /// The position, its sync token (made once per position rather than
    /// once per answer) and the cache's epoch, read together.
    var positionWithToken: (position: SyncPosition, token: String, cacheEpoch: UInt64) {
        inner.withLock { inner in
            if let cached = inner.positionToken, cached.position == inner.position {
                return (cached.position, cached.token, inner.cacheEpoch)
            }
            let made = (inner.position, inner.position.token)
            inner.positionToken = made
            return (made.0, made.1, inner.cacheEpoch)
        }
    }
}

/// Bits of JSON text, for answers assembled from already serialised events.
enum JSONText {
    static func string(_ value: String) -> String {
        // Ids and tokens need no escaping: the common case, copied whole.
        if !value.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            return "\"" + value + "\""
        }
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
