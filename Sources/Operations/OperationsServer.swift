import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Security

/// The operators' HTTP port: `/metrics` (Prometheus text), `/health` (the
/// process answers) and `/ready` (the Kafka listener is bound and the log
/// store open). HTTP/1.1 on NIO, over TLS with `tls` (`--http-tls`),
/// nothing else on this port.
public struct OperationsServer: Sendable {
    public let host: String
    public let port: Int
    let metricsText: @Sendable () -> String
    let isReady: @Sendable () -> Bool
    let logger: Logger
    let tls: ReloadableTLSContext?

    public init(host: String, port: Int, logger: Logger, tls: ReloadableTLSContext? = nil,
                metricsText: @escaping @Sendable () -> String, isReady: @escaping @Sendable () -> Bool) {
        self.host = host
        self.port = port
        self.tls = tls
        self.logger = logger
        self.metricsText = metricsText
        self.isReady = isReady
    }

    /// Serves until cancelled; `onListening` gets the bound port.
    public func run(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, onListening: @Sendable (Int) -> Void = { _ in }) async throws {
        let metricsText = self.metricsText
        let isReady = self.isReady
        let tls = self.tls
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(OperationsHandler(metricsText: metricsText, isReady: isReady))
                }
            }
            .bind(host: host, port: port).get()
        let bound = channel.localAddress?.port ?? port
        logger.info("serving /metrics, /health and /ready", metadata: ["host": "\(host)", "port": "\(bound)"])
        onListening(bound)
        try await withTaskCancellationHandler {
            try await channel.closeFuture.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }
}

/// Answers one GET per request on the operations port.
final class OperationsHandler: ChannelInboundHandler, @unchecked Sendable {
    // NIO calls a handler on its channel's event loop only.
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let metricsText: @Sendable () -> String
    let isReady: @Sendable () -> Bool
    private var path = ""

    init(metricsText: @escaping @Sendable () -> String, isReady: @escaping @Sendable () -> Bool) {
        self.metricsText = metricsText
        self.isReady = isReady
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.split(separator: "?").first ?? "")
        case .body:
            break
        case .end:
            let (status, body, type): (HTTPResponseStatus, String, String)
            switch path {
            case "/metrics": (status, body, type) = (.ok, MetricHelp.annotate(metricsText()), "text/plain; version=0.0.4; charset=utf-8")
            case "/health": (status, body, type) = (.ok, "ok\n", "text/plain")
            case "/ready": (status, body, type) = isReady() ? (.ok, "ready\n", "text/plain") : (.serviceUnavailable, "not ready\n", "text/plain")
            default: (status, body, type) = (.notFound, "not found: try /metrics, /health or /ready\n", "text/plain")
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: String(body.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
