import ChatWire
import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import Synchronization

// How stored records become Matrix client events.
extension ChatState {
    static func eventID(partition: Int32, offset: Int64) -> String {
        "$\(partition)_\(offset)"
    }

    /// A stored timeline value (`type`, `sender`, `content`, `state_key`)
    /// in client format: the event id, room id and time are put in front.
    /// A message from the fan-out or a history page, with its sequence.
    static func clientEvent(roomID: String, partition: Int32, record: ConversationRecord) -> RoomEvent? {
        clientEventAndContent(roomID: roomID, partition: partition, record: record)?.event
    }

    /// `clientEvent`, with the content its parse found.
    static func clientEventAndContent(roomID: String, partition: Int32, record: ConversationRecord) -> (event: RoomEvent, content: JSONValue?)? {
        guard var made = record.value.flatMap({
            clientEventAndContent(roomID: roomID, partition: partition, offset: record.offset, timestamp: record.timestamp, stored: $0, sequence: record.sequence)
        }) else {
            return nil
        }
        made.event.transaction = transaction(record.headers)
        return made
    }

    /// The `txn` header of a send (`user|device|txnId`).
    static func transaction(_ headers: [RecordHeader]) -> String? {
        header("txn", in: headers)
    }

    /// A record header's value as text (nil when absent or not UTF-8).
    static func header(_ name: String, in headers: [RecordHeader]) -> String? {
        guard let header = headers.first(where: { $0.key.elementsEqual(name.utf8) }), let value = header.value else { return nil }
        return String(validating: value, as: UTF8.self)
    }

    static func clientEvent(roomID: String, partition: Int32, offset: Int64, timestamp: Int64, stored: [UInt8], sequence: UInt64? = nil) -> RoomEvent? {
        clientEventAndContent(roomID: roomID, partition: partition, offset: offset, timestamp: timestamp, stored: stored, sequence: sequence)?.event
    }

    static func clientEventAndContent(roomID: String, partition: Int32, offset: Int64, timestamp: Int64, stored: [UInt8],
                                      sequence: UInt64? = nil) -> (event: RoomEvent, content: JSONValue?)? {
        guard stored.first == UInt8(ascii: "{"), stored.count > 2, let head = StoredEventHead(parsing: stored) else { return nil }
        let eventID = eventID(partition: partition, offset: offset)
        let unsigned = sequence.map { ",\"unsigned\":{\"postduif.seq\":\($0)}" } ?? ""
        let prefix = "{\"event_id\":\(JSONText.string(eventID)),\"origin_server_ts\":\(timestamp),\"room_id\":\(JSONText.string(roomID))\(unsigned),"
        let json = prefix + String(decoding: stored.dropFirst(), as: UTF8.self)
        return (RoomEvent(roomID: roomID, eventID: eventID, type: head.type, sender: head.sender, stateKey: head.stateKey, membership: head.membership,
                          partition: partition, offset: offset, sequence: sequence, json: json), head.content)
    }
}
