import KafkaNIO
import KafkaWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The Kafka listener: NIO frames the byte stream (`KafkaFrameDecoder`),
/// each connection is a task that handles its requests one at a time, in
/// order, as Kafka brokers do (which keeps an idempotent producer's batches
/// in order); only the wait for a Produce's sync overlaps the next request.
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
                    return AcceptedConnection(try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel))
                }
            }
        let port = server.channel.localAddress?.port ?? configuration.port
        broker.logger.info("listening for Kafka clients", metadata: ["host": "\(configuration.host)", "port": "\(port)", "advertised": "\(configuration.effectiveAdvertisedHost):\(configuration.effectiveAdvertisedPort)"])
        broker.listening.withLock { $0 = true }
        defer { broker.listening.withLock { $0 = false } }
        onListening(port)
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { connections in
                for try await accepted in connections {
                    guard let connection = accepted.take() else { continue }
                    group.addTask { await serve(connection) }
                }
            }
        }
    }

    /// An answer in request order: ready, or a Produce's waiting for its
    /// sync (a task only for those: most answers are ready at once).
    private enum Answer: Sendable {
        case ready([UInt8]?)
        case pending(Task<[UInt8]?, Never>)
    }

    /// How many Produce answers one connection may have waiting for their
    /// sync; past it the connection reads no more until the oldest is durable.
    static let pipelineDepthMax = 16

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        let client = connection.channel.remoteAddress?.description ?? "unknown"
        let logger = broker.logger
        let metrics = broker.metrics
        metrics.connectionOpened()
        defer { metrics.connectionClosed() }
        do {
            try await connection.executeThenClose { inbound, outbound in
                // The reader hands answers, in request order, to the writer.
                // A Produce's answer is a task waiting for its sync, so the
                // reader goes on to write the next Produce meanwhile (they
                // share a sync); any other request first waits until every
                // earlier Produce is durable, so it sees what they wrote.
                //
                // A ready answer with nothing queued before it is written by
                // the reader itself: handing it to the writer task cost a
                // wake-up of that task per answer, most of a connection's.
                let (answers, answerQueue) = AsyncStream.makeStream(of: Answer.self)
                // Answers handed to the writer and not yet written; only the
                // reader adds, so at 0 the writer is idle.
                let queued = QueuedAnswers()
                @Sendable func write(_ response: [UInt8]?) async throws {
                    guard let response else { return }
                    metrics.bytesOut.increment(by: Int64(response.count))
                    try await outbound.write(ByteBuffer(bytes: response))
                }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await answer in answers {
                            switch answer {
                            case .ready(let bytes): try await write(bytes)
                            case .pending(let task): try await write(await task.value)
                            }
                            queued.count.subtract(1, ordering: .releasing)
                        }
                    }
                    defer { answerQueue.finish() }
                    var session = ClientSession(client: client)
                    var waiting: [Task<[UInt8]?, Never>] = []
                    func drain() async {
                        for task in waiting { _ = await task.value }
                        waiting.removeAll(keepingCapacity: true)
                    }
                    var ended: (any Error)?
                    do {
                        for try await frame in inbound {
                            let bytes = Array(frame.readableBytesView)
                            metrics.bytesIn.increment(by: Int64(bytes.count + 4))
                            let isProduce = bytes.count >= 2 && bytes[0] == 0 && bytes[1] == UInt8(ApiKey.produce.rawValue)
                            if !isProduce { await drain() }
                            let staged: StagedAnswer
                            do throws(CloseConnection) {
                                staged = try await broker.stage(frame: bytes, session: &session)
                            } catch {
                                logger.warning("closing connection", metadata: ["client": "\(client)", "reason": "\(error.reason)"])
                                break
                            }
                            switch staged {
                            case .ready(let response):
                                if queued.count.load(ordering: .acquiring) == 0 {
                                    try await write(response)
                                } else {
                                    queued.count.add(1, ordering: .relaxed)
                                    answerQueue.yield(.ready(response))
                                }
                            case .pending(let finish):
                                let task = Task { await finish() }
                                queued.count.add(1, ordering: .relaxed)
                                answerQueue.yield(.pending(task))
                                waiting.append(task)
                                if waiting.count >= Self.pipelineDepthMax {
                                    _ = await waiting.removeFirst().value
                                }
                            }
                            if session.closeAfterResponse { break }
                        }
                    } catch {
                        ended = error
                    }
                    // Every staged Produce finishes before the connection's
                    // task ends, however the connection ended: the node closes
                    // its store only after its connection tasks, and an append
                    // must not wait for a sync after that. Earlier requests
                    // still get their answers before the close.
                    await drain()
                    answerQueue.finish()
                    if let ended {
                        try? await group.waitForAll()
                        throw ended
                    }
                    try await group.waitForAll()
                }
            }
        } catch let error as FrameError {
            logger.warning("closing connection", metadata: ["client": "\(client)", "reason": "\(error)"])
        } catch {
            logger.debug("connection ended", metadata: ["client": "\(client)", "error": "\(error)"])
        }
    }
}

/// A connection's count of answers handed to its writer and not yet written.
private final class QueuedAnswers: Sendable {
    let count = Atomic<Int>(0)
}

/// A connection the listener accepted, until the accept loop takes it to
/// serve. SwiftNIO traps when a connection's `NIOAsyncChannel` is released
/// before `executeThenClose` ran on it, and a listener that stops drops the
/// connections accepted but not yet handed over (swift-nio#2637): a broker
/// stopping on a lost lease while clients reconnected crashed that way. A
/// connection dropped so is closed here instead.
final class AcceptedConnection: Sendable {
    private let connection: Mutex<NIOAsyncChannel<ByteBuffer, ByteBuffer>?>

    init(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) {
        self.connection = Mutex(connection)
    }

    func take() -> NIOAsyncChannel<ByteBuffer, ByteBuffer>? {
        connection.withLock { $0.take() }
    }

    deinit {
        if let unserved = connection.withLock({ $0.take() }) {
            Task { try? await unserved.executeThenClose { _, _ in } }
        }
    }
}
