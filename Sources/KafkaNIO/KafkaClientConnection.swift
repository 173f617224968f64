import KafkaWire
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Why a request got no answer.
public enum KafkaClientError: Error, CustomStringConvertible {
    case connectionClosed
    /// No answer within the connection's request timeout: the broker is
    /// gone or cut off; the connection is closed with every request on it.
    case timedOut(TimeAmount)
    case correlationMismatch(expected: Int32, got: Int32)
    case malformedResponse(String)
    case broker(errorCode: Int16, String)
    case refused(String)

    public var description: String {
        switch self {
        case .refused(let why): why
        case .connectionClosed: "the connection closed before the answer arrived"
        case .timedOut(let limit): "no answer within \(limit.nanoseconds / 1_000_000) ms; the connection is closed"
        case .correlationMismatch(let expected, let got): "answer with correlation id \(got), expected \(expected)"
        case .malformedResponse(let reason): "malformed answer: \(reason)"
        case .broker(let code, let what): "\(what): broker error \(code)"
        }
    }
}

/// A user and password for SASL PLAIN.
public struct SaslCredentials: Sendable, Equatable {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }
}

/// How a client connection proves itself: TLS (with a client certificate
/// in the context when the broker asks for one) and SASL PLAIN over it.
public struct KafkaClientSecurity: Sendable {
    public var tls: NIOSSLContext?
    public var sasl: SaslCredentials?
    /// For a broker's own connections only: every request goes in an
    /// Envelope acting for this principal, as if it came from this host
    /// (the HTTP proxy's callers who showed a client certificate; ADR 0031).
    /// The connection itself proves itself as a broker (`tls`, `sasl`).
    public var actingFor: ActingFor?

    public init(tls: NIOSSLContext? = nil, sasl: SaslCredentials? = nil, actingFor: ActingFor? = nil) {
        self.tls = tls
        self.sasl = sasl
        self.actingFor = actingFor
    }

    /// A principal (`User:name`) and the IP address it connected from.
    public struct ActingFor: Sendable, Equatable {
        public var principal: String
        public var host: String

        public init(principal: String, host: String) {
            self.principal = principal
            self.host = host
        }

        /// The address as Envelope carries it: 4 bytes or 16.
        var packedHost: [UInt8]? {
            switch try? SocketAddress(ipAddress: host, port: 0) {
            case .v4(let address): withUnsafeBytes(of: address.address.sin_addr) { Array($0) }
            case .v6(let address): withUnsafeBytes(of: address.address.sin6_addr) { Array($0) }
            default: nil
            }
        }
    }

    public static let none = KafkaClientSecurity()
}

/// A broker in the client's own process, answering request frames handed
/// to it without a socket (the chat gateway run inside the broker, ADR 0016).
public protocol KafkaLocalBroker: Sendable {
    /// The answer to one request frame (without its size prefix), framed as
    /// on the wire (size, correlation id, header, body); nil when the
    /// request gets none (Produce with acks=0). Throws where a broker on a
    /// socket would close the connection.
    func answer(_ frame: [UInt8]) async throws -> [UInt8]?
    /// Whether `address` (host:port, as Metadata gives it) is this broker.
    func isSelf(_ address: String) -> Bool
}

/// A client connection to a Kafka broker, for the load tool, replica
/// fetchers and the gateway. Requests are pipelined: a caller may send many
/// before the first answer arrives; brokers answer a connection's requests
/// in order, so answers are matched to requests first in, first out, and
/// the correlation id checks it.
///
/// A connection to a `KafkaLocalBroker` carries the same frames as calls:
/// each request is answered on its own (no socket, no event loop), so
/// requests sent together may be answered in any order; every caller here
/// awaits its own answer.
public final class KafkaClientConnection: Sendable {
    let channel: (any Channel)?
    let local: (any KafkaLocalBroker)?
    private let localClosed = Atomic<Bool>(false)
    public let clientID: String
    /// Set, every request is sent in an Envelope for this principal and
    /// host (packed); the answer is the embedded one.
    private let envelope: (principal: [UInt8], host: [UInt8])?

    init(channel: any Channel, clientID: String, envelope: (principal: [UInt8], host: [UInt8])? = nil) {
        self.channel = channel
        self.local = nil
        self.clientID = clientID
        self.envelope = envelope
    }

    /// A connection to a broker in this process.
    public init(local: any KafkaLocalBroker, clientID: String) {
        self.channel = nil
        self.local = local
        self.clientID = clientID
        self.envelope = nil
    }

