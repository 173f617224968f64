import KafkaNIO
import KafkaWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The Kafka listener: NIO frames the byte stream (`KafkaFrameDecoder`) and
/// each connection is a `KafkaConnection` on its event loop, which takes
/// its requests one at a time, in order, and answers them in order.
public struct KafkaServer: Sendable {
    public let broker: Broker
    let group: any EventLoopGroup

    public init(broker: Broker, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.broker = broker
        self.group = group
    }

    /// Binds, calls `onListening` with the bound port, and serves until the
    /// task is cancelled; then closes every connection and returns once no
    /// Produce is left waiting for its sync (the node closes its store next).
    public func run(onListening: @Sendable (Int) -> Void = { _ in }) async throws {
        let configuration = broker.configuration
        let frameBytesMax = configuration.requestBytesMax
        let broker = self.broker
        let connections = OpenConnections()
        let inFlight = InFlightWork()
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // A client that half-closes after its request still gets the answer.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let client = channel.remoteAddress?.description ?? "unknown"
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: frameBytesMax)))
                    try channel.pipeline.syncOperations.addHandler(KafkaConnection(broker: broker, client: client, inFlight: inFlight))
                    connections.add(channel)
                }
            }
            .bind(host: configuration.host, port: configuration.port).get()
        let port = server.localAddress?.port ?? configuration.port
        broker.logger.info("listening for Kafka clients", metadata: ["host": "\(configuration.host)", "port": "\(port)", "advertised": "\(configuration.effectiveAdvertisedHost):\(configuration.effectiveAdvertisedPort)"])
        broker.listening.withLock { $0 = true }
        onListening(port)
        await withTaskCancellationHandler {
            try? await server.closeFuture.get()
        } onCancel: {
            server.close(promise: nil)
        }
        broker.listening.withLock { $0 = false }
        connections.closeAll()
        await inFlight.drained()
        try Task.checkCancellation()
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
