import Foundation

/// One message the workload hands to a target.
public struct OutgoingMessage: Sendable {
    public var key: [UInt8]
    public var value: [UInt8]
    /// When the message was due (monotonic nanoseconds): latency starts here.
    public var intended: UInt64

    public init(key: [UInt8], value: [UInt8], intended: UInt64) {
        self.key = key
        self.value = value
        self.intended = intended
    }
}

/// The load tool's payload: the intended send time and a message number up
/// front, then filler up to the message size. A consumer in the same
/// process computes send-to-receipt latency and counts each message once.
public enum Payload {
    public static let headerBytes = 16

    public static func make(size: Int, intended: UInt64, id: UInt64, filler: [UInt8]) -> [UInt8] {
        var value = [UInt8](repeating: 0, count: max(size, headerBytes))
        withUnsafeBytes(of: intended.bigEndian) { value.replaceSubrange(0..<8, with: $0) }
        withUnsafeBytes(of: id.bigEndian) { value.replaceSubrange(8..<16, with: $0) }
        let fillerCount = min(filler.count, value.count - headerBytes)
        if fillerCount > 0 {
            value.replaceSubrange(headerBytes..<(headerBytes + fillerCount), with: filler[0..<fillerCount])
        }
        return value
    }

    /// (intended time, message number), or nil for a value not made by the tool.
    public static func read(_ value: some Collection<UInt8>) -> (intended: UInt64, id: UInt64)? {
        guard value.count >= headerBytes else { return nil }
        var intended: UInt64 = 0
        var id: UInt64 = 0
        var index = value.startIndex
        for _ in 0..<8 { intended = intended << 8 | UInt64(value[index]); index = value.index(after: index) }
        for _ in 0..<8 { id = id << 8 | UInt64(value[index]); index = value.index(after: index) }
        return (intended, id)
    }
}

/// A message as a consumer received it.
public struct ReceivedMessage: Sendable {
    public var key: [UInt8]?
    public var value: [UInt8]?

    public init(key: [UInt8]?, value: [UInt8]?) {
        self.key = key
        self.value = value
    }
}

/// How a publisher batches and how much it keeps in flight.
public struct PublishSettings: Sendable {
    /// Kafka acks (0, 1 or -1 for all); for NATS, 0 publishes without
    /// waiting for JetStream's acknowledgement.
    public var acks: Int16 = -1
    /// A batch is sent once it holds this many bytes.
    public var batchBytes = 256 << 10
    /// Or once its oldest message waited this long.
    public var lingerMilliseconds = 1
    /// Requests (Kafka) or unacknowledged publishes (NATS) in flight per publisher.
    public var inFlightMax = 8
    /// Past this many unsent bytes, `publish` waits: the generator then
    /// falls behind its schedule, which the latency shows.
    public var bufferBytesMax = 16 << 20
    /// After the last send, how long to wait for every acknowledgement
    /// before counting the rest as failed (a stalled target ends the run).
    public var flushTimeoutSeconds = 60.0

    public init() {}
}

public protocol Publisher: Sendable {
    /// Queues messages for sending; suspends while the buffer is full.
    func publish(_ messages: [OutgoingMessage]) async throws
    /// Returns once every queued message is acknowledged (or failed).
    func flush() async throws
    func close() async
}

public protocol Subscriber: Sendable {
    /// Hands each received batch to `handle` until `shouldStop` answers true
    /// (checked at least every `pollMilliseconds`) or the task is cancelled.
    func run(pollMilliseconds: Int, shouldStop: @escaping @Sendable () -> Bool, handle: @escaping @Sendable ([ReceivedMessage]) -> Void) async throws
    func close() async
}

/// Where the load goes.
public protocol Target: Sendable {
    var url: String { get }
    var label: String { get }
    /// Creates the topic or stream the workload uses.
    func prepare(stream: String, partitions: Int) async throws
    func makePublisher(stream: String, recorder: Recorder, settings: PublishSettings) async throws -> any Publisher
    /// A subscriber from the start of the stream or from its end.
    func makeSubscriber(stream: String, fromStart: Bool) async throws -> any Subscriber
}

public enum TargetError: Error, CustomStringConvertible {
    case badURL(String)
    case refused(String)

    public var description: String {
        switch self {
        case .badURL(let url): "cannot use target \(url): expected kafka://HOST:PORT, nats://HOST:PORT or discard://"
        case .refused(let reason): reason
        }
    }
}

/// Parses a target URL.
public func makeTarget(_ url: String, replicas: Int = 1) throws -> any Target {
    guard let components = URLComponents(string: url), let scheme = components.scheme else { throw TargetError.badURL(url) }
    switch scheme {
    case "kafka":
        guard let host = components.host, let port = components.port else { throw TargetError.badURL(url) }
        return KafkaTarget(host: host, port: port, replicas: replicas)
    case "nats":
        guard let host = components.host, let port = components.port else { throw TargetError.badURL(url) }
        return NatsTarget(host: host, port: port, replicas: replicas)
    case "discard":
        return DiscardTarget()
    default:
        throw TargetError.badURL(url)
    }
}
