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

    /// A parked `/sync` and the handle of its deadline in `timeouts`; woken
    /// early, the deadline is removed, so long polls leave no timers behind.
    /// `resume` ends a task's wait (the router's path) or schedules the
    /// answer on the connection's event loop (the sync fast path).
    struct Waiter {
        var resume: @Sendable () -> Void
        var timer: UInt64? = nil
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
        var transactions: [String: String] = [:]
        var userWaiters: [String: [UInt64: Waiter]] = [:]
        /// Per room: its serialised state events and the state version they are of.
        var stateJSON: [String: (version: UInt64, json: String)] = [:]
        /// Keys of parked waits: a counter (a UUID reads /dev/urandom each time).
        var nextWaitKey: UInt64 = 0
        var appliedWaiters: [UInt64: (topic: String, partition: Int32, offset: Int64, continuation: CheckedContinuation<Void, Never>, timer: UInt64?)] = [:]
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
        var registrationWaiters: [UInt64: (user: String, continuation: CheckedContinuation<Void, Never>, timer: UInt64?)] = [:]
        var positionToken: (position: SyncPosition, token: String)?
        /// Whole sync bodies shared by the members of a room syncing from
        /// the same position (see `MatrixAPI.syncBody`).
        var answers: [String: (body: String, changed: Bool)] = [:]
        /// Moves when a partition's cache restarts: shared answers made
        /// before (and their bytes, kept by key elsewhere) no longer count.
        var cacheEpoch: UInt64 = 0
    }

    static let timelineCacheMax = 200
    let serverName: String
    /// Moves with every change to sessions or accounts: a connection that
    /// authenticated a token keeps the session while this stands still.
    let credentialsRevision = Atomic<UInt64>(0)
    let timelinePartitions: Int32
    private let inner: Mutex<Inner>
    /// Deadlines of parked `/sync`s and of waits for the gateway's own
    /// writes: one timer for all, rather than a sleeping task per request.
    let timeouts = ParkedTimeouts(tick: .milliseconds(10))

    init(serverName: String, timelinePartitions: Int32) {
        self.serverName = serverName
        self.timelinePartitions = timelinePartitions
        let zeros = [Int64](repeating: 0, count: Int(timelinePartitions))
        inner = Mutex(Inner(position: SyncPosition(timeline: zeros, state: 0), cacheStart: zeros))
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

    func account(_ userID: String) -> (hash: String?, offset: Int64)? { inner.withLock { $0.accounts[userID] } }

    func session(forDigest digest: String) -> Session? { inner.withLock { $0.sessions[digest] } }

    var activeAccounts: [String] { inner.withLock { $0.accounts.filter { $0.value.hash != nil }.keys.sorted() } }

    func room(_ roomID: String) -> Room? { inner.withLock { $0.rooms[roomID] } }

    func membership(of userID: String, in roomID: String) -> String? {
        inner.withLock { $0.rooms[roomID]?.members[userID]?.membership }
    }

    func rooms(of userID: String) -> [(roomID: String, member: Member)] {
        inner.withLock { inner in
            (inner.roomsOfUser[userID] ?? []).compactMap { id in inner.rooms[id]?.members[userID].map { (id, $0) } }
        }
    }

    func transaction(_ key: String) -> String? { inner.withLock { $0.transactions[key] } }

    /// Transaction ids are remembered for the last 200,000 sends: enough
    /// for any client's retries, bounded for the gateway's memory.
    static let transactionsMax = 200_000

    func remember(transaction key: String, eventID: String) {
        inner.withLock { inner in
            if inner.transactions.count >= Self.transactionsMax { inner.transactions.removeAll(keepingCapacity: true) }
            inner.transactions[key] = eventID
        }
    }

    /// The cached events of a room after `offset` up to `end`, if the cache
    /// holds all of them; nil when the cache began later or lost some.
    func cachedEvents(roomID: String, after offset: Int64, upTo end: Int64) -> (events: [RoomEvent], complete: Bool)? {
        inner.withLock { inner in
            let partition = Int(partition(ofRoom: roomID))
            guard let room = inner.rooms[roomID], let covered = room.coveredFrom,
                  max(inner.cacheStart[partition], covered) <= offset else { return nil }
            let events = room.recent.filter { $0.offset >= offset && $0.offset < end }
            // Complete unless the bound dropped events in the range.
            let complete = room.recent.count < Self.timelineCacheMax || (room.recent.first.map { $0.offset < offset } ?? true)
            return (events, complete)
        }
    }

    /// The room's newest `limit` events below `end` from the cache, if it
    /// can tell: it holds that many, or everything since the partition began.
    func recentEvents(roomID: String, upTo end: Int64, limit: Int) -> (events: [RoomEvent], limited: Bool)? {
        inner.withLock { inner in
            guard let room = inner.rooms[roomID], room.coveredFrom != nil else { return nil }
            let recent = room.recent.filter { $0.offset < end }
            guard recent.count >= limit else { return nil }
            return (Array(recent.suffix(limit)), true)
        }
    }

    func sharedDelta(_ key: String) -> String? { inner.withLock { $0.deltas[key] } }

    /// A room's state events as the inside of a JSON array, serialised once
    /// per state version and shared by every member's first sync: sorting
    /// and joining a 1,000-member room's state for each of its members made
    /// their first syncs quadratic.
    func stateEventsJSON(roomID: String, _ room: Room) -> String {
        if let cached = inner.withLock({ $0.stateJSON[roomID] }), cached.version == room.stateVersion {
            return cached.json
        }
        let json = room.state.values.sorted { $0.eventID < $1.eventID }.map(\.json).joined(separator: ",")
        inner.withLock { inner in
            if (inner.stateJSON[roomID]?.version ?? 0) <= room.stateVersion {
                inner.stateJSON[roomID] = (room.stateVersion, json)
            }
        }
        return json
    }

    func sharedAnswer(_ key: String) -> (body: String, changed: Bool)? { inner.withLock { $0.answers[key] } }

    func storeAnswer(_ key: String, _ answer: (body: String, changed: Bool)) {
        inner.withLock { inner in
            if inner.answers.count > 10_000 { inner.answers.removeAll(keepingCapacity: true) }
            inner.answers[key] = answer
        }
    }

    func storeDelta(_ key: String, _ json: String) {
        inner.withLock { inner in
            if inner.deltas.count > 10_000 { inner.deltas.removeAll(keepingCapacity: true) }
            inner.deltas[key] = json
        }
    }

    // MARK: Applying what the tails read

    func startTimeline(partition: Int32, at offset: Int64) {
        inner.withLock { inner in
            inner.position.timeline[Int(partition)] = offset
            inner.cacheStart[Int(partition)] = offset
        }
    }

    // MARK: The fan-out's side

    private let clockStart = ContinuousClock.now
    var uptimeSeconds: Int64 { (ContinuousClock.now - clockStart).components.seconds }

    /// A user synced here: the fan-out should route their rooms here.
    func touch(user: String) {
        let now = uptimeSeconds
        inner.withLock { $0.localUsers[user] = now }
    }

    /// The users syncing here; one idle for `idle` seconds is dropped, and
    /// the fan-out stops routing to this gateway for them.
    func localUsers(idle: Int64) -> Set<String> {
        let now = uptimeSeconds
        return inner.withLock { inner in
            for (user, seen) in inner.localUsers where now - seen > idle {
                inner.localUsers[user] = nil
                inner.registeredAt[user] = nil
            }
            return Set(inner.localUsers.keys)
        }
    }

    /// A poll loop to `address` starts (or, with `active` false, ends).
    func polling(_ address: String, active: Bool) {
        inner.withLock { inner in
            if active { inner.pollAddresses.insert(address) } else { inner.pollAddresses.remove(address) }
            for user in inner.registeredAt.keys { inner.registeredAt[user]?.remove(address) }
        }
    }

    /// A poll to `address` carrying `users` was answered: its fan-out routes them here.
    ///
    /// `added` are the users this poll newly named; `fannedOutUpTo` the
    /// fan-out's positions in the answer. From those positions on, every
    /// message of the new users' rooms reaches this gateway, so a room not
    /// yet covered by the cache is covered from there: their next syncs
    /// read the cache instead of the index.
    func confirmRegistered(_ added: Set<String>, at address: String, fannedOutUpTo: [Int32: Int64]) {
        let ready = inner.withLock { inner -> [(continuation: CheckedContinuation<Void, Never>, timer: UInt64?)] in
            for user in added {
                inner.registeredAt[user, default: []].insert(address)
                for roomID in inner.roomsOfUser[user] ?? [] where inner.rooms[roomID]?.coveredFrom == nil {
                    if let upTo = fannedOutUpTo[self.partition(ofRoom: roomID)] {
                        inner.rooms[roomID]!.coveredFrom = upTo
                        inner.rooms[roomID]!.recent = []
                    }
                }
            }
            guard !inner.registrationWaiters.isEmpty else { return [] }
            var ready: [(continuation: CheckedContinuation<Void, Never>, timer: UInt64?)] = []
            for (key, waiter) in inner.registrationWaiters where Self.isRegistered(inner, waiter.user) {
                ready.append((waiter.continuation, waiter.timer))
                inner.registrationWaiters[key] = nil
            }
            return ready
        }
        for waiter in ready { resume(waiter.continuation, timer: waiter.timer) }
    }

    /// Whether every broker's fan-out routes `user` here already.
    func isRegistered(_ user: String) -> Bool { inner.withLock { Self.isRegistered($0, user) } }

    private static func isRegistered(_ inner: Inner, _ user: String) -> Bool {
        !inner.pollAddresses.isEmpty && inner.pollAddresses.isSubset(of: inner.registeredAt[user] ?? [])
    }

    /// Waits until every broker's fan-out routes `user` here, so nothing
    /// sent from now on passes this gateway by; gives up after `timeout`.
    func waitRegistered(_ user: String, timeout: Duration) async {
        let key = nextWaitKey()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = inner.withLock { inner -> Bool in
                if Self.isRegistered(inner, user) { return true }
                inner.registrationWaiters[key] = (user, continuation, nil)
                return false
            }
            if done {
                continuation.resume()
                return
            }
            timeouts.add(timeout: TimeAmount(timeout)) { [self] in
                inner.withLock { $0.registrationWaiters.removeValue(forKey: key) }?.continuation.resume()
            } attach: { timer in
                inner.withLock { inner in
                    guard inner.registrationWaiters[key] != nil else { return false }
                    inner.registrationWaiters[key]?.timer = timer
                    return true
                }
            }
        }
    }

    func generation(of user: String) -> UInt64 {
        inner.withLock { $0.userGenerations[user] ?? 0 }
    }

    /// Where a partition's fan-out stands after a poll. A new worker (the
    /// broker restarted, or leadership moved) or a reported gap means some
    /// deliveries never came: the cache of that partition restarts at
    /// `upTo`, and older positions are served from the index.
    func fannedOut(partition: Int32, worker: String, upTo: Int64, gap: Bool) {
        let index = Int(partition)
        guard index < Int(timelinePartitions) else { return }
        inner.withLock { inner in
            if inner.workers[partition] != worker || gap {
                inner.workers[partition] = worker
                inner.cacheStart[index] = upTo
                for (id, room) in inner.rooms where room.coveredFrom != nil && self.partition(ofRoom: id) == partition {
                    inner.rooms[id]!.coveredFrom = nil
                    inner.rooms[id]!.recent = []
                }
                inner.deltas.removeAll()
                inner.answers.removeAll()
                inner.cacheEpoch &+= 1
            }
            inner.position.timeline[index] = max(inner.position.timeline[index], upTo)
        }
    }

    func knowsWorker(partition: Int32) -> String? {
        inner.withLock { $0.workers[partition] }
    }

    /// A registration counts only for a name not yet taken (the first
    /// wins); an operator's record (`postduif user add --chat`) sets the
    /// password whatever was there; a null removes the account and keeps
    /// the name taken, so a user id never passes to someone else.
    func applyAccount(_ record: StoredRecord) {
        guard let userID = String(bytes: record.key, encoding: .utf8) else { return }
        defer { credentialsRevision.add(1, ordering: .releasing) }
        guard let value = record.value else {
            inner.withLock { inner in inner.accounts[userID] = (nil, inner.accounts[userID]?.offset ?? record.offset) }
            return
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any],
              let hash = object["password_hash"] as? String else { return }
        let byOperator = (object["set_by"] as? String) == "operator"
        inner.withLock { inner in
            if byOperator {
                inner.accounts[userID] = (hash, inner.accounts[userID]?.offset ?? record.offset)
            } else if inner.accounts[userID] == nil {
                inner.accounts[userID] = (hash, record.offset)
            }
        }
    }

    func applySession(_ record: StoredRecord) {
        guard let digest = String(bytes: record.key, encoding: .utf8) else { return }
        guard let value = record.value, let object = try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any],
              let userID = object["user_id"] as? String, let deviceID = object["device_id"] as? String else {
            _ = inner.withLock { $0.sessions.removeValue(forKey: digest) }
            credentialsRevision.add(1, ordering: .releasing)
            return
        }
        inner.withLock { $0.sessions[digest] = Session(userID: userID, deviceID: deviceID) }
        credentialsRevision.add(1, ordering: .releasing)
    }

    /// A delivered message: into its room's recent events; wakes the
    /// room's members. The position moves only with `fannedOut`.
    /// Returns the users to wake once the position has moved past it.
    func applyDelivery(_ delivery: GatewayPollResponse.Delivery) -> [String] {
        let record = delivery.record
        guard let roomID = String(bytes: record.key, encoding: .utf8), let event = Self.clientEvent(roomID: roomID, partition: delivery.partition, record: record) else {
            return []
        }
        return inner.withLock { inner -> [String] in
            // Taken out of the table while it changes: a copy left in it made
            // every append copy the room's recent events.
            var room = inner.rooms.removeValue(forKey: roomID) ?? Room()
            defer { inner.rooms[roomID] = room }
            if let last = room.recent.last, last.offset >= event.offset { return [] }
            if room.coveredFrom == nil { room.coveredFrom = event.offset }
            room.recent.append(event)
            // Trimmed in steps, not by one event per message.
            if room.recent.count >= Self.timelineCacheMax + 32 { room.recent.removeFirst(room.recent.count - Self.timelineCacheMax) }
            if let transaction = record.headers.first(where: { $0.key == Array("txn".utf8) })?.value.flatMap({ String(bytes: $0, encoding: .utf8) }) {
                if inner.transactions.count >= Self.transactionsMax { inner.transactions.removeAll(keepingCapacity: true) }
                inner.transactions[transaction] = event.eventID
            }
            return room.members.filter { $0.value.membership == "join" || $0.value.membership == "invite" }.map(\.key)
        }
    }

    /// Wakes the waiting syncs of `users` (after the position moved past
    /// what woke them, so their next look finds it).
    func wake(users: Set<String>) {
        let woken = inner.withLock { inner in users.flatMap { Self.takeWaiters(&inner, user: $0) } }
        for waiter in woken { resume(waiter) }
    }

    /// A state record: the room's current state and membership indexes.
    func applyState(_ record: StoredRecord) {
        guard let value = record.value, let object = try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any],
              let roomID = object["room_id"] as? String, let type = object["type"] as? String,
              let stateKey = object["state_key"] as? String, let eventID = object["event_id"] as? String,
              let sender = object["sender"] as? String, let json = String(bytes: value, encoding: .utf8) else {
            inner.withLock { $0.position.state = max($0.position.state, record.offset + 1) }
            return
        }
        let membership = type == "m.room.member" ? (object["content"] as? [String: Any])?["membership"] as? String : nil
        let event = RoomEvent(roomID: roomID, eventID: eventID, type: type, sender: sender, stateKey: stateKey, membership: membership,
                              partition: partition(ofRoom: roomID), offset: -1, json: json)
        let woken = inner.withLock { inner -> [Waiter] in
            inner.position.state = max(inner.position.state, record.offset + 1)
            var room = inner.rooms.removeValue(forKey: roomID) ?? Room()
            room.state[type + "\u{0}" + stateKey] = event
            room.stateVersion &+= 1
            var wake: [String] = []
            if let membership {
                room.members[stateKey] = Member(membership: membership, stateOffset: record.offset)
                room.summarize()
                inner.roomsOfUser[stateKey, default: []].insert(roomID)
                wake.append(stateKey)
                // A local user left: the fan-out may stop sending the room here,
                // so the cache no longer vouches for it.
                if membership != "join" && inner.localUsers[stateKey] != nil {
                    room.coveredFrom = nil
                    room.recent = []
                }
            }
            inner.rooms[roomID] = room
            return wake.flatMap { Self.takeWaiters(&inner, user: $0) }
        }
        for waiter in woken { resume(waiter) }
    }

    /// A read-markers record: the user's markers in a room; wakes the
    /// room's members (they see each other's read receipts).
    func applyReadMarkers(_ record: StoredRecord) {
        guard let key = String(bytes: record.key, encoding: .utf8), let separator = key.firstIndex(of: "\u{0}"),
              let value = record.value, let object = try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any] else {
            inner.withLock { $0.position.markers = max($0.position.markers, record.offset + 1) }
            return
        }
        let user = String(key[..<separator])
        let roomID = String(key[key.index(after: separator)...])
        let markers = object.compactMapValues { $0 as? String }
        let woken = inner.withLock { inner -> [Waiter] in
            inner.position.markers = max(inner.position.markers, record.offset + 1)
            inner.readMarkers[roomID, default: [:]][user] = (markers, record.offset, record.timestamp)
            let members = (inner.rooms[roomID]?.members ?? [:]).filter { $0.value.membership == "join" }.map(\.key)
            return members.flatMap { Self.takeWaiters(&inner, user: $0) }
        }
        for waiter in woken { resume(waiter) }
    }

    /// A room's read markers written at or after `offset` (all with nil).
    func readMarkers(roomID: String, since offset: Int64?) -> [(user: String, markers: [String: String], timestamp: Int64)] {
        inner.withLock { inner in
            (inner.readMarkers[roomID] ?? [:]).filter { offset == nil || $0.value.offset >= offset! }
                .map { ($0.key, $0.value.markers, $0.value.timestamp) }.sorted { $0.user < $1.user }
        }
    }

    func ownReadMarkers(user: String, roomID: String) -> [String: String] {
        inner.withLock { $0.readMarkers[roomID]?[user]?.markers ?? [:] }
    }

    /// Records that a tail applied everything before `next`; wakes whoever waits for it.
    func applied(topic: String, partition: Int32, next: Int64) {
        let ready = inner.withLock { inner -> [(continuation: CheckedContinuation<Void, Never>, timer: UInt64?)] in
            inner.applied[topic, default: [:]][partition] = next
            var ready: [(continuation: CheckedContinuation<Void, Never>, timer: UInt64?)] = []
            for (key, waiter) in inner.appliedWaiters where waiter.topic == topic && waiter.partition == partition && waiter.offset < next {
                ready.append((waiter.continuation, waiter.timer))
                inner.appliedWaiters.removeValue(forKey: key)
            }
            return ready
        }
        for waiter in ready { resume(waiter.continuation, timer: waiter.timer) }
    }

    /// Waits until this gateway's tail has read past `offset` (its own write,
    /// typically), so the next request sees it; gives up after `timeout`.
    func waitApplied(topic: String, partition: Int32, offset: Int64, timeout: Duration = .seconds(10)) async {
        let key = nextWaitKey()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = inner.withLock { inner -> Bool in
                if (inner.applied[topic]?[partition] ?? 0) > offset { return true }
                inner.appliedWaiters[key] = (topic, partition, offset, continuation, nil)
                return false
            }
            if done {
                continuation.resume()
                return
            }
            timeouts.add(timeout: TimeAmount(timeout)) { [self] in
                inner.withLock { $0.appliedWaiters.removeValue(forKey: key) }?.continuation.resume()
            } attach: { timer in
                inner.withLock { inner in
                    guard inner.appliedWaiters[key] != nil else { return false }
                    inner.appliedWaiters[key]?.timer = timer
                    return true
                }
            }
        }
    }

    func appliedOffset(topic: String, partition: Int32) -> Int64 {
        inner.withLock { $0.applied[topic]?[partition] ?? 0 }
    }

    /// Parks a `/sync` of `userID` until something for it arrives or
    /// `timeout` passes; at once if something arrived since `generation`.
    func waitForUser(_ userID: String, after generation: UInt64, timeout: Duration) async {
        let key = nextWaitKey()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                if !park(userID, key: key, after: generation, timeout: timeout, resume: { continuation.resume() }) {
                    continuation.resume()
                }
            }
        } onCancel: {
            wake(userID, key)
        }
    }

    /// Parks a `/sync` of `userID` as `waitForUser` does, calling `resume` once when
    /// woken or at `timeout`; nil (and no call) if something arrived since
    /// `generation`. The key is for `unpark`.
    func park(_ userID: String, after generation: UInt64, timeout: Duration, resume: @escaping @Sendable () -> Void) -> UInt64? {
        let key = nextWaitKey()
        return park(userID, key: key, after: generation, timeout: timeout, resume: resume) ? key : nil
    }

    /// Drops a parked `/sync` whose connection closed, without calling it.
    func unpark(_ userID: String, key: UInt64) {
        guard let waiter = takeWaiter(userID, key) else { return }
        if let timer = waiter.timer { timeouts.remove(timer) }
    }

    private func takeWaiter(_ userID: String, _ key: UInt64) -> Waiter? {
        inner.withLock { $0.userWaiters[userID]?.removeValue(forKey: key) }
    }

    private func park(_ userID: String, key: UInt64, after generation: UInt64, timeout: Duration, resume: @escaping @Sendable () -> Void) -> Bool {
        let parked = inner.withLock { inner -> Bool in
            if (inner.userGenerations[userID] ?? 0) != generation { return false }
            inner.userWaiters[userID, default: [:]][key] = Waiter(resume: resume)
            return true
        }
        guard parked else { return false }
        timeouts.add(timeout: TimeAmount(timeout)) { [self] in wake(userID, key) } attach: { timer in
            inner.withLock { inner in
                guard inner.userWaiters[userID]?[key] != nil else { return false }
                inner.userWaiters[userID]?[key]?.timer = timer
                return true
            }
        }
        return true
    }

    private func wake(_ userID: String, _ key: UInt64) {
        guard let waiter = takeWaiter(userID, key) else { return }
        resume(waiter)
    }

    /// Ends a parked `/sync`, and its timeout with it.
    func resume(_ waiter: Waiter) {
        if let timer = waiter.timer { timeouts.remove(timer) }
        waiter.resume()
    }

    /// Ends a wait woken before its deadline, and the deadline with it: a
    /// send's wait for its own write is 10 s long, and left in the table it
    /// would be swept thousands of times over.
    private func resume(_ continuation: CheckedContinuation<Void, Never>, timer: UInt64?) {
        if let timer { timeouts.remove(timer) }
        continuation.resume()
    }

    private func nextWaitKey() -> UInt64 {
        inner.withLock { inner in
            inner.nextWaitKey &+= 1
            return inner.nextWaitKey
        }
    }

    private static func takeWaiters(_ inner: inout Inner, user: String) -> [Waiter] {
        inner.userGenerations[user, default: 0] &+= 1
        guard let waiting = inner.userWaiters.removeValue(forKey: user) else { return [] }
        return Array(waiting.values)
    }

    // MARK: Event format

    static func eventID(partition: Int32, offset: Int64) -> String {
        "$\(partition)_\(offset)"
    }

    /// A stored timeline value (`type`, `sender`, `content`, `state_key`)
    /// in client format: the event id, room id and time are put in front.
    /// A message from the fan-out or a history page, with its sequence.
    static func clientEvent(roomID: String, partition: Int32, record: ConversationRecord) -> RoomEvent? {
        record.value.flatMap { clientEvent(roomID: roomID, partition: partition, offset: record.offset, timestamp: record.timestamp, stored: $0, sequence: record.sequence) }
    }

    static func clientEvent(roomID: String, partition: Int32, offset: Int64, timestamp: Int64, stored: [UInt8], sequence: UInt64? = nil) -> RoomEvent? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(stored)) as? [String: Any],
              let type = object["type"] as? String, let sender = object["sender"] as? String,
              stored.first == UInt8(ascii: "{"), stored.count > 2 else { return nil }
        let eventID = eventID(partition: partition, offset: offset)
        let unsigned = sequence.map { ",\"unsigned\":{\"postduif.seq\":\($0)}" } ?? ""
        let prefix = "{\"event_id\":\(JSONText.string(eventID)),\"origin_server_ts\":\(timestamp),\"room_id\":\(JSONText.string(roomID))\(unsigned),"
        let json = prefix + String(decoding: stored.dropFirst(), as: UTF8.self)
        let stateKey = object["state_key"] as? String
        let membership = type == "m.room.member" ? (object["content"] as? [String: Any])?["membership"] as? String : nil
        return RoomEvent(roomID: roomID, eventID: eventID, type: type, sender: sender, stateKey: stateKey, membership: membership,
                         partition: partition, offset: offset, sequence: sequence, json: json)
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

    static func serialize(_ object: Any) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
