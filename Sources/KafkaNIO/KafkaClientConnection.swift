import KafkaWire
import NIOCore
import NIOPosix

/// Why a request got no answer.
public enum KafkaClientError: Error, CustomStringConvertible {
    case connectionClosed
    case correlationMismatch(expected: Int32, got: Int32)
    case malformedResponse(String)
    case broker(errorCode: Int16, String)

    public var description: String {
        switch self {
        case .connectionClosed: "the connection closed before the answer arrived"
        case .correlationMismatch(let expected, let got): "answer with correlation id \(got), expected \(expected)"
        case .malformedResponse(let reason): "malformed answer: \(reason)"
        case .broker(let code, let what): "\(what): broker error \(code)"
        }
    }
}

/// A client connection to a Kafka broker, for the load tool and (later)
/// replica fetchers. Requests are pipelined: a caller may send many before
/// the first answer arrives; brokers answer a connection's requests in
/// order, so answers are matched to requests first in, first out, and the
/// correlation id checks it.
public final class KafkaClientConnection: Sendable {
    let channel: any Channel
    public let clientID: String

    init(channel: any Channel, clientID: String) {
        self.channel = channel
        self.clientID = clientID
    }

    public static func connect(
        host: String, port: Int, clientID: String = "postduif-client",
        frameBytesMax: Int = 256 << 20,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> KafkaClientConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: frameBytesMax)))
                    try channel.pipeline.syncOperations.addHandler(KafkaClientHandler())
                }
            }
            .connect(host: host, port: port).get()
        return KafkaClientConnection(channel: channel, clientID: clientID)
    }

    /// Sends one request. The future holds the answer's body (after the
    /// response header), or nil at once when `expectsResponse` is false
    /// (Produce with acks=0).
    public func send(_ api: ApiKey, version: Int16, expectsResponse: Bool = true, _ encode: (inout ByteWriter) -> Void) -> EventLoopFuture<ByteReader?> {
        var writer = ByteWriter(capacity: 256)
        writer.writeInt32(0)  // frame size, patched below
        // The handler writes the correlation id: it owns the order of the wire.
        RequestHeader(apiKey: api.rawValue, apiVersion: version, correlationID: 0, clientID: clientID)
            .encode(&writer, flexible: version >= api.firstFlexibleVersion)
        encode(&writer)
        writer.patchUInt32(UInt32(writer.bytes.count - 4), at: 0)
        let promise = channel.eventLoop.makePromise(of: ByteReader?.self)
        let request = KafkaClientHandler.Request(
            frame: writer.bytes, expectsResponse: expectsResponse,
            // ApiVersions answers with a v0 header whatever its version (KIP-511).
            flexibleResponseHeader: version >= api.firstFlexibleVersion && api != .apiVersions,
            promise: promise)
        // Checked and written on the channel's event loop, where a close is
        // processed too: a request to a closed connection fails at once
        // instead of waiting for an answer that cannot come.
        let channel = self.channel
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
        guard let reader = try await send(api, version: version, encode).get() else {
            throw KafkaClientError.malformedResponse("no answer")
        }
        return reader
    }

    public func close() async {
        try? await channel.close()
    }

    /// Closes without waiting (for cancellation handlers): requests waiting
    /// for an answer fail with `connectionClosed` at once.
    public func closeNow() {
        channel.close(promise: nil)
    }
}

/// Assigns correlation ids in write order and completes each request's
/// promise with its answer.
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
    private var waiting = CircularBuffer<(correlationID: Int32, flexible: Bool, promise: EventLoopPromise<ByteReader?>)>()

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
            waiting.append((correlationID, request.flexibleResponseHeader, request.promise))
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
