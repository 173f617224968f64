import ChatWire
import Core
import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import Security
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
    static let state = ChatTopicNames.state
    /// Accounts, keyed by user id; the first record for a user wins.
    static let accounts = ChatTopicNames.accounts
    /// Access tokens by their SHA-256; a null value revokes one.
    static let sessions = ChatTopicNames.sessions
    /// Each user's account data, push rules, filters, profile, device names
    /// and encryption keys.
    static let userData = ChatTopicNames.userData
    /// Messages to devices, keyed by user and device id.
    static let toDevice = ChatTopicNames.toDevice
    /// Redacted events by id: the redaction served in their place.
    static let redactions = ChatTopicNames.redactions
    /// Relating events by id, folded into the aggregations of their targets.
    static let relations = ChatTopicNames.relations
    /// Room aliases and the public room list.
    static let directory = ChatTopicNames.directory
    /// Uploaded files, in chunks, and where each file's chunks lie.
    static let media = ChatTopicNames.media
    static let mediaIndex = ChatTopicNames.mediaIndex
    static let typing = ChatTopicNames.typing
    /// Per user and room, the read markers the client set.
    static let readMarkers = ChatTopicNames.readMarkers
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
    /// `user|device|txnId` of the send that stored it: the sending device
    /// sees its transaction id in `unsigned`.
    var transaction: String? = nil

    /// The event as the device that sent it sees it: with
    /// `unsigned.transaction_id` (nil for anyone else).
    func json(forDevice prefix: String) -> String? {
        guard let transaction, transaction.hasPrefix(prefix) else { return nil }
        let id = JSONText.string(String(transaction.dropFirst(prefix.utf8.count)))
        return json(addingUnsigned: "\"transaction_id\":\(id)")
    }

    /// The event with one more member of `unsigned` (`"name":value`).
    func json(addingUnsigned member: String) -> String {
        // With a sequence, the first "unsigned" is the one put in front of
        // the stored value (`ChatState.clientEvent`); one put in front here
        // is first too. Anywhere else the text could be inside `content`.
        // Searched and spliced as UTF-8: Foundation's `range(of:)` and
        // `replacingCharacters` bridged through NSString, 2.4% of the
        // process's CPU in twenty rooms of 2.
        let front = "{\"unsigned\":{"
        if json.utf8.starts(with: front.utf8) {
            return Self.splice(json, at: front.utf8.count, member + ",")
        }
        if sequence != nil, let start = JSONText.utf8Offset(of: "\"unsigned\":{", in: json) {
            return Self.splice(json, at: start + "\"unsigned\":{".utf8.count, member + ",")
        }
        return front + member + "}," + Substring(json.utf8.dropFirst())
    }

    /// `text` with `inserted` put after its first `offset` bytes of UTF-8
    /// (a boundary between ASCII characters of the JSON's syntax).
    private static func splice(_ text: String, at offset: Int, _ inserted: String) -> String {
        let index = text.utf8.index(text.utf8.startIndex, offsetBy: offset)
        var result = ""
        result.reserveCapacity(text.utf8.count + inserted.utf8.count)
        result += Substring(text.utf8[..<index])
        result += inserted
        result += Substring(text.utf8[index...])
        return result
    }
}

/// A position in the chat's topics: the sync token.
struct SyncPosition: Sendable, Equatable {
    /// Next offset per partition of `conversations`.
    var timeline: [Int64]
    /// Next offset of `chat-state`.
    var state: Int64
    /// Next offset of `chat-read-markers`.
    var markers: Int64 = 0
    /// Next offset of `chat-user-data`.
    var userData: Int64 = 0
    /// This gateway's typing serial (`TypingTable`): not a log position.
    var typing: Int64 = 0
    /// Next offset of `chat-to-device`.
    var toDevice: Int64 = 0

    var token: String { "s\(state)_" + timeline.map(String.init).joined(separator: "_") + "_\(markers)_\(userData)_\(typing)_\(toDevice)" }

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
        // Tokens of before user data, typing and to-device messages
        // (partitions + 2 numbers) still count.
        guard numbers.count == partitions + 5 || numbers.count == partitions + 2 else { return nil }
        state = numbers[0]
        timeline = Array(numbers.dropFirst().prefix(partitions))
        markers = numbers[partitions + 1]
        if numbers.count == partitions + 5 {
            userData = numbers[partitions + 2]
            typing = numbers[partitions + 3]
            toDevice = numbers[partitions + 4]
        }
    }
}

