import Foundation
import KafkaNIO

// The read-markers tail.
extension ChatState {
    /// A read-markers record: the user's markers in a room; wakes the
    /// room's members (they see each other's read receipts).
    func applyReadMarkers(_ record: StoredRecord) {
        guard let key = String(bytes: record.key, encoding: .utf8), let separator = key.firstIndex(of: "\u{0}"),
              let value = record.value, let object = JSONValue(parsing: value)?.members else {
            cache.advance(markers: record.offset + 1)
            return
        }
        let user = String(key[..<separator])
        let roomID = String(key[key.index(after: separator)...])
        markers.set(user: user, roomID: roomID, markers: object.compactMapValues(\.string), offset: record.offset, timestamp: record.timestamp)
        cache.advance(markers: record.offset + 1)
        wake(users: Set(directory.members(of: roomID, in: ["join"])))
    }
}
