// The request fuzzer compiles KafkaWire into the same module (Tests/Fuzz/run.sh).
#if canImport(KafkaWire)
import KafkaWire
#endif

/// Postduif's own APIs for its chat services (ExtensionAPIs.swift): Kafka's
/// framing and request header with API keys far above Kafka's. The broker
/// answers them once the fan-out has registered them, and never lists them
/// in ApiVersions, so a Kafka client never sees them.
public enum ChatApiKey: Int16, CaseIterable, Sendable, CustomStringConvertible {
    /// A page of one conversation from the conversation index.
    case conversationHistory = 32000
    /// A chat gateway registers the users it serves and takes the fan-out's
    /// deliveries for them.
    case gatewayPoll = 32001

    public var description: String {
        switch self {
        case .conversationHistory: "ConversationHistory"
        case .gatewayPoll: "GatewayPoll"
        }
    }

    /// The versions answered; none of them is flexible.
    public var versions: ClosedRange<Int16> { 0...0 }
}
