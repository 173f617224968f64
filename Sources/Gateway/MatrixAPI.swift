import Core
import Foundation
import Hummingbird
import HummingbirdCore
import KafkaWire
import Logging
import Metrics
import NIOCore

/// A Matrix error: JSON `{"errcode", "error"}` with its HTTP status.
struct MatrixError: HTTPResponseError {
    var status: HTTPResponse.Status
    var code: String
    var message: String
    var retryAfterMilliseconds: Int64? = nil
    /// M_WRONG_ROOM_KEYS_VERSION's newest backup version.
    var currentVersion: String? = nil

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        MatrixAPI.json(status, body)
    }

    /// The JSON every Matrix error answers with.
    var body: String { MatrixJSON.encode(ErrorAnswer(errcode: code, error: message, retryAfterMs: retryAfterMilliseconds, currentVersion: currentVersion)) }

    /// A write the broker refused (logged where it happened).
    static let storeUnavailable = MatrixError(.serviceUnavailable, "M_UNKNOWN", "the message store is unavailable; retry")

    /// Too many attempts: the client waits `retryAfterMilliseconds`.
    static func limitExceeded(retryAfterMilliseconds: Int64) -> MatrixError {
        var error = MatrixError(.tooManyRequests, "M_LIMIT_EXCEEDED", "too many attempts; retry later")
        error.retryAfterMilliseconds = retryAfterMilliseconds
        return error
    }

    static func forbidden(_ message: String = "You are not a member of this room") -> MatrixError {
        MatrixError(.forbidden, "M_FORBIDDEN", message)
    }
}

/// Every error leaves as Matrix JSON, including the router's own 404 and 405.
struct MatrixErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as MatrixError {
            return try error.response(from: request, context: context)
        } catch let error as HTTPError {
            let code = error.status == .notFound || error.status == .methodNotAllowed ? "M_UNRECOGNIZED" : (error.status == .contentTooLarge ? "M_TOO_LARGE" : "M_UNKNOWN")
            return MatrixAPI.json(error.status, MatrixError(error.status, code, error.body ?? "\(error.status)").body)
        } catch let error as BrokerRefusal {
            logger.error("broker refused a chat write", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return try MatrixError.storeUnavailable.response(from: request, context: context)
        } catch {
            logger.error("chat request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return MatrixAPI.json(.internalServerError, MatrixError(.internalServerError, "M_UNKNOWN", "internal error").body)
        }
    }
}

/// The Matrix client-server API subset of Docs/chat.md, over the chat topics.
struct MatrixAPI: Sendable {
    let state: ChatState
    let link: BrokerLink
    let configuration: GatewayConfiguration
    let logger: Logger
    /// The long polls' time (a manual clock in tests).
    var clock: any MonotonicClock = SystemClock()
    static let prefix = "/_matrix/client/v3"
    /// The prefixes every client route is served under (the second for r0 clients).
    static let prefixes = [prefix, "/_matrix/client/r0"]
    static let timelineLimit = 20
    /// The most events a filter may ask one room's timeline for.
    static let timelineLimitMax = 500
    /// `/sync` requests parked, waiting for something new.
    static let longPolls = Meter(label: "postduif_gateway_long_polls")

    var server: String { configuration.serverName }

    static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func ok(_ text: String) -> Response { json(.ok, text) }

    static func ok(_ answer: some Encodable) -> Response { json(.ok, MatrixJSON.encode(answer)) }

    /// The versions of the specification whose routes this gateway serves
    /// (Docs/chat.md lists which endpoints of them are still missing).
    static let versions = VersionsAnswer(versions: ["r0.5.0", "r0.6.0", "r0.6.1"] + (1...11).map { "v1.\($0)" }, unstableFeatures: [:])

