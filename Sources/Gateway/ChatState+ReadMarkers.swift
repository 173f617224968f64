import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import Synchronization

// Read markers per room and member, as the chat-read-markers topic holds them.
extension ChatState {
    /// A read-markers record: the user's markers in a room; wakes the
    /// room's members (they see each other's read receipts).
    func applyReadMarkers(_ record: StoredRecord) {
        guard let key = String(bytes: record.key, encoding: .utf8), let separator = key.firstIndex(of: "\u{0}"),
              let value = record.value, let object = MatrixJSON.decodeRecord([String: JSONValue].self, from: value) else {
            inner.withLock { $0.position.markers = max($0.position.markers, record.offset + 1) }
            return
        }
        let user = String(key[..<separator])
        let roomID = String(key[key.index(after: separator)...])
        let markers = object.compactMapValues(\.string)
        let woken = inner.withLock { inner -> [String] in
            inner.position.markers = max(inner.position.markers, record.offset + 1)
            inner.readMarkers[roomID, default: [:]][user] = (markers, record.offset, record.timestamp)
            let members = (inner.rooms[roomID]?.members ?? [:]).filter { $0.value.membership == "join" }.map(\.key)
            Self.bumpGenerations(&inner, users: members)
            return members
        }
        for user in woken { syncWaiters.wake(user, with: ()) }
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
}
