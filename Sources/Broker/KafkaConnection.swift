import Core
import KafkaNIO
import KafkaWire
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import Security
import Synchronization

/// One Kafka connection, on its event loop. Requests are taken one at a
/// time, in order, as Kafka brokers do (which keeps an idempotent
/// producer's batches in order), and answered in the order they came; only
/// the wait for a Produce's sync overlaps the next request.
///
/// A Produce is written right here and answered from here once durable
/// (at once under `none`, from the group-commit thread under `fsync`) or,
/// in a cluster, once its followers hold it (from the thread whose fetch
/// moved the high watermark): no task, no hop. librdkafka at linger.ms 0
/// sends a Produce for every few records, and the hops of the
/// task-per-connection path (the event loop to the connection's task, a
/// task per answer, the writer task, back to the event loop) were 17
/// context switches and about 200 µs of CPU per Produce (ADR 0021). Every
/// other request is staged by a task, one at a time, after every earlier
/// Produce is answered, so it sees what they wrote.
final class KafkaConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Requests taken but not answered, plus frames waiting to be taken,
    /// past which the connection stops reading until answers go out.
    static let backlogMax = Limits.connectionRequestsBacklogMax

    private let broker: Broker
    private let inFlight: InFlightWork
    private var context: ChannelHandlerContext?
    private var session: ClientSession
    /// Which request is taken when, and which answers may go out.
    private var order = KafkaConnectionOrder()
    private var reading = true
    /// `take` is on the stack: an answer given meanwhile (a Produce durable
    /// at once) leaves the taking to it.
    private var taking = false
    /// Inside a read: answers are flushed once at its end, so a burst of
    /// pipelined requests is answered with one write to the socket.
    private var inRead = false
    private var unflushed = false

    init(broker: Broker, client: String, host: String, listener: Listener, inFlight: InFlightWork) {
        self.broker = broker
        self.inFlight = inFlight
        session = ClientSession(client: client, host: host, listener: listener)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        broker.metrics.connectionOpened()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        broker.metrics.connectionClosed()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        broker.metrics.bytesIn.increment(by: Int64(buffer.readableBytes + 4))
        order.received(buffer.readBytes(length: buffer.readableBytes) ?? [])
        inRead = true
        take()
        throttle()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inRead = false
        if unflushed {
            unflushed = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            order.inputClosed()
            closeIfDone()
        }
        if case TLSUserEvent.handshakeCompleted = event {
            // No request can come before the handshake ends: the principal
            // a client certificate names is known before the first.
            if let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate(), let subject = Principal.subject(of: certificate) {
                guard let user = broker.configuration.principalMapping.name(for: subject) else {
                    broker.logger.warning("closing connection", metadata: ["client": "\(session.client)", "reason": "no principal mapping rule matches the certificate subject \(subject)"])
                    context.close(promise: nil)
                    return
                }
                session.certificateUser = user
                broker.logger.debug("TLS client certificate", metadata: ["client": "\(session.client)", "subject": "\(subject)", "principal": "\(session.principal)"])
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The frame decoder's refusals (a frame over the limit, a negative
        // size) end the connection, as a malformed request does.
        if error is FrameError {
            broker.logger.warning("closing connection", metadata: ["client": "\(session.client)", "reason": "\(error)"])
        } else if error is NIOSSLError || error is BoringSSLError {
            // A plaintext client on a TLS listener, a certificate from
            // another CA, an expired one: the handshake says which.
            broker.logger.warning("closing connection", metadata: ["client": "\(session.client)", "reason": "TLS: \(error)"])
        } else {
            broker.logger.debug("connection ended", metadata: ["client": "\(session.client)", "error": "\(error)"])
        }
        context.close(promise: nil)
    }

    /// Takes every request the order rules allow now.
    private func take() {
        guard !taking else { return }
        taking = true
        defer { taking = false }
        while let next = order.take() {
            switch next {
            case .produce(let frame, let position):
                if !takeProduceHere(frame, position: position) {
                    order.produceStaged()
                    stageInTask(frame, position: position)
                }
            case .stage(let frame, let position):
                stageInTask(frame, position: position)
            }
        }
    }

    /// A Produce, written on this event loop. False when it must go to a
    /// task (a version outside the supported range).
    private func takeProduceHere(_ frame: [UInt8], position: Int) -> Bool {
        guard let context else { return true }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let inFlight = self.inFlight
        inFlight.begin()
        do {
            let taken = try broker.stageProduceDirect(frame: frame, session: session) { response in
                // At once under `none` (still on this loop), else from the
                // group-commit thread or a follower fetch's.
                if loop.inEventLoop {
                    bound.value.answered(position, response, produce: true)
                } else {
                    loop.execute { bound.value.answered(position, response, produce: true) }
                }
                inFlight.end()
            }
            if !taken { inFlight.end() }
            return taken
        } catch {
            inFlight.end()
            refuse(position, because: error.reason, produce: true)
            return true
        }
    }

    /// Any other request (or a cluster's Produce) is staged by a task; its
    /// answer, or what finishes it once durable, comes back to this loop.
    private func stageInTask(_ frame: [UInt8], position: Int) {
        guard let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let broker = self.broker
        let inFlight = self.inFlight
        var session = self.session
        inFlight.begin()
        Task {
            let staged: Result<StagedAnswer, CloseConnection>
            do throws(CloseConnection) {
                staged = .success(try await broker.stage(frame: frame, session: &session))
            } catch {
                staged = .failure(error)
            }
            loop.execute { [session] in bound.value.staged(position, staged, session: session) }
            inFlight.end()
        }
    }

    private func staged(_ position: Int, _ staged: Result<StagedAnswer, CloseConnection>, session: ClientSession) {
        self.session = session
        switch staged {
        case .failure(let error):
            order.staged(awaitingDurability: false)
            refuse(position, because: error.reason, produce: false)
        case .success(.ready(let response)):
            order.staged(awaitingDurability: false)
            if session.closeAfterResponse { order.closeAfterAnswers(because: "the SASL exchange failed") }
            answered(position, response, produce: false)
        case .success(.pending(let finish)):
            // A cluster's Produce: the next request is taken while it waits for its followers.
            order.staged(awaitingDurability: true)
            guard let context else { return }
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            let inFlight = self.inFlight
            inFlight.begin()
            Task {
                let response = await finish()
                loop.execute { bound.value.answered(position, response, produce: true) }
                inFlight.end()
            }
            take()
        }
    }

    /// A request's answer is in: every answer from the oldest on that is in
    /// goes out, in order.
    private func answered(_ position: Int, _ response: [UInt8]?, produce: Bool) {
        write(order.answered(position, response, produce: produce))
    }

    /// A request that cannot be answered in Kafka's protocol: earlier
    /// requests still get their answers, then the connection closes.
    private func refuse(_ position: Int, because reason: String, produce: Bool) {
        broker.logger.warning("closing connection", metadata: ["client": "\(session.client)", "reason": "\(reason)"])
        write(order.refuse(position, because: reason, produce: produce))
    }

    private func write(_ ready: [[UInt8]]) {
        guard let context, context.channel.isActive else { return }
        for answer in ready {
            broker.metrics.bytesOut.increment(by: Int64(answer.count))
            context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: answer)), promise: nil)
            unflushed = true
        }
        if unflushed && !inRead {
            unflushed = false
            context.flush()
        }
        take()
        throttle()
        closeIfDone()
    }

    /// Closes once nothing is left to answer, when a request could not be
    /// answered in the protocol or the client closed its side.
    private func closeIfDone() {
        guard let context, order.shouldClose else { return }
        if unflushed {
            unflushed = false
            context.flush()
        }
        context.close(promise: nil)
    }

    /// Stops reading while the backlog is full; reads again once it drains.
    private func throttle() {
        guard let context else { return }
        let backlog = order.backlog
        if reading && backlog >= Self.backlogMax {
            reading = false
            try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
        } else if !reading && backlog < Self.backlogMax / 2 {
            reading = true
            try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
        }
    }
}

/// Work a connection started that must end before the node closes its
/// store (a Produce waiting for its sync, a request staged by a task): the
/// listener waits for none to be left once every connection is closed.
final class InFlightWork: Sendable {
    private struct State {
        var count = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    func begin() {
        state.withLock { $0.count += 1 }
    }

    func end() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.count -= 1
            guard state.count == 0 else { return [] }
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once no work is in flight.
    func drained() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.count == 0 { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}