    func router() -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        // Requests and durations per route (swift-metrics), then CORS (browser
        // clients: a preflight is answered before any route), then Matrix errors.
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: CORSMiddleware(
            allowOrigin: .all, allowHeaders: [.init("X-Requested-With")!, .contentType, .authorization],
            allowMethods: [.get, .head, .post, .put, .delete, .options]))
        router.add(middleware: MatrixErrorMiddleware(logger: logger))
        router.get("/_matrix/client/versions") { _, _ in
            Self.ok(Self.versions)
        }
        router.get("/.well-known/matrix/client") { request, _ in wellKnown(request) }
        addMediaRoutes(router)
        // Every route under both prefixes: r0 for clients of before v1.1 (libQuotient 0.6).
        for prefix in Self.prefixes {
            let routes = router.group(RouterPath(prefix))
            addRoomRoutes(routes)
            addClientRoutes(routes)
            addKeyRoutes(routes)
            addStateRoutes(routes)
            addDirectoryRoutes(routes)
        }
        return router
    }

    func addRoomRoutes(_ v3: RouterGroup<GatewayRequestContext>) {
        v3.get("login") { _, _ in Self.ok(LoginFlowsAnswer(flows: [.init(type: "m.login.password")])) }
        v3.post("register") { request, context in try await register(request, context) }
        v3.post("login") { request, context in try await login(request, context) }
        v3.post("logout") { request, _ in try await logout(request) }
        v3.get("account/whoami") { request, _ in
            let session = try authenticate(request)
            return Self.ok(WhoAmIAnswer(userID: session.userID, deviceID: session.deviceID))
        }
        v3.post("createRoom") { request, context in try await createRoom(request, context) }
        v3.post("rooms/:roomId/invite") { request, context in try await invite(request, context) }
        v3.post("join/:roomId") { request, context in try await join(request, context) }
        v3.post("rooms/:roomId/join") { request, context in try await join(request, context) }
        v3.post("rooms/:roomId/leave") { request, context in try await leave(request, context) }
        v3.put("rooms/:roomId/send/:eventType/:txnId") { request, context in try await send(request, context) }
        v3.get("sync") { request, _ in try await sync(request) }
        v3.get("rooms/:roomId/messages") { request, context in try await messages(request, context) }
        v3.get("joined_rooms") { request, _ in
            let session = try authenticate(request)
            let rooms = state.directory.rooms(of: session.userID).filter { $0.member.membership == "join" }.map(\.roomID)
            return Self.ok(JoinedRoomsAnswer(joinedRooms: rooms.sorted()))
        }
        v3.get("rooms/:roomId/joined_members") { request, context in try await joinedMembers(request, context) }
        v3.post("rooms/:roomId/read_markers") { request, context in try await readMarkers(request, context) }
        v3.post("rooms/:roomId/receipt/:receiptType/:eventId") { request, context in try await readMarkers(request, context) }
    }

    // MARK: Helpers

    /// The request's body as `type` (see `MatrixJSON.decodeBody`).
    func body<Body: Decodable>(_ type: Body.Type, _ request: Request, limit: Int? = nil) async throws -> Body {
        try MatrixJSON.decodeBody(type, from: try await collectBody(request, limit: limit))
    }

    func collectBody(_ request: Request, limit: Int? = nil) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: limit ?? configuration.bodyBytesMax)
        } catch {
            throw MatrixError(.contentTooLarge, "M_TOO_LARGE", "the request body is over \(limit ?? configuration.bodyBytesMax) bytes")
        }
    }

    /// The largest body of the key routes (`keys/*`, `sendToDevice`): a
    /// room key shared with every device of a room of 1,000 is one
    /// to-device request of about 1.5 MB.
    static let keyBodyBytesMax = 8 << 20

    var tooLarge: MatrixError {
        MatrixError(.contentTooLarge, "M_TOO_LARGE", "the request body is over \(configuration.bodyBytesMax) bytes")
    }

    /// A message's content: checked to be a JSON object, kept as its text
    /// (`{}` when empty).
    static func contentText(_ buffer: ByteBuffer) throws -> String {
        if buffer.readableBytes == 0 { return "{}" }
        try MatrixJSON.requireObject(buffer.readableBytesView)
        return String(buffer: buffer)
    }

    func authenticate(_ request: Request) throws -> Session {
        try authenticate(authorization: request.headers[.authorization], query: request.uri)
    }

    /// The session of a request's bearer token (header, or `access_token`
    /// in the query).
    func authenticate(authorization: String?, query uri: URI) throws -> Session {
        var token: String?
        if let header = authorization, header.hasPrefix("Bearer ") {
            token = String(header.dropFirst("Bearer ".count))
        } else if let query = uri.queryParameters.get("access_token") {
            token = query
        }
        guard let token else { throw MatrixError(.unauthorized, "M_MISSING_TOKEN", "no access token") }
        // A removed account's tokens stop working with it.
        guard let session = state.credentials.session(forDigest: Secrets.tokenDigest(token)), state.credentials.account(session.userID)?.hash != nil else {
            throw MatrixError(.unauthorized, "M_UNKNOWN_TOKEN", "unknown or revoked access token")
        }
        return session
    }

    func parameter(_ context: GatewayRequestContext, _ name: String) -> String {
        Self.pathParameter(context.parameters.get(name) ?? "")
    }

    /// A path parameter as handlers see it: percent-decoded where that works.
    static func pathParameter(_ raw: String) -> String {
        percentDecoded(raw) ?? raw
    }

    /// `text` with its `%XX` escapes decoded; nil where an escape is
    /// malformed or the result is not UTF-8 (as Foundation's
    /// `removingPercentEncoding`, which cost a CFString round trip per
    /// path parameter: two for every message sent).
    static func percentDecoded(_ text: String) -> String? {
        let utf8 = text.utf8
        guard utf8.contains(UInt8(ascii: "%")) else { return text }
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hex), let low = iterator.next().flatMap(hex) else { return nil }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    func userID(localpart: String) -> String { "@\(localpart):\(server)" }

    /// A local user id from what a client sent: a localpart or a full id.
    func userID(from text: String) -> String {
        text.hasPrefix("@") ? text : userID(localpart: text)
    }
}
