import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Synchronization

/// The chat workload over the Matrix client-server API, so the very same
/// load runs against Postduif's gateway and any Matrix homeserver (Synapse):
/// rooms of `members` users, every member long-polling `/sync`, one sender
/// per room. It measures sends/s, deliveries/s, send latency and
/// send-to-delivery latency (from the intended send time), and, for the
/// server processes named, CPU per delivered copy and memory.
public struct MatrixChatSettings: Sendable {
    public var baseURL = "http://127.0.0.1:8008"
    public var rooms = 1
    public var members = 10
    /// Messages per second over all rooms; nil: closed loop (each room's
    /// sender sends its next message once the last is acknowledged).
    public var rate: Double? = nil
    public var seconds = 10.0
    /// Server processes whose CPU time and memory are measured.
    public var serverPIDs: [Int32] = []
    /// User names start with this, so runs on one server do not collide.
    public var prefix = "bench" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
    public var setupConcurrency = 16
    /// The `timeout` of each long poll, as Matrix clients send it (nio and
    /// Element use 30 s): shorter polls make idle members cost the server.
    public var syncTimeoutMilliseconds = 30_000
    /// The server name in user ids (`@name:server`).
    public var serverName = "localhost"
    /// Encrypted rooms, as Element makes them: every member's device uploads
    /// its keys; the rooms are created with `m.room.encryption`; each sender
    /// queries its room's devices, claims a one-time key of each and shares
    /// its megolm session with them in olm to-device messages before its
    /// first message in the window and again every `rotationMessages`; its
    /// messages are `m.room.encrypted` events (EncryptedChat).
    public var encrypted = false
    /// Messages per megolm session (Element's `rotation_period_msgs` default).
    public var rotationMessages = 100

    public init() {}
}

public struct MatrixChatResult: Codable, Sendable {
    public var target: String
    public var rooms: Int
    public var members: Int
    public var seconds: Double
    public var offeredRate: Double?
    public var sent: Int
    public var sendErrors: Int
    public var sendsPerSecond: Double
    public var deliveries: Int
    public var expectedDeliveries: Int
    public var deliveriesPerSecond: Double
    public var sendLatencyMilliseconds: [String: Double]
    public var deliveryLatencyMilliseconds: [String: Double]
    public var serverCPUSeconds: Double
    public var cpuMicrosecondsPerDelivery: Double?
    public var deliveriesPerCPUSecond: Double?
    public var serverMemoryMaxMB: Double
    /// Encrypted rooms: the senders' key shares (new megolm sessions) and
    /// the olm to-device messages they sent, in the window.
    public var encrypted: Bool? = nil
    public var keyShares: Int? = nil
    public var toDeviceMessages: Int? = nil
    /// The olm to-device messages the members' syncs received.
    public var toDeviceDelivered: Int? = nil
}

public struct MatrixError: Error, CustomStringConvertible {
    public var description: String
}

/// One run of the Matrix chat workload.
public final class MatrixChatBench: Sendable {
    let settings: MatrixChatSettings
    let client: HTTPClient

    public init(settings: MatrixChatSettings) {
        self.settings = settings
        var configuration = HTTPClient.Configuration()
        // Every member holds a long poll open: one connection each, plus the senders'.
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = settings.rooms * settings.members + settings.rooms + 64
        configuration.timeout.connect = .seconds(10)
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    func call(_ method: HTTPMethod, _ path: String, token: String? = nil, body: [String: Any]? = nil, timeout: TimeAmount = .seconds(60)) async throws -> (Int, [String: Any]) {
        var request = HTTPClientRequest(url: settings.baseURL + "/_matrix/client/v3" + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer " + token) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: try JSONSerialization.data(withJSONObject: body)))
        }
        let response = try await client.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 256 << 20)
        let object = (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any] ?? [:]
        return (Int(response.status.code), object)
    }

