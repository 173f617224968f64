import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import KafkaNIO
import KafkaWire
import Logging
import NIOCore
import NIOSSL
import PostduifClient
import Security
import Synchronization

/// What the HTTP proxy needs of the broker it runs in.
public struct HTTPProxyConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Brokers for addresses that are not this one (a cluster's others).
    public var bootstrap: [String]
    /// Whether every request must carry HTTP Basic credentials (the
    /// broker's Kafka listeners ask for SASL).
    public var requireAuthentication: Bool
    /// Checks a user's password (the broker's SCRAM credentials).
    public var authenticate: @Sendable (_ user: String, _ password: String) -> Bool
    /// The broker in this process, acting for `user` (nil: anonymous):
    /// its ACLs decide as on the Kafka port.
    public var localBroker: @Sendable (_ user: String?, _ host: String) -> any KafkaLocalBroker
    /// How connections to the other brokers of a cluster prove themselves
    /// for a caller: TLS where the inter-broker listener has it; SASL PLAIN
    /// with a user's own password; for a certificate's user, as this broker
    /// with every request in an Envelope for the user (ADR 0031).
    public var remoteSecurity: @Sendable (_ caller: ProxyIdentity) -> KafkaClientSecurity
    /// The user a client certificate names (the broker's principal mapping
    /// rules; nil when none matches). Nil when the port asks for no client
    /// certificates: then certificates name nobody.
    public var certificateUser: (@Sendable (NIOSSLCertificate) -> String?)? = nil
    /// Wall clock and monotonic clock, in milliseconds.
    public var wallMilliseconds: @Sendable () -> Int64
    public var monotonicMilliseconds: @Sendable () -> Int64
    /// An unused consumer instance is closed after this long.
    public var instanceIdleMilliseconds: Int64 = 300_000
    /// HTTPS with the broker's certificate (nil: plain HTTP).
    public var tls: ReloadableTLSContext?

    public init(host: String, port: Int, bootstrap: [String], requireAuthentication: Bool,
                authenticate: @escaping @Sendable (String, String) -> Bool,
                localBroker: @escaping @Sendable (String?, String) -> any KafkaLocalBroker,
                remoteSecurity: @escaping @Sendable (ProxyIdentity) -> KafkaClientSecurity,
                wallMilliseconds: @escaping @Sendable () -> Int64, monotonicMilliseconds: @escaping @Sendable () -> Int64) {
        self.host = host
        self.port = port
        self.bootstrap = bootstrap
        self.requireAuthentication = requireAuthentication
        self.authenticate = authenticate
        self.localBroker = localBroker
        self.remoteSecurity = remoteSecurity
        self.wallMilliseconds = wallMilliseconds
        self.monotonicMilliseconds = monotonicMilliseconds
    }
}

/// Who a caller proved to be: a password (HTTP Basic, checked like SASL
/// PLAIN), a client certificate, or nothing.
public enum ProxyIdentity: Sendable, Equatable {
    case anonymous
    case password(SaslCredentials)
    case certificate(user: String, host: String)
}

/// The request context: Hummingbird's basic one and the client's address.
struct ProxyRequestContext: RequestContext, RemoteAddressRequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }

    var clientAddress: String { remoteAddress?.ipAddress ?? "unknown" }
}

/// Who a request acts as, the client that carries its requests, and the
/// batches its produce requests share.
struct Caller: Sendable {
    var principal: String
    var client: KafkaClient
    var batches: SharedBatches
}

/// HTTP access to the broker's streams (Docs/services.md): the REST Proxy
/// v2 API as Confluent's REST Proxy and Redpanda's HTTP Proxy serve it,
/// and live subscriptions as Server-Sent Events. Every request goes to
/// the brokers as Kafka requests of the caller's principal, so the same
/// ACLs decide, and consumer instances are members of the same groups as
/// Kafka clients.
public final class HTTPProxy: Sendable {
    let configuration: HTTPProxyConfiguration
    let logger: Logger
    let instances: ConsumerInstances
    /// A client per caller (user, password and host: the ACLs name hosts),
    /// with when it was last used; idle ones are dropped by `upkeep`.
    private let clients = Mutex<[String: (client: KafkaClient, batches: SharedBatches, used: Int64)]>([:])
    /// Passwords checked, by user and password, with when: PBKDF2 is slow on
    /// purpose, so a password right a minute ago is not checked again.
    private let verified = Mutex<[String: Int64]>([:])
    static let verifiedFor: Int64 = 60_000
    static let clientIdleFor: Int64 = 600_000
    /// Every wrong password is answered after this pause, as a SASL
    /// failure is on the Kafka port: guessing goes no faster over HTTP.
    static let failurePause: Duration = .seconds(1)
    private let serving = Mutex(false)

