import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// What the NATS server sends.
enum NatsEvent: Sendable {
    case info(String)
    case message(subject: String, sid: Int, reply: String?, payload: [UInt8])
    /// A JetStream consumer's flow-control request: answer on `reply` to get more.
    case flowControl(reply: String)
    /// A status-only HMSG (idle heartbeat and the like).
    case status
    case ping
    case pong
    case ok
    case error(String)
}

/// Splits the server's byte stream into protocol operations: a line, and
/// for MSG and HMSG a payload of the announced size (HMSG's headers are
/// dropped: the tool publishes none).
struct NatsDecoder: ByteToMessageDecoder {
    typealias InboundOut = NatsEvent
    static let lineBytesMax = 64 << 10

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > Self.lineBytesMax { throw TargetError.refused("NATS protocol line over \(Self.lineBytesMax) bytes") }
            return .needMoreData
        }
        let lineLength = newline - view.startIndex + 1
        var line = String(decoding: view[view.startIndex..<newline], as: UTF8.self)
        if line.hasSuffix("\r") { line.removeLast() }
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        // The server sends operations in upper case.
        guard let op = fields.first else {
            buffer.moveReaderIndex(forwardBy: lineLength)
            return .continue
        }
        switch op {
        case "MSG", "HMSG":
            // MSG subject sid [reply] size; HMSG subject sid [reply] header-size total-size
            let headered = op == "HMSG"
            let counts = headered ? 2 : 1
            guard fields.count == 3 + counts || fields.count == 4 + counts,
                  let total = Int(fields[fields.count - 1]), let sid = Int(fields[2]) else {
                throw TargetError.refused("malformed NATS line: \(line)")
            }
            let headerBytes = headered ? (Int(fields[fields.count - 2]) ?? 0) : 0
            guard buffer.readableBytes >= lineLength + total + 2 else { return .needMoreData }
            buffer.moveReaderIndex(forwardBy: lineLength)
            let bytes = buffer.readBytes(length: total)!
            buffer.moveReaderIndex(forwardBy: 2)
            let reply = fields.count == 4 + counts ? String(fields[3]) : nil
            if headered && headerBytes == total {
                // Headers only: a status such as "NATS/1.0 100 FlowControl Request".
                let header = String(decoding: bytes, as: UTF8.self)
                if header.contains("FlowControl"), let reply {
                    context.fireChannelRead(wrapInboundOut(.flowControl(reply: reply)))
                } else {
                    context.fireChannelRead(wrapInboundOut(.status))
                }
                return .continue
            }
            context.fireChannelRead(wrapInboundOut(.message(subject: String(fields[1]), sid: sid, reply: reply, payload: Array(bytes[headerBytes...]))))
        case "PING":
            buffer.moveReaderIndex(forwardBy: lineLength)
            context.fireChannelRead(wrapInboundOut(.ping))
        case "PONG":
            buffer.moveReaderIndex(forwardBy: lineLength)
            context.fireChannelRead(wrapInboundOut(.pong))
        case "+OK":
            buffer.moveReaderIndex(forwardBy: lineLength)
            context.fireChannelRead(wrapInboundOut(.ok))
        case "-ERR":
            buffer.moveReaderIndex(forwardBy: lineLength)
            context.fireChannelRead(wrapInboundOut(.error(line)))
        case "INFO":
            buffer.moveReaderIndex(forwardBy: lineLength)
            context.fireChannelRead(wrapInboundOut(.info(String(line.dropFirst(5)))))
        default:
            throw TargetError.refused("unknown NATS operation: \(line)")
        }
        return .continue
    }
}

/// Answers the server's PINGs, completes our PINGs' PONGs and request
/// replies, and hands every other event to the owner in batches (one call
/// per read, not per message).
final class NatsHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = NatsEvent
    typealias OutboundOut = ByteBuffer

    // Touched only on the channel's event loop.
    var pongWaiters = CircularBuffer<EventLoopPromise<Void>>()
    var replyWaiters: [String: EventLoopPromise<[UInt8]>] = [:]
    var pending: [NatsEvent] = []
    let onEvents: @Sendable ([NatsEvent]) -> Void

    init(onEvents: @escaping @Sendable ([NatsEvent]) -> Void) {
        self.onEvents = onEvents
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let event = unwrapInboundIn(data)
        switch event {
        case .ping:
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "PONG\r\n")), promise: nil)
        case .pong:
            pongWaiters.popFirst()?.succeed(())
        case .message(let subject, _, _, let payload) where replyWaiters[subject] != nil:
            replyWaiters.removeValue(forKey: subject)!.succeed(payload)
        case .flowControl(let reply):
            // Flow control is what keeps a fast JetStream consumer from
            // overrunning this client (and the server from cutting it off
            // as a slow consumer): answer after the messages before it.
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "PUB \(reply) 0\r\n\r\n")), promise: nil)
        case .status:
            break
        case .error(let line):
            pending.append(event)
            let error = TargetError.refused("NATS server: \(line)")
            while let waiter = pongWaiters.popFirst() { waiter.fail(error) }
        default:
            pending.append(event)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !pending.isEmpty {
            let events = pending
            pending.removeAll(keepingCapacity: true)
            onEvents(events)
        }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let error = TargetError.refused("the NATS connection closed")
        while let waiter = pongWaiters.popFirst() { waiter.fail(error) }
        for waiter in replyWaiters.values { waiter.fail(error) }
        replyWaiters.removeAll()
        context.fireChannelInactive()
    }
}

