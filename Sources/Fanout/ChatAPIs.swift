import Broker
import ChatWire
import KafkaWire
import LogStore

extension FanOut {
    /// Postduif's two chat APIs, for `Broker.register`: GatewayPoll takes
    /// this fan-out's deliveries, ConversationHistory pages through the
    /// conversation index of the partitions this broker leads.
    public var extensionAPIs: [ExtensionAPI] {
        [
            ExtensionAPI(key: ChatApiKey.gatewayPoll.rawValue, name: ChatApiKey.gatewayPoll.description, versions: ChatApiKey.gatewayPoll.versions,
                         readsTopic: FanOutTopics.conversations) {
                [self] reader, version, body in
                let request = try GatewayPollRequest.decode(&reader, version: version)
                await poll(request).encode(&body, version: version)
            },
            ExtensionAPI(key: ChatApiKey.conversationHistory.rawValue, name: ChatApiKey.conversationHistory.description, versions: ChatApiKey.conversationHistory.versions,
                         readsTopic: FanOutTopics.conversations) {
                [broker] reader, version, body in
                let request = try ConversationHistoryRequest.decode(&reader, version: version)
                Self.conversationHistory(request, broker).encode(&body, version: version)
            },
        ]
    }

    /// A page of one conversation from the index, committed messages only.
    static func conversationHistory(_ request: ConversationHistoryRequest, _ broker: any CommittedLog) -> ConversationHistoryResponse {
        func failure(_ code: ErrorCode) -> ConversationHistoryResponse {
            ConversationHistoryResponse(errorCode: code.rawValue, highWatermark: -1, messages: [])
        }
        guard let log = broker.committedPartition(topic: request.topic, index: request.partition) else { return failure(.unknownTopicOrPartition) }
        guard broker.leads(topic: request.topic, index: request.partition) else { return failure(.notLeaderOrFollower) }
        let position: HistoryPosition = switch request.position {
        case .latest: .latest
        case .before(let sequence): .before(sequence: sequence)
        case .after(let sequence): .after(sequence: sequence)
        }
        let highWatermark = log.highWatermark
        do {
            let page = try log.history(conversation: request.conversation, from: position, limit: Int(max(request.limit, 0)),
                                       maxOffset: request.maxOffset >= 0 ? min(request.maxOffset, highWatermark) : highWatermark)
            return ConversationHistoryResponse(errorCode: 0, highWatermark: highWatermark, messages: page.map(ConversationRecord.init))
        } catch {
            return failure(Broker.errorCode(for: error))
        }
    }
}

extension ConversationRecord {
    /// The wire form of a message the conversation index found.
    init(_ message: ConversationMessage) {
        self.init(sequence: message.sequence, offset: message.offset, timestamp: message.timestamp,
                  key: message.key, value: message.value, headers: message.headers)
    }
}