    /// The longest a request waits for its answer by default (Kafka's
    /// `request.timeout.ms` is 30 s): longer than any wait a broker is
    /// asked for here (long polls of at most 5 s, produce timeouts of at
    /// most 30 s), so only a broker that is gone or cut off reaches it.
    public static let requestTimeoutDefault: TimeAmount = .seconds(60)

    public static func connect(
        host: String, port: Int, clientID: String = "postduif-client",
        security: KafkaClientSecurity = .none,
        frameBytesMax: Int = 256 << 20,
        requestTimeout: TimeAmount = requestTimeoutDefault,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> KafkaClientConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = security.tls {
                        // SNI only for names: an address (brokers often
                        // advertise one) is not a server name.
                        let isName = host.contains(where: \.isLetter) && !host.contains(":")
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: isName ? host : nil))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: frameBytesMax)))
                    try channel.pipeline.syncOperations.addHandler(KafkaClientHandler(requestTimeout: requestTimeout))
                }
            }
            .connect(host: host, port: port).get()
        let connection = KafkaClientConnection(channel: channel, clientID: clientID)
        if let credentials = security.sasl {
            do {
                try await connection.authenticate(credentials, broker: "\(host):\(port)")
            } catch {
                await connection.close()
                throw error
            }
        }
        guard let actingFor = security.actingFor else { return connection }
        // The same socket, past its own SASL exchange: from here on every
        // request is the principal's.
        guard let packed = actingFor.packedHost else {
            await connection.close()
            throw KafkaClientError.refused("acting for \(actingFor.principal): \(actingFor.host) is not an IP address")
        }
        return KafkaClientConnection(channel: channel, clientID: clientID, envelope: (Array(actingFor.principal.utf8), packed))
    }

    /// SASL PLAIN, the exchange every Kafka broker with SASL offers.
    func authenticate(_ credentials: SaslCredentials, broker: String) async throws {
        var reader = try await request(.saslHandshake, version: 1) { SaslHandshakeRequest(mechanism: "PLAIN").encode(&$0, version: 1) }
        let handshake = try SaslHandshakeResponse.decode(&reader, version: 1)
        guard handshake.errorCode == 0 else {
            throw KafkaClientError.refused("\(broker) refused SASL PLAIN (error \(handshake.errorCode), offers \(handshake.mechanisms))")
        }
        let token = [0] + Array(credentials.user.utf8) + [0] + Array(credentials.password.utf8)
        reader = try await request(.saslAuthenticate, version: 1) { SaslAuthenticateRequest(authBytes: token).encode(&$0, version: 1) }
        let answer = try SaslAuthenticateResponse.decode(&reader, version: 1)
        guard answer.errorCode == 0 else {
            throw KafkaClientError.refused("\(broker) refused the credentials of \(credentials.user): \(answer.errorMessage ?? "error \(answer.errorCode)")")
        }
    }

    /// One request's bytes: the size prefix where it goes on a socket
    /// (`sized`), the header (correlation id 0: on a socket the handler
    /// writes it, since it owns the order of the wire; a local request has
    /// one answer and needs none), the body. Also whether the answer's
    /// header is flexible: ApiVersions answers with a v0 header whatever
    /// its version (KIP-511).
    private func frame(_ api: RequestAPI, version: Int16, sized: Bool, _ encode: (inout ByteWriter) -> Void) -> (bytes: [UInt8], flexibleResponseHeader: Bool) {
        var writer = ByteWriter(capacity: 256)
        if sized { writer.writeInt32(0) }  // frame size, patched below
        RequestHeader(apiKey: api.key, apiVersion: version, correlationID: 0, clientID: clientID)
            .encode(&writer, flexible: version >= api.firstFlexibleVersion)
        encode(&writer)
        if sized { writer.patchUInt32(UInt32(writer.bytes.count - 4), at: 0) }
        return (writer.bytes, version >= api.firstFlexibleVersion && api.key != ApiKey.apiVersions.rawValue)
    }

    /// Sends one request. The future holds the answer's body (after the
    /// response header), or nil at once when `expectsResponse` is false
    /// (Produce with acks=0).
    public func send(_ api: ApiKey, version: Int16, expectsResponse: Bool = true, _ encode: (inout ByteWriter) -> Void) -> EventLoopFuture<ByteReader?> {
        send(RequestAPI(api), version: version, expectsResponse: expectsResponse, encode)
    }

    private func send(_ api: RequestAPI, version: Int16, expectsResponse: Bool = true, _ encode: (inout ByteWriter) -> Void) -> EventLoopFuture<ByteReader?> {
        guard let channel = self.channel else {
            let (bytes, flexibleResponseHeader) = frame(api, version: version, sized: false, encode)
            let promise = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: ByteReader?.self)
            promise.completeWithTask { try await self.exchangeLocally(bytes, expectsResponse: expectsResponse, flexibleResponseHeader: flexibleResponseHeader) }
            return promise.futureResult
        }
        if let envelope {
            // The embedded request has no size prefix and its own header;
            // a broker answers every Envelope, even one whose request gets
            // no answer (the embedded answer is null then).
            let (embedded, flexibleResponseHeader) = frame(api, version: version, sized: false, encode)
            let wrapped = frame(RequestAPI(key: EnvelopeRequest.apiKey, firstFlexibleVersion: 0), version: EnvelopeRequest.version, sized: true) {
                EnvelopeRequest(requestData: embedded, requestPrincipal: envelope.principal, clientHostAddress: envelope.host).encode(&$0)
            }
            return write(channel, wrapped.bytes, expectsResponse: true, flexibleResponseHeader: true).flatMapThrowing { outer in
                guard var outer else { throw KafkaClientError.malformedResponse("no answer to an Envelope") }
                let answer = try EnvelopeResponse.decode(&outer)
                guard answer.errorCode == 0 else { throw KafkaClientError.broker(errorCode: answer.errorCode, "Envelope") }
                guard expectsResponse else { return nil }
                guard let data = answer.responseData else { throw KafkaClientError.malformedResponse("an Envelope without the embedded answer") }
                var reader = ByteReader(data)
                _ = try reader.readInt32()  // correlation id: one request, one answer
                if flexibleResponseHeader { try reader.skipTaggedFields() }
                return reader
            }
        }
        let (bytes, flexibleResponseHeader) = frame(api, version: version, sized: true, encode)
        return write(channel, bytes, expectsResponse: expectsResponse, flexibleResponseHeader: flexibleResponseHeader)
    }

    private func write(_ channel: any Channel, _ bytes: [UInt8], expectsResponse: Bool, flexibleResponseHeader: Bool) -> EventLoopFuture<ByteReader?> {
        let promise = channel.eventLoop.makePromise(of: ByteReader?.self)
        let request = KafkaClientHandler.Request(
            frame: bytes, expectsResponse: expectsResponse,
            flexibleResponseHeader: flexibleResponseHeader,
            promise: promise)
        // Checked and written on the channel's event loop, where a close is
        // processed too: a request to a closed connection fails at once
        // instead of waiting for an answer that cannot come.
        channel.eventLoop.execute {
            guard channel.isActive else {
                promise.fail(KafkaClientError.connectionClosed)
                return
            }
            channel.writeAndFlush(request, promise: nil)
        }
        return promise.futureResult
    }

    /// `send`, awaited.
    public func request(_ api: ApiKey, version: Int16, _ encode: (inout ByteWriter) -> Void) async throws -> ByteReader {
        try await request(RequestAPI(api), version: version, encode)
    }

    /// A request of an API that is not Kafka's (a broker's own extension,
    /// such as Postduif's chat APIs), by its key; such APIs have no flexible
    /// versions.
    public func request(extensionKey key: Int16, version: Int16, _ encode: (inout ByteWriter) -> Void) async throws -> ByteReader {
        try await request(RequestAPI(key: key, firstFlexibleVersion: Int16.max), version: version, encode)
    }

    private func request(_ api: RequestAPI, version: Int16, _ encode: (inout ByteWriter) -> Void) async throws -> ByteReader {
        let answer: ByteReader?
        if local != nil {
            // Straight to the broker: no promise, no event loop.
            let (bytes, flexibleResponseHeader) = frame(api, version: version, sized: false, encode)
            answer = try await exchangeLocally(bytes, expectsResponse: true, flexibleResponseHeader: flexibleResponseHeader)
        } else {
            answer = try await send(api, version: version, encode).get()
        }
        guard let answer else { throw KafkaClientError.malformedResponse("no answer") }
        return answer
    }

    /// One request (without its size prefix) to the broker in this process.
    private func exchangeLocally(_ frame: [UInt8], expectsResponse: Bool, flexibleResponseHeader: Bool) async throws -> ByteReader? {
        guard let local, !localClosed.load(ordering: .acquiring) else { throw KafkaClientError.connectionClosed }
        let answer: [UInt8]?
        do {
            answer = try await local.answer(frame)
        } catch {
            // Where a socket's broker would close the connection.
            localClosed.store(true, ordering: .releasing)
            throw KafkaClientError.malformedResponse("the broker refused the request: \(error)")
        }
        guard expectsResponse else { return nil }
        guard let answer else { throw KafkaClientError.malformedResponse("no answer") }
        var reader = ByteReader(answer)
        _ = try reader.readInt32()  // size
        _ = try reader.readInt32()  // correlation id: one request, one answer
        if flexibleResponseHeader { try reader.skipTaggedFields() }
        return reader
    }

    public func close() async {
        guard let channel else {
            localClosed.store(true, ordering: .releasing)
            return
        }
        try? await channel.close()
    }

    /// Closes without waiting (for cancellation handlers): requests waiting
    /// for an answer fail with `connectionClosed` at once (on a socket; a
    /// local request already with the broker finishes).
    public func closeNow() {
        guard let channel else {
            localClosed.store(true, ordering: .releasing)
            return
        }
        channel.close(promise: nil)
    }
}