struct Session: Sendable {
    var userID: String
    var deviceID: String

    /// `user|device|`: how a send's transaction (`user|device|txnId`) names its device.
    var devicePrefix: String { "\(userID)|\(deviceID)|" }

    /// The `user|device|` of a transaction.
    static func devicePrefix(ofTransaction transaction: String) -> String? {
        // User ids hold no "|"; the device id ends at the next one.
        guard let first = transaction.firstIndex(of: "|"), let second = transaction[transaction.index(after: first)...].firstIndex(of: "|") else { return nil }
        return String(transaction[...second])
    }
}

/// What the gateway has read from the chat topics, kept current by its
/// tails and the fan-out poll, in parts that each own their table behind a
/// lock of their own (Docs/architecture.md, "Who owns what"); no lock is
/// taken while another is held. The operations here are the ones that
/// touch more than one part, in an order that keeps a sync from missing
/// what woke it: tables first, then the position, then the generations,
/// then the wake.
final class ChatState: Sendable {
    let serverName: String
    let timelinePartitions: Int32
    let credentials = ChatCredentials()
    let directory = RoomDirectory()
    let cache: TimelineCache
    let markers = ReadMarkerTable()
    let shared = SharedAnswers()
    let transactions = TransactionMemory()
    let userData = UserDataTable()
    let typing = TypingTable()
    let keys = DeviceKeyTable()
    let toDevice = ToDeviceTable()
    let redactions = RedactionTable()
    let relations = RelationsTable()
    let unread = UnreadTable()
    let aliases = DirectoryTable()
    let media = MediaTable()
    let registration = FanOutRegistration()
    let generations = UserGenerations()
    let applied = AppliedOffsets()
    /// Failed logins in the last minute, by user name and by client
    /// address, and registrations by address (MatrixAPI+Accounts).
    let loginsByUser = Mutex(AttemptLimiter(limit: Limits.chatLoginsPerMinutePerUser, windowMilliseconds: 60_000))
    let loginsByAddress = Mutex(AttemptLimiter(limit: Limits.chatLoginsPerMinutePerAddress, windowMilliseconds: 60_000))
    let registrationsByAddress: Mutex<AttemptLimiter>
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

    init(serverName: String, timelinePartitions: Int32, registrationsPerMinute: Int = 0) {
        self.serverName = serverName
        self.timelinePartitions = timelinePartitions
        cache = TimelineCache(partitions: timelinePartitions)
        registrationsByAddress = Mutex(AttemptLimiter(limit: max(registrationsPerMinute, 1), windowMilliseconds: 60_000))
        syncWaiters = ParkedWaiters(deadlines: timeouts, expired: (), waitersMax: Limits.parkedSyncsMax)
        appliedWaiters = ParkedWaiters(deadlines: timeouts, expired: (), waitersMax: Limits.parkedSyncsMax)
        registrationWaiters = ParkedWaiters(deadlines: timeouts, expired: (), waitersMax: Limits.parkedSyncsMax)
    }

    func partition(ofRoom roomID: String) -> Int32 { cache.partition(ofRoom: roomID) }
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

    /// Where `pattern` first starts in `text`, in bytes of UTF-8: a plain
    /// byte search (Foundation's `range(of:)` and `contains` bridge
    /// through NSString).
    static func utf8Offset(of pattern: String, in text: String) -> Int? {
        let pattern = Array(pattern.utf8)
        let bytes = text.utf8
        guard !pattern.isEmpty else { return 0 }
        guard bytes.count >= pattern.count else { return nil }
        let found: Int?? = bytes.withContiguousStorageIfAvailable { buffer in
            for start in 0...(buffer.count - pattern.count) where buffer[start] == pattern[0] {
                if buffer[start..<(start + pattern.count)].elementsEqual(pattern) { return start }
            }
            return nil
        }
        if let found { return found }
        return bytes.firstRange(of: pattern).map { bytes.distance(from: bytes.startIndex, to: $0.lowerBound) }
    }
}
