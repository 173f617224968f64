import Foundation
import Hummingbird
import HummingbirdCore
import KafkaWire
import Logging
import Metrics
import NIOCore

// register, login, logout: accounts and the sessions of their devices.
// Passwords cannot be guessed at speed: failed logins are limited per user
// name and per client address, registrations per address
// (`configuration.registrationsPerMinute`); beyond a limit the answer is
// 429 M_LIMIT_EXCEEDED with retry_after_ms.
extension MatrixAPI {
    /// Throws M_LIMIT_EXCEEDED while `user` or the context's address has
    /// used up its failed logins of the minute.
    func checkLoginLimit(user: String, _ context: GatewayRequestContext) throws {
        let now = clock.now.milliseconds
        let waits = [state.loginsByUser.withLock { $0.wait(for: user, now: now) }, state.loginsByAddress.withLock { $0.wait(for: context.clientAddress, now: now) }]
        if let wait = waits.compactMap({ $0 }).max() { throw refusedAttempt(user: user, context, wait: wait) }
    }

    func recordFailedLogin(user: String, _ context: GatewayRequestContext) {
        let now = clock.now.milliseconds
        state.loginsByUser.withLock { $0.record(user, now: now) }
        state.loginsByAddress.withLock { $0.record(context.clientAddress, now: now) }
    }

    /// Counts a registration from the context's address; throws
    /// M_LIMIT_EXCEEDED past the minute's limit.
    func limitRegistration(_ context: GatewayRequestContext) throws {
        guard configuration.registrationsPerMinute > 0 else { return }
        let now = clock.now.milliseconds
        let wait = state.registrationsByAddress.withLock { limiter -> Int64? in
            if let wait = limiter.wait(for: context.clientAddress, now: now) { return wait }
            limiter.record(context.clientAddress, now: now)
            return nil
        }
        if let wait { throw refusedAttempt(user: "(registration)", context, wait: wait) }
    }

    private func refusedAttempt(user: String, _ context: GatewayRequestContext, wait: Int64) -> MatrixError {
        logger.warning("login or registration refused: too many attempts", metadata: ["user": "\(user)", "client": "\(context.clientAddress)", "retryAfterMs": "\(wait)"])
        return MatrixError.limitExceeded(retryAfterMilliseconds: wait)
    }

    func register(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        guard configuration.openRegistration else {
            throw MatrixError(.forbidden, "M_FORBIDDEN", "registration is closed: ask an administrator for an account")
        }
        let body = try await body(RegisterRequest.self, request)
        try limitRegistration(context)
        guard let username = body.username, let password = body.password else {
            throw MatrixError(.badRequest, "M_MISSING_PARAM", "username and password are required")
        }
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789._=-/")
        guard !username.isEmpty, username.count <= 64, username.allSatisfy({ allowed.contains($0) }) else {
            throw MatrixError(.badRequest, "M_INVALID_USERNAME", "a username is 1 to 64 of a-z, 0-9, . _ = - /")
        }
        guard !password.isEmpty, password.utf8.count <= 1024 else {
            throw MatrixError(.badRequest, "M_WEAK_PASSWORD", "a password is 1 to 1024 bytes")
        }
        let user = userID(localpart: username)
        guard state.credentials.account(user) == nil else { throw MatrixError(.badRequest, "M_USER_IN_USE", "\(user) is taken") }
        let hash = Secrets.hashPassword(password, n: 1 << UInt64(min(max(configuration.passwordHashLogN, 10), 20)))
        let record = AccountRecord(passwordHash: hash, createdMs: Self.now)
        // Under a key of its own: compaction keeps every registration, so
        // the first one still wins after it.
        let (partition, offset) = try await link.produce(topic: ChatTopics.accounts, key: AccountRecord.registrationKey(user), value: MatrixJSON.encodeBytes(record),
                                                         timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.accounts, partition: partition, offset: offset)
        // Two gateways may register one name at once: the first record wins.
        guard state.credentials.account(user)?.offset == offset else { throw MatrixError(.badRequest, "M_USER_IN_USE", "\(user) is taken") }
        return try await newSession(user: user, deviceID: body.deviceID)
    }

    func login(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let body = try await body(LoginRequest.self, request)
        guard body.type == "m.login.password" else {
            throw MatrixError(.badRequest, "M_UNKNOWN", "only m.login.password is supported")
        }
        guard let name = body.identifier?.user ?? body.user, let password = body.password else {
            throw MatrixError(.badRequest, "M_MISSING_PARAM", "identifier.user and password are required")
        }
        let user = userID(from: name)
        try checkLoginLimit(user: user, context)
        guard let hash = state.credentials.account(user)?.hash, Secrets.verifyPassword(password, against: hash) else {
            recordFailedLogin(user: user, context)
            throw MatrixError(.forbidden, "M_FORBIDDEN", "invalid username or password")
        }
        return try await newSession(user: user, deviceID: body.deviceID)
    }

    func newSession(user: String, deviceID: String?) async throws -> Response {
        let device = deviceID.flatMap { $0.isEmpty ? nil : $0 } ?? Secrets.opaque(10)
        let token = Secrets.newToken()
        let record = SessionRecord(userID: user, deviceID: device, createdMs: Self.now)
        let (partition, offset) = try await link.produce(topic: ChatTopics.sessions, key: Array(Secrets.tokenDigest(token).utf8), value: MatrixJSON.encodeBytes(record), timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.sessions, partition: partition, offset: offset)
        return Self.ok(LoginAnswer(userID: user, deviceID: device, accessToken: token, homeServer: server))
    }

    func logout(_ request: Request) async throws -> Response {
        _ = try authenticate(request)
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else { return Self.ok("{}") }
        let digest = Secrets.tokenDigest(String(header.dropFirst("Bearer ".count)))
        let (partition, offset) = try await link.produce(topic: ChatTopics.sessions, key: Array(digest.utf8), value: nil, timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.sessions, partition: partition, offset: offset)
        return Self.ok("{}")
    }

    static var now: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}