/// What framing a request needs of its API: the key and the first
/// version with flexible (tagged-field) headers.
struct RequestAPI {
    var key: Int16
    var firstFlexibleVersion: Int16

    init(key: Int16, firstFlexibleVersion: Int16) {
        self.key = key
        self.firstFlexibleVersion = firstFlexibleVersion
    }

    init(_ api: ApiKey) {
        self.init(key: api.rawValue, firstFlexibleVersion: api.firstFlexibleVersion)
    }
}

/// Assigns correlation ids in write order and completes each request's
/// promise with its answer. A request unanswered for `requestTimeout`
/// closes the connection: answers come in order, so once the oldest is
/// overdue none behind it can come first, and a socket to a broker cut
/// off by the network would otherwise wait for TCP to give up (minutes).
final class KafkaClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Request
    typealias OutboundOut = ByteBuffer

    struct Request {
        var frame: [UInt8]
        var expectsResponse: Bool
        var flexibleResponseHeader: Bool
        var promise: EventLoopPromise<ByteReader?>
    }

    private var nextCorrelationID: Int32 = 1
    private var waiting = CircularBuffer<(correlationID: Int32, flexible: Bool, promise: EventLoopPromise<ByteReader?>, due: NIODeadline)>()
    let requestTimeout: TimeAmount
    /// Looks at the oldest request a few times per timeout.
    private var overdueCheck: RepeatedTask?

    init(requestTimeout: TimeAmount = KafkaClientConnection.requestTimeoutDefault) {
        self.requestTimeout = requestTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let every = TimeAmount.nanoseconds(max(requestTimeout.nanoseconds / 4, 1_000_000))
        // Both bound to the channel's loop, where the task runs.
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        overdueCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in
            bound.value.handler.closeIfOverdue(context: bound.value.context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        overdueCheck?.cancel()
        overdueCheck = nil
    }

    private func closeIfOverdue(context: ChannelHandlerContext) {
        guard let oldest = waiting.first, oldest.due <= NIODeadline.now() else { return }
        overdueCheck?.cancel()
        overdueCheck = nil
        while let request = waiting.popFirst() {
            request.promise.fail(KafkaClientError.timedOut(requestTimeout))
        }
        context.close(promise: nil)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var request = unwrapOutboundIn(data)
        let correlationID = nextCorrelationID
        nextCorrelationID = nextCorrelationID == Int32.max ? 1 : nextCorrelationID + 1
        // Size (4), API key (2), version (2), then the correlation id.
        withUnsafeBytes(of: correlationID.bigEndian) { id in
            request.frame.replaceSubrange(8..<12, with: id)
        }
        var buffer = context.channel.allocator.buffer(capacity: request.frame.count)
        buffer.writeBytes(request.frame)
        if request.expectsResponse {
            waiting.append((correlationID, request.flexibleResponseHeader, request.promise, NIODeadline.now() + requestTimeout))
        } else {
            request.promise.succeed(nil)
        }
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard let expected = waiting.popFirst() else {
            context.fireErrorCaught(KafkaClientError.malformedResponse("an answer nobody asked for"))
            context.close(promise: nil)
            return
        }
        var reader = ByteReader(Array(frame.readableBytesView))
        do {
            let correlationID = try reader.readInt32()
            guard correlationID == expected.correlationID else {
                throw KafkaClientError.correlationMismatch(expected: expected.correlationID, got: correlationID)
            }
            if expected.flexible { try reader.skipTaggedFields() }
            expected.promise.succeed(reader)
        } catch {
            expected.promise.fail(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        while let request = waiting.popFirst() {
            request.promise.fail(KafkaClientError.connectionClosed)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
