import Core
import Foundation
import Hummingbird
import HummingbirdCore
import KafkaNIO
import KafkaWire
import Logging
import Metrics
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOSSL
import Security
import Synchronization

/// The gateway's HTTP/1.1 connections: Hummingbird's own pipeline with the
/// sync fast path in front of its request handling.
///
/// A delivered copy of a message is one answer to a parked `/sync` and the
/// member's next `/sync`. Through the router each of those is a request
/// value, a task hop from the event loop to the connection's task and back,
/// the middleware chain and a continuation per wait; in rooms of 1,000 that
/// path, not the gateway's own work, was most of its CPU. Here a plain
/// keep-alive `GET /sync` is answered on the connection's event loop and
/// parks there; everything else (and a sync the cache cannot answer, or of
/// a user the fan-out does not route here yet) goes to the router unchanged.
struct MatrixHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let api: MatrixAPI
    let responder: HTTPChannelHandler.Responder
    /// HTTPS: TLS first, with the certificate current when the connection opens.
    let tls: ReloadableTLSContext?

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // Reads of up to 1 MiB where a connection brings that much (a
            // file's upload): at NIO's default of 64 KiB, each 10 MiB file
            // was 160 reads and as many hand-offs to the handler's task.
            // The buffer grows only on connections whose reads fill it.
            try channel.syncOptions?.setOption(ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 1 << 20))
            if let tls {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current))
            }
            // As HTTP1Channel sets up its pipeline, with the fast path between
            // the HTTP/1 decoder and the conversion to HTTP types.
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
                withEncoderConfiguration: .init(), withDecoderLimitConfiguration: .init())
            try channel.pipeline.syncOperations.addHandler(SyncFastPath(api: api))
            try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: tls != nil))
            try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
            return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: asyncChannel, logger: logger)
    }
}

