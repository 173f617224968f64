import Core
import Synchronization

// The smaller parts of ChatState, each the only owner of its table.

/// Per room, each member's read markers (`m.fully_read`, `m.read`) and
/// where in `chat-read-markers` they were written. Written by that topic's tail.
final class ReadMarkerTable: Sendable {
    private let markers = Mutex<[String: [String: (markers: [String: String], offset: Int64, timestamp: Int64)]]>([:])

    func set(user: String, roomID: String, markers value: [String: String], offset: Int64, timestamp: Int64) {
        markers.withLock { $0[roomID, default: [:]][user] = (value, offset, timestamp) }
    }

    /// A room's read markers written at or after `offset` (all with nil).
    func since(roomID: String, offset: Int64?) -> [(user: String, markers: [String: String], timestamp: Int64)] {
        markers.withLock { markers in
            (markers[roomID] ?? [:]).filter { offset == nil || $0.value.offset >= offset! }
                .map { ($0.key, $0.value.markers, $0.value.timestamp) }.sorted { $0.user < $1.user }
        }
    }

    func own(user: String, roomID: String) -> [String: String] {
        markers.withLock { $0[roomID]?[user]?.markers ?? [:] }
    }
}

/// Serialised pieces of sync answers shared by every member syncing a room
/// from the same position: timeline deltas and whole bodies. Keys carry the
/// timeline cache's epoch, so a piece made before a restart is never found.
final class SharedAnswers: Sendable {
    /// A shared piece, and the devices (`user|device|`) that sent one of
    /// its events: those see their transaction ids, so not this piece.
    struct Piece: Sendable {
        var json: String
        var changed = true
        var senders: Set<String> = []
        /// In a body of one joined room: that room and where its
        /// `"unread_notifications":{…}` lies (UTF-8 offsets).
        var unread: (roomID: String, range: Range<Int>)? = nil
    }

    private struct Tables {
        var deltas: [String: Piece] = [:]
        var answers: [String: Piece] = [:]
    }

    /// Bounds: cleared whole when reached (members of a room re-ask within
    /// one round, so what is lost is remade at once).
    static let entriesMax = 10_000
    private let tables = Mutex(Tables())

    func delta(_ key: String) -> Piece? { tables.withLock { $0.deltas[key] } }

    func storeDelta(_ key: String, _ json: Piece) {
        tables.withLock { tables in
            if tables.deltas.count > Self.entriesMax { tables.deltas.removeAll(keepingCapacity: true) }
            tables.deltas[key] = json
        }
    }

    func answer(_ key: String) -> Piece? { tables.withLock { $0.answers[key] } }

    func storeAnswer(_ key: String, _ answer: Piece) {
        tables.withLock { tables in
            if tables.answers.count > Self.entriesMax { tables.answers.removeAll(keepingCapacity: true) }
            tables.answers[key] = answer
        }
    }

    /// Frees what a cache restart made unreachable.
    func removeAll() {
        tables.withLock { $0 = Tables() }
    }
}

/// Client transaction ids (`user|device|txnId`) and their events: a
/// retried send gets the first answer. About the last 200,000 sends are
/// remembered, the least recently used going first: enough for any
/// client's retries, bounded for the gateway's memory.
///
/// A gateway that starts again remembers nothing: before a room's first
/// send here, the room's latest sends are read back from the broker's
/// index (`MatrixAPI.recallTransactions`), so a retry of a send made before
/// the restart is answered, not stored twice. From then on the fan-out's
/// deliveries keep the memory current.
final class TransactionMemory: Sendable {
    private let events = Mutex(RecencyCache<String, String>(countMax: Limits.transactionsRememberedMax))
    /// Rooms whose latest sends were read back since this gateway started.
    private let recalled = Mutex<Set<String>>([])

    func eventID(for transaction: String) -> String? { events.withLock { $0.get(transaction) } }

    func isRecalled(_ roomID: String) -> Bool { recalled.withLock { $0.contains(roomID) } }

    func markRecalled(_ roomID: String) { _ = recalled.withLock { $0.insert(roomID) } }

    func remember(_ transaction: String, eventID: String) {
        events.withLock { $0.set(eventID, for: transaction) }
    }
}

/// Per user, a number that moves each time their waiting syncs are woken:
/// a sync that read the old one parks no more.
final class UserGenerations: Sendable {
    private let generations = Mutex<[String: UInt64]>([:])

    func of(_ user: String) -> UInt64 { generations.withLock { $0[user] ?? 0 } }

    func bump(_ users: some Sequence<String>) {
        generations.withLock { generations in
            for user in users { generations[user, default: 0] &+= 1 }
        }
    }
}

/// Where a wait for the gateway's own write is parked: a tail's topic and partition.
struct AppliedKey: Hashable, Sendable {
    var topic: String
    var partition: Int32
}

/// The offsets each tail has applied, per topic and partition, for
/// requests that read their own writes.
final class AppliedOffsets: Sendable {
    private let next = Mutex<[AppliedKey: Int64]>([:])

    func record(_ key: AppliedKey, next offset: Int64) { next.withLock { $0[key] = offset } }

    func next(_ key: AppliedKey) -> Int64 { next.withLock { $0[key] ?? 0 } }
}
