import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// ConversationHistory: a page of one conversation from the conversation index.
extension Broker {
    /// A page of one conversation from the index, committed messages only.
    func conversationHistory(_ request: ConversationHistoryRequest) -> ConversationHistoryResponse {
        func failure(_ code: ErrorCode) -> ConversationHistoryResponse {
            ConversationHistoryResponse(errorCode: code.rawValue, highWatermark: -1, messages: [])
        }
        guard let log = try? store.partition(topic: request.topic, index: request.partition) else { return failure(.unknownTopicOrPartition) }
        guard leads(topic: request.topic, index: request.partition) else { return failure(.notLeaderOrFollower) }
        let position: HistoryPosition = switch request.position {
        case .latest: .latest
        case .before(let sequence): .before(sequence: sequence)
        case .after(let sequence): .after(sequence: sequence)
        }
        let highWatermark = log.highWatermark
        let bound = request.maxOffset >= 0 ? min(request.maxOffset, highWatermark) : highWatermark
        do {
            let page = try log.history(conversation: request.conversation, from: position, limit: Int(max(request.limit, 0)), maxOffset: bound)
            return ConversationHistoryResponse(errorCode: 0, highWatermark: highWatermark, messages: page)
        } catch {
            return failure(Self.errorCode(for: error))
        }
    }
}
