import ChatWire
import Foundation

// The fan-out's deliveries into the timeline cache.
extension ChatState {
    /// A delivered message: into its room's recent events, its transaction
    /// remembered. The position moves only with `fannedOut`. Returns the
    /// users to wake once the position has moved past it.
    func applyDelivery(_ delivery: GatewayPollResponse.Delivery) -> [String] {
        let record = delivery.record
        guard let roomID = String(bytes: record.key, encoding: .utf8), let (event, content) = Self.clientEventAndContent(roomID: roomID, partition: delivery.partition, record: record),
              cache.append(event) else {
            return []
        }
        // Its members' unread counts take the content from here rather
        // than parse the event a second time.
        unread.keepContent(content, of: event.eventID)
        if let transaction = event.transaction {
            transactions.remember(transaction, eventID: event.eventID)
        }
        return directory.members(of: roomID, in: ["join", "invite"])
    }
}
