import KafkaWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The Kafka listener: NIO frames the byte stream (`KafkaFrameDecoder`),
/// each connection is a task that answers its requests one at a time, in
/// order, as Kafka brokers do (a connection is muted while its request is
/// handled, which is what keeps an idempotent producer's batches in order).
public struct KafkaServer: Sendable {
    public let broker: Broker
    let group: any EventLoopGroup

    public init(broker: Broker, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.broker = broker
        self.group = group
    }

    /// Binds, calls `onListening` with the bound port, and serves until the
    /// task is cancelled.
    public func run(onListening: @Sendable (Int) -> Void = { _ in }) async throws {
        let configuration = broker.configuration
        let frameBytesMax = configuration.requestBytesMax
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // A client that half-closes after its request still gets the answer.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: frameBytesMax)))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let port = server.channel.localAddress?.port ?? configuration.port
        broker.logger.info("listening for Kafka clients", metadata: ["host": "\(configuration.host)", "port": "\(port)", "advertised": "\(configuration.effectiveAdvertisedHost):\(configuration.effectiveAdvertisedPort)"])
        broker.listening.withLock { $0 = true }
        defer { broker.listening.withLock { $0 = false } }
        onListening(port)
        try await withThrowingDiscardingTaskGroup { group in
            // Group timers: session expiry and join rounds whose deadline passed.
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    await broker.groups.tick()
                }
            }
            try await server.executeThenClose { connections in
                for try await connection in connections {
                    group.addTask { await serve(connection) }
                }
            }
        }
    }

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        let client = connection.channel.remoteAddress?.description ?? "unknown"
        let logger = broker.logger
        let metrics = broker.metrics
        metrics.connectionOpened()
        defer { metrics.connectionClosed() }
        do {
            try await connection.executeThenClose { inbound, outbound in
                var session = ClientSession(client: client)
                for try await frame in inbound {
                    let bytes = Array(frame.readableBytesView)
                    metrics.bytesIn.increment(by: Int64(bytes.count + 4))
                    do {
                        if let response = try await broker.handle(frame: bytes, session: &session) {
                            metrics.bytesOut.increment(by: Int64(response.count))
                            try await outbound.write(ByteBuffer(bytes: response))
                        }
                        if session.closeAfterResponse { return }
                    } catch let error as CloseConnection {
                        logger.warning("closing connection", metadata: ["client": "\(client)", "reason": "\(error.reason)"])
                        return
                    }
                }
            }
        } catch let error as FrameError {
            logger.warning("closing connection", metadata: ["client": "\(client)", "reason": "\(error)"])
        } catch {
            logger.debug("connection ended", metadata: ["client": "\(client)", "error": "\(error)"])
        }
    }
}
