import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOSSL
import Synchronization

/// etcd v3 through its JSON gateway (grpc-gateway: POST /v3/..., keys and
/// values base64, 64-bit integers as strings), over AsyncHTTPClient. ADR
/// 0009 says why the gateway rather than gRPC.
///
/// How the client reaches a secured etcd: TLS (its CA, and a client
/// certificate when etcd runs with --client-cert-auth) and etcd's own user
/// authentication.
public struct EtcdSecurity: Sendable {
    public var tls: TLSConfiguration?
    /// Builds `tls` again from its files, for `EtcdClient.reloadTLS`
    /// (SIGHUP); nil when there is nothing to read again.
    public var reloadTLS: (@Sendable () throws -> TLSConfiguration)?
    public var user: String?
    public var password: String?

    public init(tls: TLSConfiguration? = nil, reloadTLS: (@Sendable () throws -> TLSConfiguration)? = nil, user: String? = nil, password: String? = nil) {
        self.tls = tls
        self.reloadTLS = reloadTLS
        self.user = user
        self.password = password
    }
}

/// Several endpoints may be given (an etcd cluster's members): a call goes
/// to the member that answered last, and a transport failure moves on to
/// the next, which then stays the first choice, so a dead or stopped member
/// costs one timeout rather than one per call. Watches start on that member
/// too, ask etcd to end them when it loses its leader (an isolated member
/// would otherwise keep a watch open that never sees a change), and move
/// on when they break.
public final class EtcdClient: Coordination {
    public let endpoints: [String]
    private struct Clients {
        var call: HTTPClient
        var watch: HTTPClient
        /// Replaced by a TLS reload, kept: a watch lasts on its connection
        /// until it breaks, and an HTTPClient must outlive its requests.
        var retired: [HTTPClient] = []
    }

    private let clients: Mutex<Clients>
    /// The client calls go through.
    var client: HTTPClient { clients.withLock { $0.call } }
    /// The client new watches go through.
    var watchClient: HTTPClient { clients.withLock { $0.watch } }
    let timeout: TimeAmount
    public let security: EtcdSecurity
    /// etcd's auth token while `security` names a user; renewed when etcd
    /// says it is no longer valid.
    private let token = Mutex<String?>(nil)
    /// The member calls and watches go to first.
    private let preferred = Mutex(0)
    /// Lease renewals wait this long for a member: a renewal every third of
    /// a 2-second lease cannot wait out the 5-second timeout on a stopped one.
    static let keepAliveTimeout: TimeAmount = .milliseconds(600)

    public init(endpoints: [String], timeout: TimeAmount = .seconds(5), security: EtcdSecurity = EtcdSecurity(), client: HTTPClient = .shared) {
        precondition(!endpoints.isEmpty, "etcd needs at least one endpoint")
        self.endpoints = endpoints.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
        self.timeout = timeout
        self.security = security
        if let tls = security.tls {
            clients = Mutex(Self.clients(tls))
        } else {
            clients = Mutex(Clients(call: client, watch: Self.watching))
        }
    }