    public init(configuration: HTTPProxyConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        instances = ConsumerInstances(idleMilliseconds: configuration.instanceIdleMilliseconds)
    }

    public var isServing: Bool { serving.withLock { $0 } }

    /// Serves until cancelled; `onListening` gets the bound port.
    public func run(onListening: @escaping @Sendable (Int) -> Void) async throws {
        let app = Application(
            router: router(),
            server: HTTPServerBuilder { [tls = configuration.tls] responder in
                TLSFirst(tls: tls, base: HTTP1WebSocketUpgradeChannel(responder: responder, configuration: .init()) { head, channel, _ in
                    await self.webSocketUpgrade(head, channel: channel)
                })
            },
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "postduif-http-proxy"),
            onServerRunning: { channel in
                self.serving.withLock { $0 = true }
                onListening(channel.localAddress?.port ?? 0)
            },
            logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            // No signals of its own: the node's ServiceGroup says when to stop
            // (its own SIGTERM handler would stop it before its turn).
            group.addTask { try await app.runService(gracefulShutdownSignals: []) }
            // Consumer instances' heartbeats (an HTTP client polls when it
            // likes; its membership must live between) and idle expiry.
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(500))
                    await self.upkeep()
                }
            }
            try await group.next()
            group.cancelAll()
        }
        for instance in instances.all { await instance.consumer.close(commit: instance.autoCommit) }
        for client in clients.withLock({ $0.values.map(\.client) }) { await client.close() }
    }

    func upkeep() async {
        // Clients idle for ten minutes go (those of live consumer instances
        // stay: the instances hold them), and passwords checked long ago.
        let now = configuration.monotonicMilliseconds()
        let inUse = Set(instances.all.map { ObjectIdentifier($0.consumer.client) })
        let idle = clients.withLock { known in
            let gone = known.filter { now - $0.value.used > Self.clientIdleFor && !inUse.contains(ObjectIdentifier($0.value.client)) }
            for key in gone.keys { known.removeValue(forKey: key) }
            return gone.values.map(\.client)
        }
        for client in idle { await client.close() }
        verified.withLock { $0 = $0.filter { now - $0.value < Self.verifiedFor } }
        for instance in instances.expire(now: configuration.monotonicMilliseconds()) {
            logger.info("closing an idle consumer instance", metadata: ["group": "\(instance.group)", "instance": "\(instance.name)"])
            await instance.consumer.close(commit: instance.autoCommit)
        }
        await withTaskGroup(of: Void.self) { group in
            for instance in instances.all {
                group.addTask {
                    do {
                        try await instance.consumer.maintain()
                    } catch {
                        self.logger.debug("a consumer instance's heartbeat failed", metadata: ["group": "\(instance.group)", "error": "\(error)"])
                    }
                }
            }
        }
    }

    // MARK: Callers

    func pauseAfterRefusedLogin() async {
        try? await Task.sleep(for: Self.failurePause)
    }

    /// The caller's principal: from HTTP Basic, checked like SASL PLAIN;
    /// else from the client certificate, mapped as on the Kafka port; else
    /// anonymous.
    func caller(_ request: Request, _ context: ProxyRequestContext) async throws(ProxyError) -> Caller {
        try await caller(authorization: request.headers[.authorization], channel: context.channel)
    }

    func caller(authorization: String?, channel: any Channel) async throws(ProxyError) -> Caller {
        let host = channel.remoteAddress?.ipAddress ?? "unknown"
        var certificateUser: String? = nil
        if authorization == nil, let mapping = configuration.certificateUser, configuration.tls != nil,
           let certificate = await Self.peerCertificate(channel) {
            guard let user = mapping(certificate) else {
                logger.info("refused an HTTP caller", metadata: ["client": "\(host)", "reason": "no principal mapping rule matches its certificate's subject"])
                throw ProxyError(code: 40101, message: "no principal mapping rule matches the client certificate's subject")
            }
            certificateUser = user
        }
        return try caller(authorization: authorization, certificateUser: certificateUser, host: host)
    }

    /// The client certificate of a TLS connection, once its handshake is
    /// done (a request comes after it), read on the channel's event loop.
    static func peerCertificate(_ channel: any Channel) async -> NIOSSLCertificate? {
        try? await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.nioSSL_peerCertificate()
        }.get()
    }

    func caller(authorization: String?, certificateUser: String? = nil, host: String) throws(ProxyError) -> Caller {
        if let user = certificateUser {
            // Local partitions are answered as the user; other brokers get
            // this broker's connection with each request in an Envelope.
            let (client, batches) = client(key: "certificate\u{0}\(user)\u{0}\(host)", identity: .certificate(user: user, host: host), localUser: user, host: host)
            return Caller(principal: "User:\(user)", client: client, batches: batches)
        }
        var credentials: SaslCredentials?
        if let header = authorization, header.lowercased().hasPrefix("basic ") {
            guard let data = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
                  let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":") else {
                throw .unauthenticated
            }
            let user = String(text[..<colon])
            let password = String(text[text.index(after: colon)...])
            let now = configuration.monotonicMilliseconds()
            let key = user + "\u{0}" + password
            let recent = verified.withLock { $0[key].map { now - $0 < Self.verifiedFor } ?? false }
            if !recent {
                guard configuration.authenticate(user, password) else {
                    throw ProxyError(code: 40101, message: "the user name or password is wrong")
                }
                verified.withLock { $0[key] = now }
            }
            credentials = SaslCredentials(user: user, password: password)
        } else if configuration.requireAuthentication {
            throw .unauthenticated
        }
        let key = (credentials.map { "password\u{0}" + $0.user + "\u{0}" + $0.password } ?? "") + "\u{0}" + host
        let (client, batches) = client(key: key, identity: credentials.map { .password($0) } ?? .anonymous, localUser: credentials?.user, host: host)
        return Caller(principal: credentials.map { "User:\($0.user)" } ?? "User:ANONYMOUS", client: client, batches: batches)
    }

    /// The client of one identity from one host, and its shared batches,
    /// made on first use.
    private func client(key: String, identity: ProxyIdentity, localUser: String?, host: String) -> (KafkaClient, SharedBatches) {
        let now = configuration.monotonicMilliseconds()
        return clients.withLock { known in
            if let found = known[key] {
                known[key]?.used = now
                return (found.client, found.batches)
            }
            let made = KafkaClient(ClientConfiguration(
                bootstrap: configuration.bootstrap, clientID: "postduif-http-proxy", security: configuration.remoteSecurity(identity),
                local: configuration.localBroker(localUser, host)))
            let batches = SharedBatches { [clock = configuration.wallMilliseconds] place, batch, records in
                await Producer(client: made, idempotent: false, clock: clock).send(built: [place: (batch, records)])[place]
                    ?? .failure(ClientError("no answer for \(place.topic)/\(place.partition)"))
            }
            known[key] = (made, batches, now)
            return (made, batches)
        }
    }

    /// Runs `body` for the request's caller; a refusal becomes its answer.
    func answer(_ request: Request, _ context: ProxyRequestContext, _ body: (Caller) async throws -> Response) async -> Response {
        do {
            return try await body(try await caller(request, context))
        } catch let error as ProxyError {
            if error.code == 40101 { await pauseAfterRefusedLogin() }
            return error.response
        } catch {
            return ProxyError.kafka(error).response
        }
    }

    static func json(_ object: Any, status: HTTPResponse.Status = .ok, contentType: String = ProxyMedia.v2Json) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.fragmentsAllowed, .withoutEscapingSlashes])) ?? Data("null".utf8)
        return Response(status: status, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static let noContent = Response(status: .noContent)

    /// The request's JSON body (an object), up to `limit` bytes.
    static func body(_ request: Request, limit: Int = 64 << 20) async throws -> [String: Any] {
        let buffer = try await request.body.collect(upTo: limit)
        guard buffer.readableBytes > 0 else { return [:] }
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)), let body = object as? [String: Any] else {
            throw ProxyError(code: 40001, message: "the request body is not a JSON object")
        }
        return body
    }

    static func partitionList(_ value: Any?) throws(ProxyError) -> [TopicPartition] {
        guard let entries = value as? [[String: Any]] else { throw .unprocessable("expected a list of {\"topic\", \"partition\"}") }
        var partitions: [TopicPartition] = []
        for entry in entries {
            guard let topic = entry["topic"] as? String, let partition = (entry["partition"] as? NSNumber)?.int32Value else {
                throw .unprocessable("each entry needs a topic and a partition")
            }
            partitions.append(TopicPartition(topic, partition))
        }
        return partitions
    }

    static func offsetList(_ value: Any?) throws(ProxyError) -> [TopicPartition: Int64] {
        guard let entries = value as? [[String: Any]] else { throw .unprocessable("expected a list of {\"topic\", \"partition\", \"offset\"}") }
        var offsets: [TopicPartition: Int64] = [:]
        for entry in entries {
            guard let topic = entry["topic"] as? String, let partition = (entry["partition"] as? NSNumber)?.int32Value,
                  let offset = (entry["offset"] as? NSNumber)?.int64Value else {
                throw .unprocessable("each entry needs a topic, a partition and an offset")
            }
            offsets[TopicPartition(topic, partition)] = offset
        }
        return offsets
    }
}
