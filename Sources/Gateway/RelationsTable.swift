import ChatWire
import KafkaWire
import Synchronization

/// Events that relate to another, as chat-relations holds them, folded per
/// target into what `unsigned.m.relations` bundles with it: its newest edit
/// (`m.replace`), its thread's summary (`m.thread`) and the events that
/// reference it (`m.reference`). Every gateway reads the topic whole at
/// start and tails it, as it does chat-redactions.
///
/// What is kept per target is small but for edits (each edit whole, as an
/// edit's validity and a redaction of the newest are decided when served):
/// a thread keeps its count, its participants and its newest event.
final class RelationsTable: Sendable {
    /// A relating event: what ordering and validity need, and the event.
    struct Relating: Sendable, Equatable {
        var eventID: String
        var sender: String
        var type: String
        var timestamp: Int64
        var json: String

        /// The specification's order of edits and thread events: by
        /// `origin_server_ts`, then by event id.
        func isNewer(than other: Relating) -> Bool {
            (timestamp, eventID) > (other.timestamp, other.eventID)
        }
    }

    struct Aggregation: Sendable {
        var edits: [Relating] = []
        var threadEvents: Set<String> = []
        var threadParticipants: Set<String> = []
        var threadNewest: Relating?
        var references: [String] = []
    }

    /// The relation types that are aggregated; annotations (reactions) are
    /// not, as the specification leaves them to `/relations`.
    static let aggregated: Set<String> = ["m.replace", "m.thread", "m.reference"]

    private let byTarget = Mutex<[String: Aggregation]>([:])
    /// Whether any relation is known: the sync's render skips the lookup
    /// per event while none is.
    private let known = Atomic<Bool>(false)

    /// Folds one relating event in; a record read twice changes nothing.
    /// Keyed by room and target: an event relating to an event of another
    /// room (any member can name any event id) is never bundled with it.
    func add(roomID: String, target: String, relType: String, _ event: Relating) {
        guard Self.aggregated.contains(relType) else { return }
        let key = roomID + "\u{0}" + target
        byTarget.withLock { table in
            var aggregation = table[key] ?? Aggregation()
            switch relType {
            case "m.replace":
                guard !aggregation.edits.contains(where: { $0.eventID == event.eventID }) else { return }
                aggregation.edits.append(event)
            case "m.thread":
                guard aggregation.threadEvents.insert(event.eventID).inserted else { return }
                aggregation.threadParticipants.insert(event.sender)
                if aggregation.threadNewest.map({ event.isNewer(than: $0) }) ?? true { aggregation.threadNewest = event }
            default:
                guard !aggregation.references.contains(event.eventID) else { return }
                aggregation.references.append(event.eventID)
            }
            table[key] = aggregation
        }
        known.store(true, ordering: .releasing)
    }

    func aggregation(of target: String, in roomID: String) -> Aggregation? {
        guard known.load(ordering: .acquiring) else { return nil }
        return byTarget.withLock { $0[roomID + "\u{0}" + target] }
    }
}

/// The head of a relating event as chat-relations stores it.
private struct RelatingHead: Decodable {
    var eventID: String
    var roomID: String
    var originServerTS: Int64
    var sender: String
    var type: String

    enum CodingKeys: String, CodingKey {
        case eventID = "event_id"
        case roomID = "room_id"
        case originServerTS = "origin_server_ts"
        case sender, type
    }
}

// The relations tail.
extension ChatState {
    /// The headers of a chat-relations record: the relation's type and target.
    static func relationHeaders(relType: String, target: String) -> [RecordHeader] {
        [RecordHeader(key: Array("rel_type".utf8), value: Array(relType.utf8)), RecordHeader(key: Array("relates_to".utf8), value: Array(target.utf8))]
    }

    /// A chat-relations record (key: the relating event's id; value: the
    /// client event; headers: `rel_type` and `relates_to`): folded into its
    /// target's aggregation, and shared answers made before are dropped, so
    /// a sync serialises the target again with what is bundled now.
    func applyRelation(_ record: StoredRecord) {
        guard let value = record.value, let json = String(validating: value, as: UTF8.self),
              let relType = Self.header("rel_type", in: record.headers), let target = Self.header("relates_to", in: record.headers),
              let head = MatrixJSON.decodeRecord(RelatingHead.self, from: value) else { return }
        relations.add(roomID: head.roomID, target: target, relType: relType,
                      .init(eventID: head.eventID, sender: head.sender, type: head.type, timestamp: head.originServerTS, json: json))
        shared.removeAll()
    }
}
