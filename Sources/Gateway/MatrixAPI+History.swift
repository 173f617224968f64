import ChatWire
import Foundation
import Hummingbird
import HummingbirdCore
import KafkaWire
import Logging
import Metrics
import NIOCore

// /messages: a room's history, a page at a time.
extension MatrixAPI {
    /// `/messages`: pages through the broker's conversation index. Tokens:
    /// `q<sequence>` (a conversation sequence) or `o<offset>` (a timeline
    /// offset, from /sync's prev_batch).
    func messages(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let roomID = parameter(context, "roomId")
        try requireJoined(session, roomID)
        let query = request.uri.queryParameters
        let backwards = (query.get("dir") ?? "b") == "b"
        let limit = Int32(max(1, min(Int(query.get("limit") ?? "") ?? 10, 100)))
        let from = query.get("from")
        let conversation = Array(roomID.utf8)
        let partition = state.partition(ofRoom: roomID)
        let page: ConversationHistoryResponse
        if backwards {
            if let from, from.hasPrefix("q"), let sequence = UInt64(from.dropFirst()) {
                page = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .before(sequence: sequence), limit: limit)
            } else if let from, from.hasPrefix("o"), let offset = Int64(from.dropFirst()) {
                page = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .latest, limit: limit, maxOffset: offset)
            } else {
                page = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .latest, limit: limit)
            }
        } else {
            var after: UInt64 = 0
            if let from, from.hasPrefix("q"), let sequence = UInt64(from.dropFirst()) {
                after = sequence
            } else if let from, from.hasPrefix("o"), let offset = Int64(from.dropFirst()) {
                let before = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .latest, limit: 1, maxOffset: offset)
                after = before.messages.last?.sequence ?? 0
            }
            page = try await link.history(topic: ChatTopics.conversations, conversation: conversation, position: .after(sequence: after), limit: limit)
        }
        let ordered = backwards ? page.messages.reversed() : page.messages
        let events = ordered.compactMap { ChatState.clientEvent(roomID: roomID, partition: partition, record: $0) }.map { served($0, roomID: roomID, viewer: session.userID) }
        let start = from ?? (backwards ? "o\(page.highWatermark)" : "q0")
        var answer = "{\"chunk\":[\(events.joined(separator: ","))],\"start\":\(JSONText.string(start))"
        // A full page may have more beyond it; a short one ends the history.
        if page.messages.count == Int(limit), let edge = backwards ? page.messages.first : page.messages.last {
            answer += ",\"end\":\(JSONText.string("q\(edge.sequence)"))"
        }
        return Self.ok(answer + "}")
    }
}
