import KafkaWire
import Metrics
import Security

/// An API of the broker's own, outside Kafka's, registered by a service
/// above the broker (the chat fan-out registers Postduif's two chat APIs):
/// Kafka's framing and request header, a key far above Kafka's, answered
/// but never listed in ApiVersions, so Kafka clients never see it.
public struct ExtensionAPI: Sendable {
    public var key: Int16
    /// The name in logs and in `postduif_requests_total{api=...}`.
    public var name: String
    public var versions: ClosedRange<Int16>
    /// The topic whose records the API hands out: with the authorizer on,
    /// a principal without Read on it is refused (its connection closed,
    /// since the broker cannot write this API's error body).
    public var readsTopic: String?
    /// An operation on the cluster resource the principal must be allowed
    /// (Alter for Backup); refused like `readsTopic`.
    public var clusterOperation: AclOperation?
    /// Decodes a request body and writes the answer's body; a thrown error
    /// (malformed bytes) closes the connection, as for Kafka's own APIs.
    public var answer: @Sendable (_ request: inout ByteReader, _ version: Int16, _ body: inout ByteWriter) async throws -> Void

    public init(key: Int16, name: String, versions: ClosedRange<Int16>, readsTopic: String? = nil, clusterOperation: AclOperation? = nil,
                answer: @escaping @Sendable (_ request: inout ByteReader, _ version: Int16, _ body: inout ByteWriter) async throws -> Void) {
        precondition(ApiKey(rawValue: key) == nil, "extension API key \(key) is one of Kafka's")
        self.key = key
        self.name = name
        self.versions = versions
        self.readsTopic = readsTopic
        self.clusterOperation = clusterOperation
        self.answer = answer
    }
}

/// A registered extension with its metrics, made once.
struct RegisteredExtension: Sendable {
    var api: ExtensionAPI
    var count: Counter
    var duration: Metrics.Timer

    init(_ api: ExtensionAPI) {
        self.api = api
        let dimensions = [("api", api.name)]
        count = Counter(label: "postduif_requests_total", dimensions: dimensions)
        duration = Metrics.Timer(label: "postduif_request_duration_seconds", dimensions: dimensions)
    }
}

extension Broker {
    /// Answers `api` from now on. Registering a key twice replaces the first.
    public func register(_ api: ExtensionAPI) {
        extensions.withLock { $0[api.key] = RegisteredExtension(api) }
    }

    /// Answers one request of a registered extension API.
    func stageExtension(_ registered: RegisteredExtension, header: RequestHeader, reader: inout ByteReader) async throws(CloseConnection) -> StagedAnswer {
        let api = registered.api
        guard api.versions.contains(header.apiVersion) else {
            throw CloseConnection(reason: "\(api.name) version \(header.apiVersion) is not supported")
        }
        let started = ContinuousClock.now
        defer {
            registered.count.increment()
            registered.duration.record(duration: ContinuousClock.now - started)
        }
        var body = ByteWriter(capacity: 256)
        do {
            try await api.answer(&reader, header.apiVersion, &body)
        } catch {
            throw CloseConnection(reason: "malformed \(api.name) v\(header.apiVersion) request: \(error)")
        }
        return .ready(frameResponse(correlationID: header.correlationID, flexibleHeader: false, body: body.bytes))
    }
}
