import NIOCore
import NIOHTTP1

/// The sync fast path's rules of order on one keep-alive connection, with
/// no channel and no chat state: which requests the fast path takes, which
/// go to the router, and which wait. `SyncFastPath` feeds it the request
/// parts and the ends of the router's responses and carries out what it says.
///
/// - A sync or a message send is taken only when every request passed on
///   before it has been answered (its response's end went out) and none is
///   half passed; otherwise the router gets it too, so answers keep the
///   order of requests.
/// - A sync that brings a body goes to the router.
/// - While a sync is parked or a send is being appended, what arrives waits
///   in order behind it.
struct FastPathOrder {
    /// The room, event type and transaction id of a message send's path.
    struct SendPath: Equatable {
        var roomID: String
        var eventType: String
        var txnID: String
    }

    enum Action: Equatable {
        /// Hand this part to the router.
        case forward(HTTPServerRequestPart)
        /// Answer this `GET /sync` here.
        case sync(HTTPRequestHead)
        /// Append this message send here; a nil body was over the limit.
        case send(HTTPRequestHead, SendPath, ByteBuffer?)
    }

    /// What the connection is waiting on, set by the handler.
    enum Busy {
        case none
        case parked
        case appending
    }

    static let syncPaths = MatrixAPI.prefixes.map { $0 + "/sync" }
    static let roomsPaths = MatrixAPI.prefixes.map { $0 + "/rooms/" }

    let bodyBytesMax: Int
    /// Whether message sends may be appended here (the broker is in this process).
    let takesSends: Bool
    var busy = Busy.none
    /// Requests passed on whose response has not ended.
    private(set) var outstanding = 0
    /// A request is being passed on part by part.
    private var passing = false
    /// A sync whose head came and whose end has not.
    private var held: HTTPRequestHead?
    /// A message send whose head came and whose end has not, and its body
    /// so far (nil once over the limit).
    private var sending: (head: HTTPRequestHead, path: SendPath, body: ByteBuffer?)?
    /// Parts that came while the connection was busy.
    private var queued = CircularBuffer<HTTPServerRequestPart>()

    init(bodyBytesMax: Int, takesSends: Bool) {
        self.bodyBytesMax = bodyBytesMax
        self.takesSends = takesSends
    }

    /// Nothing is in flight on the connection: an interim answer written
    /// now cannot land inside another response.
    var isIdle: Bool { busy == .none && outstanding == 0 && !passing && held == nil && sending == nil && queued.isEmpty }

    /// A part read from the connection.
    mutating func receive(_ part: HTTPServerRequestPart) -> [Action] {
        if busy != .none || !queued.isEmpty {
            queued.append(part)
            return []
        }
        return take(part)
    }

    /// The next part that waited, once the connection is no longer busy.
    mutating func nextQueued() -> HTTPServerRequestPart? {
        guard busy == .none, !queued.isEmpty else { return nil }
        return queued.removeFirst()
    }

    /// A response's end went out through the handler.
    mutating func responseEnded() {
        outstanding -= 1
    }

    /// The handler gave a request it had taken to the router after all.
    mutating func passedOn() {
        outstanding += 1
    }

    mutating func take(_ part: HTTPServerRequestPart) -> [Action] {
        switch part {
        case .head(let head):
            let free = outstanding == 0 && !passing
            if free && Self.isPlainSync(head) {
                held = head
                return []
            }
            if free && takesSends, let path = Self.sendPath(head) {
                sending = (head, path, ByteBufferAllocator().buffer(capacity: 256))
                return []
            }
            outstanding += 1
            passing = true
            return [.forward(part)]
        case .body(let bytes):
            if sending != nil {
                if let count = sending!.body?.readableBytes, count + bytes.readableBytes > bodyBytesMax {
                    sending!.body = nil
                } else {
                    sending!.body?.writeImmutableBuffer(bytes)
                }
                return []
            }
            // A sync has no body; one that brings one goes to the router.
            if let head = held {
                held = nil
                outstanding += 1
                passing = true
                return [.forward(.head(head)), .forward(part)]
            }
            return [.forward(part)]
        case .end:
            if let send = sending {
                sending = nil
                return [.send(send.head, send.path, send.body)]
            }
            if let head = held {
                held = nil
                return [.sync(head)]
            }
            passing = false
            return [.forward(part)]
        }
    }

    /// A keep-alive HTTP/1.1 `GET /sync` without a body.
    static func isPlainSync(_ head: HTTPRequestHead) -> Bool {
        guard head.method == .GET, head.version == .http1_1, let syncPath = syncPaths.first(where: { head.uri.hasPrefix($0) }) else { return false }
        let rest = head.uri.utf8.dropFirst(syncPath.utf8.count)
        guard rest.isEmpty || rest.first == UInt8(ascii: "?") else { return false }
        if head.headers.contains(name: "transfer-encoding") { return false }
        if let length = head.headers.first(name: "content-length"), length != "0" { return false }
        return !head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "close" }
    }

    /// A keep-alive HTTP/1.1 `PUT /rooms/{roomId}/send/{eventType}/{txnId}`
    /// with every part present (anything else is the router's).
    static func sendPath(_ head: HTTPRequestHead) -> SendPath? {
        guard head.method == .PUT, head.version == .http1_1, let roomsPath = roomsPaths.first(where: { head.uri.hasPrefix($0) }) else { return nil }
        if head.headers.contains(name: "expect") { return nil }
        if head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "close" }) { return nil }
        let path = head.uri.utf8.split(separator: UInt8(ascii: "?"), maxSplits: 1, omittingEmptySubsequences: false)[0]
        let parts = path.dropFirst(roomsPath.utf8.count).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard parts.count == 4, parts[1].elementsEqual("send".utf8), parts.allSatisfy({ !$0.isEmpty }) else { return nil }
        func parameter(_ part: Substring.UTF8View) -> String { MatrixAPI.pathParameter(String(Substring(part))) }
        return SendPath(roomID: parameter(parts[0]), eventType: parameter(parts[2]), txnID: parameter(parts[3]))
    }
}