/// Answers `GET /_matrix/client/v3/sync` on the event loop (see
/// `MatrixHTTP1Channel`), passing every other request on to the router.
///
/// Order on the connection is kept: a sync is taken only when every request
/// passed on before it has been answered (its response's end went out
/// through here; otherwise the router gets it too), and requests arriving
/// while a sync is parked wait behind it.
final class SyncFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    static let answered = Counter(label: "postduif_gateway_fast_syncs_total")
    static let sent = Counter(label: "postduif_gateway_fast_sends_total")

    let api: MatrixAPI
    private var context: ChannelHandlerContext?
    /// Where answers are written as bytes: the context of the HTTP/1
    /// encoder, so they go straight to the socket.
    private var rawOutput: ChannelHandlerContext?
    /// Which requests are taken here, which go to the router, which wait.
    private var order: FastPathOrder
    /// The sync parked here, and its key in `ChatState`.
    private var parked: (head: HTTPRequestHead, query: MatrixAPI.SyncQuery, key: UInt64)?
    /// The last `Authorization` header authenticated here, its session and
    /// the credentials revision then: a client sends the same token with
    /// every sync, and hashing it each time was a tenth of a sync's work.
    private var authenticated: (header: String, session: Session, revision: UInt64)?

    init(api: MatrixAPI) {
        self.api = api
        order = FastPathOrder(bodyBytesMax: api.configuration.bodyBytesMax, takesSends: api.configuration.directAppends?.appendsDirectly == true)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        rawOutput = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        unpark()
        self.context = nil
        rawOutput = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        unpark()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .head(let head) = part, head.version == .http1_1, order.isIdle, let rawOutput,
           head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
            // A client that asks waits for this before it sends the body
            // (curl a whole second, for uploads); on a connection with
            // nothing else in flight it cannot land inside another answer.
            rawOutput.writeAndFlush(NIOAny(IOData.byteBuffer(ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\n"))), promise: nil)
        }
        for action in order.receive(part) { perform(action, context: context) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            order.responseEnded()
        }
        context.write(data, promise: promise)
    }

    private func perform(_ action: FastPathOrder.Action, context: ChannelHandlerContext) {
        switch action {
        case .forward(let part): context.fireChannelRead(wrapInboundOut(part))
        case .sync(let head): start(head)
        case .send(let head, let path, let body): startSend(head, path, body)
        }
    }

    /// Takes the parts that came while a sync was parked or a send appended, once it is answered.
    private func drain() {
        guard let context else { return }
        var passed = false
        while let part = order.nextQueued() {
            for action in order.take(part) { perform(action, context: context) }
            passed = true
        }
        // The router's channel reads what it was passed at a read's end.
        if passed { context.fireChannelReadComplete() }
    }

    private func start(_ head: HTTPRequestHead) {
        let query: MatrixAPI.SyncQuery
        do {
            let uri = URI(head.uri)
            query = try api.syncQuery(session: try session(head, uri: uri), uri: uri)
        } catch let error as MatrixError {
            answer(status: error.status.code, body: error.body)
            return
        } catch {
            passOn(head)
            return
        }
        api.state.registration.touch(user: query.session.userID)
        // A user new here waits, in the router, for the fan-out to route them here.
        guard api.state.registration.isRegistered(query.session.userID) else {
            passOn(head)
            return
        }
        step(head, query)
    }

    /// The session of a request's token, remembered for the connection's next request.
    private func session(_ head: HTTPRequestHead, uri: URI) throws -> Session {
        let header = head.headers.first(name: "authorization")
        let revision = api.state.credentials.revision.load(ordering: .acquiring)
        if let header, let known = authenticated, known.header == header, known.revision == revision {
            return known.session
        }
        let session = try api.authenticate(authorization: header, query: uri)
        // Only a bearer header names the token by itself (otherwise it
        // came from the query, which may differ next time).
        authenticated = header.flatMap { $0.hasPrefix("Bearer ") ? ($0, session, revision) : nil }
        return session
    }

    // MARK: Sends

    /// A message send of a member, answered here: its record is appended to
    /// the broker in this process without a Produce frame or a task, and
    /// answered on this event loop once committed (ADR 0017). The checks
    /// and errors are the router's (`MatrixAPI.planSend`).
    private func startSend(_ head: HTTPRequestHead, _ path: FastPathOrder.SendPath, _ body: ByteBuffer?) {
        let session: Session
        let plan: MatrixAPI.SendPlan
        do {
            session = try self.session(head, uri: URI(head.uri))
            try api.requireJoined(session, path.roomID)
            guard let body else { throw api.tooLarge }
            plan = try api.planSend(session: session, roomID: path.roomID, eventType: path.eventType, txnID: path.txnID, body: body)
        } catch {
            let error = error as? MatrixError ?? MatrixError(.internalServerError, "M_UNKNOWN", "internal error")
            answer(status: error.status.code, body: error.body, kind: Self.sent)
            return
        }
        let message: MatrixAPI.OutgoingMessage
        switch plan {
        case .answered(let text):
            answer(status: 200, body: text, kind: Self.sent)
            return
        case .recall:
            // The router reads the room's latest sends first.
            passOn(head, body: body)
            return
        case .append(let outgoing) where outgoing.relation != nil:
            // An edit, thread reply or reference is recorded in
            // chat-relations too: the router's way does both.
            passOn(head, body: body)
            return
        case .append(let outgoing):
            message = outgoing
        }
        guard let context, let local = api.configuration.directAppends else { return }
        let loop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        let state = api.state
        let key = Array(path.roomID.utf8)
        let partition = KafkaPartitioner.partition(forKey: key, partitionCount: state.timelinePartitions)
        let value = MatrixAPI.messageValue(type: path.eventType, sender: session.userID, contentText: message.contentText)
        order.busy = .appending
        let taken = local.appendDirect(
            topic: ChatTopics.conversations, partition: partition, key: key, value: Array(value.utf8),
            headers: MatrixAPI.transactionHeaders(message.transaction), timestamp: MatrixAPI.now
        ) { result in
            // Remembered before the answer, so a retry on any connection finds it.
            let outcome = result.map { offset in
                let eventID = ChatState.eventID(partition: partition, offset: offset)
                state.transactions.remember(message.transaction, eventID: eventID)
                return eventID
            }
            loop.execute { bound.value.appended(outcome) }
        }
        if !taken {
            order.busy = .none
            passOn(head, body: body)
        }
    }

    private func appended(_ outcome: Result<String, DirectAppendRefusal>) {
        order.busy = .none
        switch outcome {
        case .success(let eventID):
            BrokerLink.producedRecords.increment()
            answer(status: 200, body: MatrixAPI.sendAnswer(eventID), kind: Self.sent)
        case .failure(let refusal):
            // As the router answers a refused write.
            api.logger.error("broker refused a chat write", metadata: ["error": "\(refusal)"])
            answer(status: MatrixError.storeUnavailable.status.code, body: MatrixError.storeUnavailable.body, kind: Self.sent)
        }
        drain()
    }

    // MARK: Syncs

    private func step(_ head: HTTPRequestHead, _ query: MatrixAPI.SyncQuery) {
        while true {
            let next: MatrixAPI.SyncStep
            do {
                next = try api.syncStep(query, now: api.clock.now)
            } catch {
                // A room not cached: the router reads it from the broker.
                passOn(head)
                return
            }
            switch next {
            case .answer(let body, let shared):
                answer(status: 200, body: body, shared: shared)
                return
            case .wait(let generation):
                guard let context else { return }
                let loop = context.eventLoop
                let bound = NIOLoopBound(self, eventLoop: loop)
                let user = query.session.userID
                // The key is known only once parked; the wake finds it in `parked`.
                guard let key = api.state.park(user, after: generation, timeout: query.deadline - api.clock.now, resume: {
                    loop.execute { bound.value.woken() }
                }) else { continue }
                MatrixAPI.longPolls.increment()
                parked = (head, query, key)
                order.busy = .parked
                return
            }
        }
    }

    private func woken() {
        guard let (head, query, _) = parked else { return }
        parked = nil
        order.busy = .none
        MatrixAPI.longPolls.decrement()
        step(head, query)
        drain()
    }

    private func unpark() {
        guard let (_, query, key) = parked else { return }
        parked = nil
        order.busy = .none
        MatrixAPI.longPolls.decrement()
        api.state.unpark(query.session.userID, key: key)
    }

    /// Hands a request the fast path will not answer to the router, as it came.
    private func passOn(_ head: HTTPRequestHead, body: ByteBuffer? = nil) {
        guard let context else { return }
        order.passedOn()
        context.fireChannelRead(wrapInboundOut(.head(head)))
        if let body, body.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(.body(body))) }
        context.fireChannelRead(wrapInboundOut(.end(nil)))
        context.fireChannelReadComplete()
    }

    /// Writes a whole JSON response as bytes, in one write. A shared body's
    /// response is made once and the same buffer written to every member.
    private func answer(status: Int, body: String, shared: String? = nil, kind: Counter = SyncFastPath.answered) {
        guard let context, let rawOutput, context.channel.isActive else { return }
        let date = Self.httpDate()
        // The shared bytes carry a Date header: kept per key and second.
        let sharedKey = shared.map { $0 + "|" + date }
        let buffer: ByteBuffer
        if let sharedKey, let made = Self.sharedResponses.withLock({ $0[sharedKey] }) {
            buffer = made
        } else {
            let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
            var made = context.channel.allocator.buffer(capacity: body.utf8.count + 160)
            made.writeString("HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nDate: \(date)\r\nServer: postduif-gateway\r\n"
                + "Access-Control-Allow-Origin: *\r\n\r\n")
            made.writeString(body)
            if let sharedKey {
                Self.sharedResponses.withLock { responses in
                    if responses.count > 1_000 { responses.removeAll(keepingCapacity: true) }
                    responses[sharedKey] = made
                }
            }
            buffer = made
        }
        rawOutput.writeAndFlush(NIOAny(IOData.byteBuffer(buffer)), promise: nil)
        kind.increment()
    }

    /// The `Date` header's value (RFC 9110 IMF-fixdate), made once a second.
    static func httpDate() -> String {
        var now = time(nil)
        if let cached = dateCache.withLock({ $0 }), cached.second == now { return cached.text }
        var parts = tm()
        gmtime_r(&now, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let text = "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
        dateCache.withLock { $0 = (now, text) }
        return text
    }

    private static let dateCache = Mutex<(second: time_t, text: String)?>(nil)

    /// Responses of shared sync bodies, by their key (`MatrixAPI.sharedAnswerKey`) and second.
    static let sharedResponses = Mutex<[String: ByteBuffer]>([:])
}
