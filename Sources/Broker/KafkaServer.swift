import KafkaNIO
import KafkaWire
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Security
import Synchronization

/// The Kafka listeners: one socket per listener (`--listeners`); TLS
/// first where the listener's protocol asks for it, then NIO frames the
/// byte stream (`KafkaFrameDecoder`) and each connection is a
/// `KafkaConnection` on its event loop, which takes its requests one at a
/// time, in order, and answers them in order.
public struct KafkaServer: Sendable {
    public let broker: Broker
    let group: any EventLoopGroup
    /// The TLS listeners' certificate, replaced on reload.
    let tls: ReloadableTLSContext?

    public init(broker: Broker, tls: ReloadableTLSContext? = nil, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.broker = broker
        self.tls = tls
        self.group = group
    }

    /// Binds every listener, calls `onListening` with the first one's bound
    /// port (`onListeners` with each by name), and serves until the task is
    /// cancelled; then closes every connection, ends the acks=all waits for
    /// followers, and returns once no Produce is left waiting for its sync
    /// (the node closes its store next).
    public func run(onListening: @Sendable (Int) -> Void = { _ in }, onListeners: @Sendable ([String: Int]) -> Void = { _ in }) async throws {
        let configuration = broker.configuration
        try configuration.checkListeners()
        let listeners = configuration.effectiveListeners
        if listeners.contains(where: \.securityProtocol.usesTLS) && tls == nil {
            throw ListenerError(description: "a TLS listener without a certificate")
        }
        let connections = OpenConnections()
        let inFlight = InFlightWork()
        var servers: [any Channel] = []
        var ports: [String: Int] = [:]
        do {
            for listener in listeners {
                let server = try await bind(listener, connections: connections, inFlight: inFlight)
                servers.append(server)
                let port = server.localAddress?.port ?? listener.port
                ports[listener.name] = port
                broker.logger.info("listening for Kafka clients", metadata: [
                    "listener": "\(listener.name)", "protocol": "\(listener.securityProtocol.rawValue)",
                    "host": "\(listener.host)", "port": "\(port)", "advertised": "\(listener.advertisedAddress)"])
            }
        } catch {
            for server in servers { server.close(promise: nil) }
            throw error
        }
        let bound = servers
        broker.listening.withLock { $0 = true }
        onListening(ports[listeners[0].name] ?? listeners[0].port)
        onListeners(ports)
        await withTaskCancellationHandler {
            for server in bound { try? await server.closeFuture.get() }
        } onCancel: {
            for server in bound { server.close(promise: nil) }
        }
        broker.listening.withLock { $0 = false }
        connections.closeAll()
        // What is still in flight waits for its sync (the store closes
        // next), not for followers: their answers have nowhere to go now.
        broker.replication?.releaseAcksWaits()
        await inFlight.drained()
        try Task.checkCancellation()
    }

    private func bind(_ listener: Listener, connections: OpenConnections, inFlight: InFlightWork) async throws -> any Channel {
        let configuration = broker.configuration
        let frameBytesMax = configuration.requestBytesMax
        let broker = self.broker
        let tls = listener.securityProtocol.usesTLS ? self.tls : nil
        let handshakeTimeout = TimeAmount(configuration.tlsHandshakeTimeout)
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            // A client that half-closes after its request still gets the answer.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let client = channel.remoteAddress?.description ?? "unknown"
                    let host = channel.remoteAddress?.ipAddress ?? "unknown"
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(QuickAcknowledgement())
                        // The context current when the connection opens: a
                        // reload changes later connections only.
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current))
                        try channel.pipeline.syncOperations.addHandler(TLSHandshakeDeadline(timeout: handshakeTimeout, client: client, logger: broker.logger))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: frameBytesMax)))
                    try channel.pipeline.syncOperations.addHandler(KafkaConnection(broker: broker, client: client, host: host, listener: listener, inFlight: inFlight))
                    connections.add(channel)
                }
            }
            .bind(host: listener.host, port: listener.port).get()
    }
}

/// Acknowledges every TCP segment at once on a TLS connection.
/// librdkafka leaves Nagle's algorithm on by default and writes a request
/// over TLS in several records: the later ones wait for the acknowledgement
/// of the first, which Linux delays by up to 40 ms. Measured at 20,000
/// msgs/s over SASL_SSL: ack p50 23 ms with delayed acknowledgements, under
/// 1 ms without (Docs/benchmarks.md). TCP_QUICKACK lapses after a while, so
/// it is set again after each read (one setsockopt per read).
final class QuickAcknowledgement: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    static let option = ChannelOptions.Types.SocketOption(level: .tcp, name: NIOBSDSocket.Option(rawValue: TCP_QUICKACK))

    func channelActive(context: ChannelHandlerContext) {
        try? context.channel.syncOptions?.setOption(Self.option, value: 1)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        try? context.channel.syncOptions?.setOption(Self.option, value: 1)
        context.fireChannelRead(data)
    }
}

/// Closes a TLS connection whose handshake is not done in time: a client
/// that opens connections and never finishes would otherwise hold them.
final class TLSHandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    let timeout: TimeAmount
    let client: String
    let logger: Logger
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount, client: String, logger: Logger) {
        self.timeout = timeout
        self.client = client
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let (client, logger, timeout) = (self.client, self.logger, self.timeout)
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            logger.warning("closing connection", metadata: ["client": "\(client)", "reason": "TLS handshake not finished within \(timeout.nanoseconds / 1_000_000) ms"])
            bound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        if case TLSUserEvent.handshakeCompleted = event {
            deadline?.cancel()
            deadline = nil
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}

/// The listener's open connections, so that stopping closes them all.
final class OpenConnections: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [self] _ in
            _ = channels.withLock { $0.removeValue(forKey: id) }
        }
    }

    func closeAll() {
        for channel in channels.withLock({ Array($0.values) }) { channel.close(promise: nil) }
    }
}
