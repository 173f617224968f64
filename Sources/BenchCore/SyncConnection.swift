import NIOCore
import NIOHTTP1
import NIOPosix

/// One member's `/sync` long polls on a plain HTTP/1.1 keep-alive
/// connection of its own. AsyncHTTPClient (its pool, request state
/// machines and task per request) and `JSONSerialization` of every answer
/// cost the load tool more CPU per delivered copy than the gateway spent
/// on it, in rooms of 1,000 on the same two cores: the tool, not the
/// server, then set the latency. The setup calls keep AsyncHTTPClient.
final class SyncConnection: Sendable {
    let channel: any Channel
    let host: String

    private init(channel: any Channel, host: String) {
        self.channel = channel
        self.host = host
    }

    static func connect(host: String, port: Int) async throws -> SyncConnection {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(SyncResponseHandler())
                }
            }
            .connect(host: host, port: port).get()
        return SyncConnection(channel: channel, host: "\(host):\(port)")
    }

    /// A GET with a bearer token; the answer's status and whole body.
    /// Cancelling the task closes the connection, which ends the wait.
    func get(_ uri: String, token: String) async throws -> (status: Int, body: ByteBuffer) {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Authorization", value: "Bearer " + token)
        let promise = channel.eventLoop.makePromise(of: (status: Int, body: ByteBuffer).self)
        channel.writeAndFlush(SyncResponseHandler.Request(head: head, promise: promise), promise: nil)
        return try await withTaskCancellationHandler {
            try await promise.futureResult.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    func close() {
        channel.close(promise: nil)
    }
}

/// Writes each request and completes its promise with the answer, in
/// order (HTTP/1.1 answers a connection's requests in order).
private final class SyncResponseHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = Request
    typealias OutboundOut = HTTPClientRequestPart

    struct Request {
        var head: HTTPRequestHead
        var promise: EventLoopPromise<(status: Int, body: ByteBuffer)>
    }

    private var waiting = CircularBuffer<EventLoopPromise<(status: Int, body: ByteBuffer)>>()
    private var status = 0
    private var body = ByteBuffer()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        // A request to a connection the server closed meanwhile fails now,
        // not never: nothing would answer it.
        guard context.channel.isActive else {
            request.promise.fail(SyncConnectionClosed())
            promise?.fail(SyncConnectionClosed())
            return
        }
        waiting.append(request.promise)
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenComplete { result in
            if case .failure(let error) = result { handler.value.fail(error) }
            promise?.completeWith(result)
        }
        context.write(wrapOutboundOut(.end(nil)), promise: written)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            body.clear()
        case .body(var part):
            body.writeBuffer(&part)
        case .end:
            guard let promise = waiting.popFirst() else {
                context.close(promise: nil)
                return
            }
            promise.succeed((status, body))
            body = context.channel.allocator.buffer(capacity: 0)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(SyncConnectionClosed())
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: any Error) {
        while let promise = waiting.popFirst() { promise.fail(error) }
    }
}

struct SyncConnectionClosed: Error, CustomStringConvertible {
    var description: String { "the sync connection closed before its answer" }
}

/// What a member's loop needs from a `/sync` answer, read from its bytes
/// without decoding the JSON: `next_batch`, and the bench messages in it.
/// A bench message's body is `bench ID INTENDED` (two decimal numbers, no
/// escapes), so a quoted string of exactly that shape is one; room names
/// (`bench 3`) and user ids (`@bench…`) have another shape. Each member is
/// in one room, so every such body in its answer is its room's.
struct SyncAnswerScan {
    var nextBatch: String?
    var messages: [(id: Int, intended: UInt64)] = []
    /// The answer carries a warm-up message (sent before the window).
    var warmUp = false
    /// Olm to-device messages in the answer (encrypted rooms' key shares):
    /// only they name the olm algorithm; room events name megolm's.
    var olmMessages = 0

    private static let nextBatchKey = Array(#""next_batch""#.utf8)
    private static let benchPrefix = Array(#""bench "#.utf8)
    private static let warmUpPrefix = Array(#""warm-up "#.utf8)
    private static let olmAlgorithm = Array(#""m.olm.v1.curve25519-aes-sha2""#.utf8)

    /// `lookForWarmUp`: false once the member has seen the warm-up message,
    /// so later answers are not scanned for it a second time.
    /// `countOlm`: count olm to-device messages (encrypted rooms only).
    init(_ bytes: UnsafeRawBufferPointer, lookForWarmUp: Bool = true, countOlm: Bool = false) {
        let quote = UInt8(ascii: "\"")
        if let key = Self.find(Self.nextBatchKey, in: bytes, from: 0) {
            var at = key + Self.nextBatchKey.count
            while at < bytes.count, bytes[at] == UInt8(ascii: " ") || bytes[at] == UInt8(ascii: ":") { at += 1 }
            if at < bytes.count, bytes[at] == quote {
                let start = at + 1
                var end = start
                while end < bytes.count, bytes[end] != quote { end += 1 }
                if end < bytes.count { nextBatch = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self) }
            }
        }
        warmUp = lookForWarmUp && Self.find(Self.warmUpPrefix, in: bytes, from: 0) != nil
        if countOlm {
            var at = 0
            while let found = Self.find(Self.olmAlgorithm, in: bytes, from: at) {
                olmMessages += 1
                at = found + Self.olmAlgorithm.count
            }
        }
        var from = 0
        while let found = Self.find(Self.benchPrefix, in: bytes, from: from) {
            var at = found + Self.benchPrefix.count
            from = at
            guard let id = Self.number(bytes, &at), at < bytes.count, bytes[at] == UInt8(ascii: " ") else { continue }
            at += 1
            guard let intended = Self.number(bytes, &at), at < bytes.count, bytes[at] == quote else { continue }
            messages.append((Int(id), intended))
            from = at
        }
    }

    private static func number(_ bytes: UnsafeRawBufferPointer, _ at: inout Int) -> UInt64? {
        var value: UInt64 = 0
        let start = at
        while at < bytes.count, bytes[at] >= UInt8(ascii: "0"), bytes[at] <= UInt8(ascii: "9"), at - start < 19 {
            value = value * 10 + UInt64(bytes[at] - UInt8(ascii: "0"))
            at += 1
        }
        return at > start ? value : nil
    }

    private static func find(_ needle: [UInt8], in bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard let first = needle.first, bytes.count >= needle.count else { return nil }
        var at = from
        let last = bytes.count - needle.count
        while at <= last {
            if bytes[at] == first {
                var matched = true
                for offset in 1..<needle.count where bytes[at + offset] != needle[offset] {
                    matched = false
                    break
                }
                if matched { return at }
            }
            at += 1
        }
        return nil
    }
}