    /// Setup (accounts, rooms, joins), then the measured window.
    public func run(progress: @escaping @Sendable (String) -> Void = { _ in }) async throws -> MatrixChatResult {
        do {
            let result = try await measure(progress: progress)
            try await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    func measure(progress: @escaping @Sendable (String) -> Void) async throws -> MatrixChatResult {
        let settings = self.settings
        // Accounts.
        let names = (0..<settings.rooms).map { room in (0..<settings.members).map { "\(settings.prefix)r\(room)m\($0)" } }
        progress("registering \(settings.rooms * settings.members) users")
        let tokens = Shared<[String: String]>([:])
        let registered = Shared<[String: EncryptedChat.Device]>([:])
        try await forEach(names.flatMap { $0 }, concurrency: settings.setupConcurrency) { name in
            let (status, body) = try await self.call(.POST, "/register", body: ["username": name, "password": "bench-" + name, "auth": ["type": "m.login.dummy"]])
            guard status == 200, let token = body["access_token"] as? String, let device = body["device_id"] as? String else {
                throw MatrixError(description: "register \(name): \(status) \(body)")
            }
            tokens.withLock { $0[name] = token }
            registered.withLock { $0[name] = EncryptedChat.Device(user: "@\(name):\(settings.serverName)", id: device) }
        }
        let token = tokens.withLock { $0 }
        let devices = registered.withLock { $0 }
        if settings.encrypted {
            // What a client does after its first login: its device keys and
            // a supply of one-time keys (libolm clients keep 50 uploaded).
            progress("uploading every device's keys")
            try await forEach(names.flatMap { $0 }, concurrency: settings.setupConcurrency) { name in
                let (status, body) = try await self.call(.POST, "/keys/upload", token: token[name], body: devices[name]!.keysUpload(oneTimeKeys: 50))
                guard status == 200 else { throw MatrixError(description: "keys/upload \(name): \(status) \(body)") }
            }
        }
        // Rooms: the first member creates, invites and sends.
        progress("creating \(settings.rooms) rooms of \(settings.members)")
        var made: [String] = []
        for room in 0..<settings.rooms {
            let owner = names[room][0]
            var create: [String: Any] = ["name": "bench \(room)", "preset": "private_chat"]
            if settings.encrypted {
                create["initial_state"] = [["type": "m.room.encryption", "state_key": "", "content": ["algorithm": EncryptedChat.megolm]]]
            }
            let (status, body) = try await call(.POST, "/createRoom", token: token[owner], body: create, timeout: .seconds(600))
            guard status == 200, let id = body["room_id"] as? String else { throw MatrixError(description: "createRoom: \(status) \(body)") }
            made.append(id)
            let invitees = names[room].dropFirst()
            try await forEach(Array(invitees), concurrency: settings.setupConcurrency) { name in
                let (status, body) = try await self.call(.POST, "/rooms/\(id)/invite", token: token[owner], body: ["user_id": "@\(name):\(settings.serverName)"])
                guard status == 200 else { throw MatrixError(description: "invite: \(status) \(body)") }
            }
            try await forEach(Array(invitees), concurrency: settings.setupConcurrency) { name in
                let (status, body) = try await self.call(.POST, "/join/\(id)", token: token[name], body: [:])
                guard status == 200 else { throw MatrixError(description: "join: \(status) \(body)") }
            }
        }
        // Every member syncs once (a first sync), then long-polls.
        progress("first sync of every member")
        let sinceTokens = Shared<[String: String]>([:])
        try await forEach(names.flatMap { $0 }, concurrency: settings.setupConcurrency) { name in
            let (status, body) = try await self.call(.GET, "/sync?timeout=0", token: token[name], timeout: .seconds(120))
            guard status == 200, let next = body["next_batch"] as? String else { throw MatrixError(description: "sync: \(status)") }
            sinceTokens.withLock { $0[name] = next }
        }
        let since = sinceTokens.withLock { $0 }
        var cpuBefore = 0.0

        let sends = Recorder()
        let deliveries = Recorder()
        let stop = Shared(false)
        let sessions = names.reduce(0) { $0 + $1.count }
        // The window opens once every member's long poll is in place: a
        // warm-up message per room, not counted, has reached every member.
        // A fixed warm-up (a millisecond per session) left a fifth of a
        // 1,000-member room still connecting when the first message went,
        // and their copies set the run's p99.
        let window = Shared<Range<UInt64>>(UInt64.max..<UInt64.max)
        let warmedUp = Shared(0)
        let sentIDs = Shared(0)
        let keyShares = Shared((shares: 0, messages: 0))
        let encrypted = settings.encrypted
        @Sendable func message(body: String, room: String, from device: EncryptedChat.Device, session: EncryptedChat.OutboundSession) -> (String, [String: Any]) {
            guard encrypted else { return ("m.room.message", ["msgtype": "m.text", "body": body]) }
            return ("m.room.encrypted", EncryptedChat.roomEvent(body: body, room: room, from: device, session: session))
        }
        let memoryMax = Shared(0.0)
        let roomIDs = made

        try await withThrowingTaskGroup(of: Void.self) { group in
            for (room, members) in names.enumerated() {
                for name in members {
                    group.addTask {
                        try await self.follow(token: token[name]!, since: since[name]!, room: roomIDs[room], recorder: deliveries,
                                              window: window, warmedUp: warmedUp, stop: stop)
                    }
                }
            }
            progress("warming up: a message to every member")
            for room in 0..<settings.rooms {
                let (type, content) = message(body: "warm-up \(room)", room: roomIDs[room], from: devices[names[room][0]]!, session: EncryptedChat.OutboundSession())
                let (status, body) = try await call(.PUT, "/rooms/\(roomIDs[room])/send/\(type)/warm-up-\(room)", token: token[names[room][0]],
                                                    body: content, timeout: .seconds(120))
                guard status == 200 else { throw MatrixError(description: "warm-up send: \(status) \(body)") }
            }
            let warmUpDeadline = ContinuousClock.now + .seconds(120)
            while warmedUp.withLock({ $0 }) < sessions {
                guard ContinuousClock.now < warmUpDeadline else {
                    stop.withLock { $0 = true }
                    throw MatrixError(description: "\(warmedUp.withLock { $0 }) of \(sessions) members received the warm-up message within 120 s")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            // Each member has its answer; let their next long polls arrive.
            try await Task.sleep(for: .milliseconds(max(200, sessions / 5)))
            let measureStart = monotonicNanoseconds()
            let measureEnd = measureStart + UInt64(settings.seconds * 1e9)
            window.withLock { $0 = measureStart..<measureEnd }
            cpuBefore = Self.cpuSeconds(settings.serverPIDs)
            progress("measuring for \(settings.seconds) s")
            // Memory, sampled each half second.
            group.addTask {
                while !stop.withLock({ $0 }) {
                    let rss = Self.residentMB(settings.serverPIDs)
                    memoryMax.withLock { $0 = max($0, rss) }
                    try await Task.sleep(for: .milliseconds(500))
                }
            }
            // Senders: one per room, paced when a rate is given.
            let interval = settings.rate.map { Double(settings.rooms) / $0 }
            for room in 0..<settings.rooms {
                group.addTask {
                    let owner = token[names[room][0]]!
                    let device = devices[names[room][0]]!
                    var session: EncryptedChat.OutboundSession?
                    var recipients: [EncryptedChat.Recipient]?
                    var next = measureStart + UInt64(Double(room) / Double(settings.rooms) * (interval ?? 0) * 1e9)
                    var sequence = 0
                    while true {
                        let now = monotonicNanoseconds()
                        if now >= measureEnd { break }
                        if interval != nil {
                            // A message due at the window's end is not in it:
                            // it would count as sent and never as delivered.
                            if next >= measureEnd { break }
                            if now < next { try await Task.sleep(for: .nanoseconds(Int64(next - now))) }
                        } else if now < measureStart {
                            try await Task.sleep(for: .nanoseconds(Int64(measureStart - now)))
                        }
                        // Closed loop: the time just checked against the window's
                        // end (read anew, it could fall past the end, and the message
                        // count as sent and never as delivered), or the time the
                        // window opened for the first message.
                        let intended = interval != nil ? next : now < measureStart ? monotonicNanoseconds() : now
                        let id = sentIDs.withLock { value -> Int in
                            value += 1
                            return value
                        }
                        sequence += 1
                        if settings.encrypted, session.map({ $0.sent >= settings.rotationMessages }) ?? true {
                            // A new megolm session, shared with every other member's device first.
                            if recipients == nil {
                                recipients = try await self.recipients(of: Array(names[room].dropFirst()), token: owner)
                            }
                            let fresh = EncryptedChat.OutboundSession()
                            let share = EncryptedChat.roomKeyShare(room: roomIDs[room], session: fresh, from: device, to: recipients!)
                            let (status, body) = try await self.call(.PUT, "/sendToDevice/m.room.encrypted/k\(room)-\(sequence)", token: owner, body: share)
                            guard status == 200 else { throw MatrixError(description: "sendToDevice: \(status) \(body)") }
                            keyShares.withLock {
                                $0.shares += 1
                                $0.messages += recipients!.count
                            }
                            session = fresh
                        }
                        session?.sent += 1
                        let (type, content) = message(body: "bench \(id) \(intended)", room: roomIDs[room], from: device, session: session ?? EncryptedChat.OutboundSession())
                        let (status, _) = try await self.call(.PUT, "/rooms/\(roomIDs[room])/send/\(type)/b\(room)-\(sequence)", token: owner, body: content)
                        let done = monotonicNanoseconds()
                        if status == 200 {
                            sends.count(.acknowledged, 1, at: done)
                            sends.recordLatencies(from: [intended], to: done)
                        } else {
                            sends.count(.errors, 1, at: done)
                        }
                        if let interval { next += UInt64(interval * 1e9) }
                    }
                }
            }
            // The senders end at the window's end; give deliveries a moment,
            // then end the long polls still waiting.
            try await Task.sleep(for: .nanoseconds(Int64(measureEnd - min(measureEnd, monotonicNanoseconds())) + 2_000_000_000))
            stop.withLock { $0 = true }
            group.cancelAll()
            while true {
                do {
                    guard try await group.next() != nil else { break }
                } catch where stop.withLock({ $0 }) {
                    // A cancelled long poll: the run is over.
                }
            }
        }
        let cpuAfter = Self.cpuSeconds(settings.serverPIDs)
        let cpu = cpuAfter - cpuBefore
        let sent = sends.total(.acknowledged)
        let delivered = deliveries.total(.deliveries)
        func percentiles(_ recorder: Recorder) -> [String: Double] {
            var out: [String: Double] = [:]
            for (label, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("max", 100.0)] {
                out[label] = recorder.latencyMilliseconds(atPercentile: p) ?? 0
            }
            return out
        }
        return MatrixChatResult(
            target: settings.baseURL, rooms: settings.rooms, members: settings.members, seconds: settings.seconds, offeredRate: settings.rate,
            sent: sent, sendErrors: sends.total(.errors), sendsPerSecond: Double(sent) / settings.seconds,
            deliveries: delivered, expectedDeliveries: sent * settings.members, deliveriesPerSecond: Double(delivered) / settings.seconds,
            sendLatencyMilliseconds: percentiles(sends), deliveryLatencyMilliseconds: percentiles(deliveries),
            serverCPUSeconds: cpu, cpuMicrosecondsPerDelivery: delivered > 0 && !settings.serverPIDs.isEmpty ? cpu * 1e6 / Double(delivered) : nil,
            deliveriesPerCPUSecond: cpu > 0 ? Double(delivered) / cpu : nil, serverMemoryMaxMB: memoryMax.withLock { $0 },
            encrypted: settings.encrypted ? true : nil, keyShares: settings.encrypted ? keyShares.withLock { $0.shares } : nil,
            toDeviceMessages: settings.encrypted ? keyShares.withLock { $0.messages } : nil,
            toDeviceDelivered: settings.encrypted ? deliveries.total(.toDevice) : nil)
    }

    /// The devices of `users` with a one-time key claimed for each, as a
    /// client finds them before its first olm message to each: `keys/query`,
    /// then `keys/claim`.
    func recipients(of users: [String], token: String) async throws -> [EncryptedChat.Recipient] {
        let ids = users.map { "@\($0):\(settings.serverName)" }
        let (status, body) = try await call(.POST, "/keys/query", token: token, body: ["device_keys": Dictionary(uniqueKeysWithValues: ids.map { ($0, [String]()) })])
        guard status == 200, let found = body["device_keys"] as? [String: [String: [String: Any]]] else {
            throw MatrixError(description: "keys/query: \(status) \(body)")
        }
        var recipients: [EncryptedChat.Recipient] = []
        for user in ids {
            for (device, keys) in found[user] ?? [:] {
                guard let keys = keys["keys"] as? [String: String], let curve = keys["curve25519:\(device)"], let ed = keys["ed25519:\(device)"] else { continue }
                recipients.append(.init(user: user, device: device, curve25519: curve, ed25519: ed))
            }
        }
        guard recipients.count == ids.count else { throw MatrixError(description: "keys/query found \(recipients.count) devices of \(ids.count) users") }
        var claim: [String: [String: String]] = [:]
        for recipient in recipients { claim[recipient.user, default: [:]][recipient.device] = "signed_curve25519" }
        let (claimed, answer) = try await call(.POST, "/keys/claim", token: token, body: ["one_time_keys": claim])
        let keys = answer["one_time_keys"] as? [String: [String: Any]] ?? [:]
        let count = keys.values.reduce(0) { $0 + $1.count }
        guard claimed == 200, count == recipients.count else { throw MatrixError(description: "keys/claim: \(claimed), \(count) keys for \(recipients.count) devices") }
        return recipients
    }

    /// A member's long-poll loop: each bench message counts once, with its
    /// latency from the intended send time when sent inside the window.
    func follow(token: String, since start: String, room: String, recorder: Recorder, window: Shared<Range<UInt64>>, warmedUp: Shared<Int>,
                stop: Shared<Bool>) async throws {
        guard let url = URL(string: settings.baseURL), let host = url.host else { throw MatrixError(description: "bad URL \(settings.baseURL)") }
        let port = url.port ?? 80
        var since = start
        var seen = Set<Int>()
        var warm = false
        var connection: SyncConnection?
        defer { connection?.close() }
        while !stop.withLock({ $0 }) {
            let answer: (status: Int, body: ByteBuffer)
            do {
                if connection == nil { connection = try await SyncConnection.connect(host: host, port: port) }
                answer = try await connection!.get("/_matrix/client/v3/sync?timeout=\(settings.syncTimeoutMilliseconds)&since=\(since)", token: token)
            } catch {
                // A closed connection (the server's keep-alive ended, or the
                // run's end cancelled the poll): a new one, unless stopping.
                connection?.close()
                connection = nil
                if stop.withLock({ $0 }) || Task.isCancelled { return }
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            let now = monotonicNanoseconds()
            guard answer.status == 200 else {
                try await Task.sleep(for: .milliseconds(100))
                continue
            }
            let scan = answer.body.withUnsafeReadableBytes { SyncAnswerScan($0, lookForWarmUp: !warm, countOlm: settings.encrypted) }
            if let next = scan.nextBatch { since = next }
            if scan.olmMessages > 0 { recorder.count(.toDevice, scan.olmMessages, at: now) }
            if scan.warmUp && !warm {
                warm = true
                warmedUp.withLock { $0 += 1 }
            }
            let measured = window.withLock { $0 }
            var intended: [UInt64] = []
            for message in scan.messages where seen.insert(message.id).inserted {
                if measured.contains(message.intended) { intended.append(message.intended) }
            }
            recorder.count(.deliveries, intended.count, at: now)
            recorder.recordLatencies(from: intended, to: now)
        }
    }

    /// Runs `body` over `items`, at most `concurrency` at once.
    func forEach(_ items: [String], concurrency: Int, _ body: @escaping @Sendable (String) async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var iterator = items.makeIterator()
            for _ in 0..<max(concurrency, 1) {
                guard let item = iterator.next() else { break }
                group.addTask { try await body(item) }
            }
            while try await group.next() != nil {
                if let item = iterator.next() { group.addTask { try await body(item) } }
            }
        }
    }

    /// User plus system CPU seconds of these processes and their threads.
    static func cpuSeconds(_ pids: [Int32]) -> Double {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return pids.reduce(0.0) { total, pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return total }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return total }
            return total + (user + system) / ticks
        }
    }

    /// Resident memory of these processes, in MB.
    static func residentMB(_ pids: [Int32]) -> Double {
        pids.reduce(0.0) { total, pid in
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                  let kilobytes = Double(line.split(separator: " ").dropFirst().first ?? "") else { return total }
            return total + kilobytes / 1024
        }
    }
}

/// A value shared by the run's tasks, behind a lock.
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) {
        mutex = Mutex(value)
    }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        try mutex.withLock { try body(&$0) }
    }
}