    /// Clients of their own for etcd's TLS; they live as long as the
    /// process, like the shared one.
    private static func clients(_ tls: TLSConfiguration) -> Clients {
        Clients(call: HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: HTTPClient.Configuration(tlsConfiguration: tls)),
                watch: HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup,
                                  configuration: HTTPClient.Configuration(tlsConfiguration: tls, timeout: .init(connect: .seconds(5), read: nil))))
    }

    /// Reads the TLS files again (a rotated client certificate, a new CA):
    /// calls and watches from now on go over connections made with them;
    /// what is open stays open (a watch moves over when it next breaks).
    /// False when the client has no TLS files; throws, keeping the old
    /// ones, when the new files do not load.
    public func reloadTLS() throws -> Bool {
        guard let reload = security.reloadTLS else { return false }
        let fresh = Self.clients(try reload())
        clients.withLock { clients in
            clients.retired += [clients.call, clients.watch]
            clients.call = fresh.call
            clients.watch = fresh.watch
        }
        return true
    }

    /// Signs in with etcd's user authentication and returns the token.
    private func authToken() async throws -> String? {
        guard let user = security.user else { return nil }
        if let known = token.withLock({ $0 }) { return known }
        let answer = try await call("/v3/auth/authenticate", ["name": user, "password": security.password ?? ""], authenticated: false)
        guard let fresh = answer["token"] as? String else { throw CoordinationError.refused("etcd gave no token to \(user)") }
        token.withLock { $0 = fresh }
        return fresh
    }

    /// The client watches use: no read timeout. A watch on a quiet prefix
    /// (the brokers of a stable cluster) receives nothing for as long as
    /// nothing changes; `HTTPClient.shared` gives up after 90 s without a
    /// byte, which ended the controller's watch, and with it the broker,
    /// 90 s after the last registration. Lives as long as the process, so
    /// it is never shut down.
    static let watching = HTTPClient(
        eventLoopGroup: HTTPClient.defaultEventLoopGroup,
        configuration: HTTPClient.Configuration(timeout: .init(connect: .seconds(5), read: nil)))

    // MARK: Calls

    /// POSTs `body` to `path` on the first endpoint that answers; returns
    /// the decoded JSON object. With etcd's user authentication, a token
    /// etcd no longer takes is renewed once.
    func call(_ path: String, _ body: [String: Any], authenticated: Bool = true, timeout: TimeAmount? = nil,
              accept: ([String: Any]) -> Bool = { _ in true }) async throws -> [String: Any] {
        guard authenticated, security.user != nil else { return try await send(path, body, token: nil, timeout: timeout, accept: accept) }
        do {
            return try await send(path, body, token: try await authToken(), timeout: timeout, accept: accept)
        } catch CoordinationError.refused(let message) where message.contains("invalid auth token") || message.contains("auth token") {
            token.withLock { $0 = nil }
            return try await send(path, body, token: try await authToken(), timeout: timeout, accept: accept)
        }
    }

    /// The endpoints in the order to try: the preferred member first.
    private var ordered: [(index: Int, endpoint: String)] {
        let first = preferred.withLock { $0 }
        return (0..<endpoints.count).map { ((first + $0) % endpoints.count, endpoints[(first + $0) % endpoints.count]) }
    }

    /// `accept`: whether an answer settles the call; one it does not
    /// (a stale member's word) is passed over for the next member's, and
    /// returned only when no member gives a better one.
    private func send(_ path: String, _ body: [String: Any], token: String?, timeout: TimeAmount? = nil,
                      accept: ([String: Any]) -> Bool = { _ in true }) async throws -> [String: Any] {
        let payload = try JSONSerialization.data(withJSONObject: body)
        var failures: [String] = []
        var passedOver: [String: Any]? = nil
        for (index, endpoint) in ordered {
            var request = HTTPClientRequest(url: endpoint + path)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            if let token { request.headers.add(name: "Authorization", value: token) }
            request.body = .bytes(ByteBuffer(data: payload))
            let response: HTTPClientResponse
            let bytes: ByteBuffer
            do {
                response = try await client.execute(request, timeout: timeout ?? self.timeout)
                bytes = try await response.body.collect(upTo: 64 << 20)
            } catch {
                failures.append("\(endpoint): \(error)")
                continue
            }
            let object = (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any] ?? [:]
            guard response.status == .ok else {
                let message = object["message"] as? String ?? object["error"] as? String ?? String(buffer: bytes)
                throw CoordinationError.refused("\(path): HTTP \(response.status.code) \(message)")
            }
            guard accept(object) else {
                passedOver = passedOver ?? object
                continue
            }
            if endpoints.count > 1 { preferred.withLock { $0 = index } }
            return object
        }
        if let passedOver { return passedOver }
        throw CoordinationError.unavailable(failures.joined(separator: "; "))
    }

    static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }
    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    static func int64(_ value: Any?) -> Int64 {
        switch value {
        case let text as String: Int64(text) ?? 0
        case let number as NSNumber: number.int64Value
        default: 0
        }
    }

    static func revision(of object: [String: Any]) -> Int64 {
        int64((object["header"] as? [String: Any])?["revision"])
    }

    static func keyValue(_ object: [String: Any]) -> KeyValue {
        let key = (object["key"] as? String).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let value = (object["value"] as? String).flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) } ?? []
        return KeyValue(key: key, value: value, modRevision: int64(object["mod_revision"]),
                        createRevision: int64(object["create_revision"]), lease: int64(object["lease"]))
    }

    // MARK: Coordination

    public func get(_ key: String) async throws -> KeyValue? {
        let answer = try await call("/v3/kv/range", ["key": Self.base64(key)])
        return (answer["kvs"] as? [[String: Any]])?.first.map(Self.keyValue)
    }

    public func list(prefix: String) async throws -> (keyValues: [KeyValue], revision: Int64) {
        let answer = try await call("/v3/kv/range", ["key": Self.base64(prefix), "range_end": Self.base64(prefixEnd(prefix))])
        let keyValues = (answer["kvs"] as? [[String: Any]] ?? []).map(Self.keyValue)
        return (keyValues, Self.revision(of: answer))
    }

    public func put(_ key: String, _ value: [UInt8], lease: Int64) async throws -> Int64 {
        var body: [String: Any] = ["key": Self.base64(key), "value": Self.base64(value)]
        if lease != 0 { body["lease"] = String(lease) }
        do {
            return Self.revision(of: try await call("/v3/kv/put", body))
        } catch CoordinationError.refused(let message) where message.contains("lease not found") {
            throw CoordinationError.leaseNotFound(lease)
        }
    }

    public func compareAndSwap(_ key: String, expected: Int64, value: [UInt8], lease: Int64) async throws -> Int64? {
        var put: [String: Any] = ["key": Self.base64(key), "value": Self.base64(value)]
        if lease != 0 { put["lease"] = String(lease) }
        let body: [String: Any] = [
            "compare": [["key": Self.base64(key), "target": "MOD", "result": "EQUAL", "mod_revision": String(expected)]],
            "success": [["request_put": put]],
        ]
        do {
            let answer = try await call("/v3/kv/txn", body)
            return answer["succeeded"] as? Bool == true ? Self.revision(of: answer) : nil
        } catch CoordinationError.refused(let message) where message.contains("lease not found") {
            throw CoordinationError.leaseNotFound(lease)
        }
    }

    public func compareAndSwapAll(_ writes: [CompareAndSwap]) async throws -> Int64? {
        let body: [String: Any] = [
            "compare": writes.map { ["key": Self.base64($0.key), "target": "MOD", "result": "EQUAL", "mod_revision": String($0.expected)] },
            "success": writes.map { ["request_put": ["key": Self.base64($0.key), "value": Self.base64($0.value)]] },
        ]
        let answer = try await call("/v3/kv/txn", body)
        return answer["succeeded"] as? Bool == true ? Self.revision(of: answer) : nil
    }

    public func compareAndDelete(_ key: String, expected: Int64) async throws -> Bool {
        let body: [String: Any] = [
            "compare": [["key": Self.base64(key), "target": "MOD", "result": "EQUAL", "mod_revision": String(expected)]],
            "success": [["request_delete_range": ["key": Self.base64(key)]]],
        ]
        return try await call("/v3/kv/txn", body)["succeeded"] as? Bool == true
    }

    public func grantLease(ttlSeconds: Int64) async throws -> Int64 {
        let answer = try await call("/v3/lease/grant", ["TTL": String(ttlSeconds)])
        let id = Self.int64(answer["ID"])
        guard id != 0 else { throw CoordinationError.refused("lease grant answered without an ID: \(answer)") }
        return id
    }

    public func keepAlive(lease: Int64) async throws {
        // A streaming call on the gateway: one request, one result line.
        // A leader that was paused answers "expired" for leases the new
        // leader extended (its own clock ran on): another member's word is
        // asked before a lease counts as gone.
        let answer = try await call("/v3/lease/keepalive", ["ID": String(lease)], timeout: Self.keepAliveTimeout) { answer in
            Self.int64((answer["result"] as? [String: Any] ?? answer)["TTL"]) > 0
        }
        let result = answer["result"] as? [String: Any] ?? answer
        // An expired or unknown lease comes back with no TTL (zero).
        guard Self.int64(result["TTL"]) > 0 else { throw CoordinationError.leaseNotFound(lease) }
    }

    public func revokeLease(_ lease: Int64) async throws {
        do {
            _ = try await call("/v3/lease/revoke", ["ID": String(lease)])
        } catch CoordinationError.refused(let message) where message.contains("lease not found") {
            throw CoordinationError.leaseNotFound(lease)
        }
    }

    public func watch(prefix: String, fromRevision: Int64) -> AsyncThrowingStream<WatchEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: WatchEvent.self, throwing: (any Error).self)
        let (index, endpoint) = ordered[0]
        let task = Task { [watchClient] in
            let client = watchClient
            let token = try? await self.authToken()
            let body: [String: Any] = ["create_request": [
                "key": Self.base64(prefix), "range_end": Self.base64(prefixEnd(prefix)), "start_revision": String(fromRevision),
            ]]
            do {
                let payload = try JSONSerialization.data(withJSONObject: body)
                var request = HTTPClientRequest(url: endpoint + "/v3/watch")
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                // etcd's require-leader (the gateway passes it as gRPC
                // metadata): the watch ends when its member loses the leader.
                request.headers.add(name: "Grpc-Metadata-hasleader", value: "true")
                if let token { request.headers.add(name: "Authorization", value: token) }
                request.body = .bytes(ByteBuffer(data: payload))
                // No deadline: a watch lasts until it is cancelled.
                let response = try await client.execute(request, deadline: .distantFuture)
                guard response.status == .ok else {
                    throw CoordinationError.refused("watch: HTTP \(response.status.code)")
                }
                var pending = Data()
                for try await chunk in response.body {
                    pending.append(Data(buffer: chunk))
                    // The gateway sends one JSON object per line.
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        let line = pending[pending.startIndex..<newline]
                        pending = Data(pending[pending.index(after: newline)...])
                        guard !line.isEmpty, let object = try JSONSerialization.jsonObject(with: line) as? [String: Any] else { continue }
                        if let error = object["error"] as? [String: Any] {
                            throw CoordinationError.refused("watch: \(error["message"] ?? error)")
                        }
                        let result = object["result"] as? [String: Any] ?? [:]
                        let compacted = Self.int64(result["compact_revision"])
                        if compacted > 0 { throw CoordinationError.compacted(compacted) }
                        if result["canceled"] as? Bool == true { throw CoordinationError.refused("watch canceled: \(result["cancel_reason"] ?? "")") }
                        for event in result["events"] as? [[String: Any]] ?? [] {
                            let kind: WatchEvent.Kind = (event["type"] as? String) == "DELETE" ? .delete : .put
                            let keyValue = Self.keyValue(event["kv"] as? [String: Any] ?? [:])
                            continuation.yield(WatchEvent(kind: kind, keyValue: keyValue))
                        }
                    }
                }
                continuation.finish(throwing: CoordinationError.unavailable("the watch stream ended"))
            } catch {
                // The next watch starts on the next member, unless a call
                // has found a good one meanwhile.
                if !(error is CancellationError), self.endpoints.count > 1 {
                    self.preferred.withLock { if $0 == index { $0 = (index + 1) % self.endpoints.count } }
                }
                continuation.finish(throwing: error is CancellationError ? nil : error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