final class NatsConnection: Sendable {
    let channel: any Channel
    let handler: NatsHandler
    private let nextRequest = Atomic<Int>(0)
    private let requestInbox = "_INBOX.\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased())."

    private init(channel: any Channel, handler: NatsHandler) {
        self.channel = channel
        self.handler = handler
    }

    static func connect(host: String, port: Int, onEvents: @escaping @Sendable ([NatsEvent]) -> Void = { _ in }) async throws -> NatsConnection {
        let handler = NatsHandler(onEvents: onEvents)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(NatsDecoder()))
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port).get()
        let connection = NatsConnection(channel: channel, handler: handler)
        let connect = #"CONNECT {"verbose":false,"pedantic":false,"tls_required":false,"name":"postduif-bench","lang":"swift","version":"1","protocol":1,"headers":true,"no_responders":true}"#
        channel.writeAndFlush(ByteBuffer(string: connect + "\r\n"), promise: nil)
        try await connection.ping()
        // Replies to our requests arrive on one wildcard subscription.
        connection.subscribe(connection.requestInbox + "*", sid: 99)
        try await connection.ping()
        return connection
    }

    func subscribe(_ subject: String, sid: Int) {
        channel.writeAndFlush(ByteBuffer(string: "SUB \(subject) \(sid)\r\n"), promise: nil)
    }

    /// Round trip: every operation sent before it has been processed by the server.
    func ping() async throws {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.eventLoop.execute { [handler, channel] in
            handler.pongWaiters.append(promise)
            channel.writeAndFlush(ByteBuffer(string: "PING\r\n"), promise: nil)
        }
        try await promise.futureResult.get()
    }

    /// A request (publish with a reply subject) and its one reply.
    func request(_ subject: String, payload: [UInt8], timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        let inbox = requestInbox + String(nextRequest.add(1, ordering: .relaxed).newValue)
        let promise = channel.eventLoop.makePromise(of: [UInt8].self)
        channel.eventLoop.execute { [handler, channel] in
            handler.replyWaiters[inbox] = promise
            var buffer = channel.allocator.buffer(capacity: payload.count + 64)
            buffer.writeString("PUB \(subject) \(inbox) \(payload.count)\r\n")
            buffer.writeBytes(payload)
            buffer.writeString("\r\n")
            channel.writeAndFlush(buffer, promise: nil)
        }
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000)) {
            promise.fail(TargetError.refused("no reply to \(subject) within \(timeout)"))
        }
        defer { timer.cancel() }
        return try await promise.futureResult.get()
    }

    /// Publishes messages to `stream.<key>`, each with the reply subject
    /// `replyPrefix<id>` (ids counting up from `firstID`), in one write.
    func publish(stream: String, _ messages: ArraySlice<OutgoingMessage>, replyPrefix: String?, firstID: UInt64) {
        var buffer = channel.allocator.buffer(capacity: messages.reduce(0) { $0 + $1.value.count + $1.key.count + 96 })
        for (offset, message) in messages.enumerated() {
            buffer.writeString("PUB ")
            buffer.writeString(stream)
            buffer.writeString(".")
            buffer.writeBytes(message.key)
            if let replyPrefix {
                buffer.writeString(" ")
                buffer.writeString(replyPrefix)
                buffer.writeString(String(firstID + UInt64(offset)))
            }
            buffer.writeString(" ")
            buffer.writeString(String(message.value.count))
            buffer.writeString("\r\n")
            buffer.writeBytes(message.value)
            buffer.writeString("\r\n")
        }
        channel.writeAndFlush(buffer, promise: nil)
    }

    /// JetStream's error description in an API or publish answer, if any.
    static func jetStreamError(_ payload: [UInt8]) -> String? {
        // Every publish gets an answer: parse JSON only when it holds an error.
        if !payload.isEmpty && !contains(payload, Self.errorKey) { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] else {
            return payload.isEmpty ? "no responders (is JetStream enabled?)" : "unreadable answer: \(String(decoding: payload.prefix(200), as: UTF8.self))"
        }
        guard let error = object["error"] as? [String: Any] else { return nil }
        let description = error["description"] as? String ?? "unknown"
        let code = error["err_code"] as? Int ?? error["code"] as? Int ?? 0
        if code == 10059 { return nil }  // stream not found, answering a delete: fine
        return "\(description) (\(code))"
    }

    static let errorKey = Array(#""error""#.utf8)

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }

    func close() async {
        try? await channel.close()
    }
}
