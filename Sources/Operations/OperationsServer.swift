import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Security

/// The operators' HTTP port: `/metrics` (Prometheus text), `/health` (the
/// process answers), `/ready` (the Kafka listener is bound and the log
/// store open), and with `console` the operator console at `/` (its data
/// at `/console/state` and `/console/events`). HTTP/1.1 on NIO, over TLS
/// with `tls` (`--http-tls`).
public struct OperationsServer: Sendable {
    public let host: String
    public let port: Int
    let metricsText: @Sendable () -> String
    let isReady: @Sendable () -> Bool
    let logger: Logger
    let tls: ReloadableTLSContext?
    let console: OperationsConsole?

    public init(host: String, port: Int, logger: Logger, tls: ReloadableTLSContext? = nil, console: OperationsConsole? = nil,
                metricsText: @escaping @Sendable () -> String, isReady: @escaping @Sendable () -> Bool) {
        self.host = host
        self.port = port
        self.tls = tls
        self.console = console
        self.logger = logger
        self.metricsText = metricsText
        self.isReady = isReady
    }

    /// Serves until cancelled; `onListening` gets the bound port.
    public func run(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, onListening: @Sendable (Int) -> Void = { _ in }) async throws {
        let metricsText = self.metricsText
        let isReady = self.isReady
        let tls = self.tls
        let console = self.console
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.current)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(OperationsHandler(metricsText: metricsText, isReady: isReady, console: console))
                }
            }
            .bind(host: host, port: port).get()
        let bound = channel.localAddress?.port ?? port
        logger.info(console == nil ? "serving /metrics, /health and /ready" : "serving the console at /, and /metrics, /health and /ready",
                    metadata: ["host": "\(host)", "port": "\(bound)", "consoleLogin": "\(console?.authorize != nil)"])
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
    let console: OperationsConsole?
    private var path = ""
    private var authorization: String?

    init(metricsText: @escaping @Sendable () -> String, isReady: @escaping @Sendable () -> Bool, console: OperationsConsole?) {
        self.metricsText = metricsText
        self.isReady = isReady
        self.console = console
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = String(head.uri.split(separator: "?").first ?? "")
            authorization = head.headers.first(name: "Authorization")
        case .body:
            break
        case .end:
            var headers = HTTPHeaders()
            let (status, body, type) = answer(context: context, headers: &headers)
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: String(body.utf8.count))
            headers.add(name: "Cache-Control", value: "no-store")
            headers.add(name: "X-Content-Type-Options", value: "nosniff")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    private func answer(context: ChannelHandlerContext, headers: inout HTTPHeaders) -> (HTTPResponseStatus, String, String) {
        switch path {
        case "/metrics": return (.ok, MetricHelp.annotate(metricsText()), "text/plain; version=0.0.4; charset=utf-8")
        case "/health": return (.ok, "ok\n", "text/plain")
        case "/ready": return isReady() ? (.ok, "ready\n", "text/plain") : (.serviceUnavailable, "not ready\n", "text/plain")
        case "/", "/console.js", "/console.css", "/console/state", "/console/events":
            guard let console else { return (.notFound, "not found: try /metrics, /health or /ready\n", "text/plain") }
            if let authorize = console.authorize {
                let host = context.remoteAddress?.ipAddress ?? ""
                guard let (user, password) = Self.basicCredentials(authorization), authorize(user, password, host) else {
                    headers.add(name: "WWW-Authenticate", value: "Basic realm=\"Postduif console\", charset=\"UTF-8\"")
                    return (.unauthorized, "sign in with a user allowed Describe on the cluster\n", "text/plain")
                }
            }
            headers.add(name: "Content-Security-Policy", value: ConsoleAssets.contentSecurityPolicy)
            headers.add(name: "X-Frame-Options", value: "DENY")
            switch path {
            case "/console.js": return (.ok, ConsoleAssets.script, "text/javascript; charset=utf-8")
            case "/console.css": return (.ok, ConsoleAssets.style, "text/css; charset=utf-8")
            case "/console/state": return (.ok, console.state(), "application/json")
            case "/console/events": return (.ok, console.events.json, "application/json")
            default: return (.ok, ConsoleAssets.page, "text/html; charset=utf-8")
            }
        default: return (.notFound, "not found: try /, /metrics, /health or /ready\n", "text/plain")
        }
    }

    /// User and password of an `Authorization: Basic` header.
    static func basicCredentials(_ header: String?) -> (String, String)? {
        guard let header, header.lowercased().hasPrefix("basic "),
              let decoded = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
              let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":")
        else { return nil }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }
}
