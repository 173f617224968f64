import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// NATS JetStream, through the NATS text protocol written here (it is
/// small): core publish and subscribe, JetStream stream and consumer
/// creation through its `$JS.API` requests, and asynchronous publishing
/// with a JetStream acknowledgement per message, as nats.go's PublishAsync
/// does (at most `unacknowledgedMax` messages waiting).
public struct NatsTarget: Target {
    public let host: String
    public let port: Int
    public let replicas: Int
    public var url: String { "nats://\(host):\(port)" }
    public var label: String { "nats" }
    /// nats.go's default for PublishAsyncMaxPending.
    public static let unacknowledgedMax = 4000

    public init(host: String, port: Int, replicas: Int = 1) {
        self.host = host
        self.port = port
        self.replicas = replicas
    }

    public func prepare(stream: String, partitions: Int) async throws {
        let connection = try await NatsConnection.connect(host: host, port: port)
        defer { Task { await connection.close() } }
        // A fresh stream each run, so runs do not read each other's messages.
        _ = try? await connection.request("$JS.API.STREAM.DELETE.\(stream)", payload: [])
        let config = #"{"name":"\#(stream)","subjects":["\#(stream).>"],"storage":"file","num_replicas":\#(replicas),"retention":"limits","discard":"old"}"#
        let answer = try await connection.request("$JS.API.STREAM.CREATE.\(stream)", payload: Array(config.utf8))
        if let error = NatsConnection.jetStreamError(answer) {
            throw TargetError.refused("creating JetStream stream \(stream): \(error)")
        }
    }

    public func makePublisher(stream: String, recorder: Recorder, settings: PublishSettings) async throws -> any Publisher {
        let publisher = NatsPublisher(stream: stream, recorder: recorder, waitForAcks: settings.acks != 0, unacknowledgedMax: Self.unacknowledgedMax)
        let connection = try await NatsConnection.connect(host: host, port: port) { events in publisher.received(events) }
        publisher.connection.withLock { $0 = connection }
        connection.subscribe(publisher.inboxPrefix + "*", sid: 1)
        try await connection.ping()
        return publisher
    }

    public func makeSubscriber(stream: String, fromStart: Bool) async throws -> any Subscriber {
        let subscriber = NatsSubscriber()
        let connection = try await NatsConnection.connect(host: host, port: port) { events in subscriber.received(events) }
        subscriber.connection.withLock { $0 = connection }
        let deliver = "_DELIVER.\(UUID().uuidString.replacingOccurrences(of: "-", with: ""))"
        connection.subscribe(deliver, sid: 2)
        try await connection.ping()
        let config = #"{"stream_name":"\#(stream)","config":{"deliver_subject":"\#(deliver)","deliver_policy":"\#(fromStart ? "all" : "new")","ack_policy":"none","replay_policy":"instant","flow_control":true,"idle_heartbeat":5000000000}}"#
        let requester = try await NatsConnection.connect(host: host, port: port)
        defer { Task { await requester.close() } }
        let answer = try await requester.request("$JS.API.CONSUMER.CREATE.\(stream)", payload: Array(config.utf8))
        if let error = NatsConnection.jetStreamError(answer) {
            throw TargetError.refused("creating a JetStream consumer on \(stream): \(error)")
        }
        return subscriber
    }
}

/// Publishes with a reply subject per message; JetStream answers each with
/// `{"stream":...,"seq":...}` on it, in the order it stored them.
final class NatsPublisher: Publisher {
    struct State {
        var nextID: UInt64 = 0
        var waiting: [UInt64: UInt64] = [:]
        var roomWaiters: [CheckedContinuation<Int, Never>] = []
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
        var failure: String?
    }

    let stream: String
    let recorder: Recorder
    let waitForAcks: Bool
    let unacknowledgedMax: Int
    let inboxPrefix = "_INBOX.\(UUID().uuidString.replacingOccurrences(of: "-", with: "")).".lowercased()
    let connection = Mutex<NatsConnection?>(nil)
    private let state = Mutex(State())

    init(stream: String, recorder: Recorder, waitForAcks: Bool, unacknowledgedMax: Int) {
        self.stream = stream
        self.recorder = recorder
        self.waitForAcks = waitForAcks
        self.unacknowledgedMax = unacknowledgedMax
    }

    func publish(_ messages: [OutgoingMessage]) async throws {
        guard let connection = connection.withLock({ $0 }) else { return }
        var start = 0
        while start < messages.count {
            // Wait for room: at most `unacknowledgedMax` messages unacknowledged.
            let room: Int = await withCheckedContinuation { (continuation: CheckedContinuation<Int, Never>) in
                let room = state.withLock { state -> Int? in
                    let room = unacknowledgedMax - state.waiting.count
                    if room > 0 || !waitForAcks { return waitForAcks ? room : messages.count }
                    state.roomWaiters.append(continuation)
                    return nil
                }
                if let room { continuation.resume(returning: room) }
            }
            if room <= 0 { continue }
            let end = min(messages.count, start + room)
            let chunk = messages[start..<end]
            let firstID = state.withLock { state -> UInt64 in
                let first = state.nextID
                state.nextID += UInt64(chunk.count)
                if waitForAcks {
                    for (offset, message) in chunk.enumerated() { state.waiting[first + UInt64(offset)] = message.intended }
                }
                return first
            }
            connection.publish(stream: stream, chunk, replyPrefix: waitForAcks ? inboxPrefix : nil, firstID: firstID)
            let now = monotonicNanoseconds()
            recorder.count(.sent, chunk.count, bytes: chunk.reduce(0) { $0 + $1.value.count }, at: now)
            if !waitForAcks {
                recorder.count(.acknowledged, chunk.count, at: now)
            }
            start = end
        }
        if let failure = state.withLock({ $0.failure }) { throw TargetError.refused(failure) }
    }

    /// Acknowledgements, on the connection's event loop.
    func received(_ events: [NatsEvent]) {
        var acknowledged: [UInt64] = []
        var failed = 0
        var failure: String?
        let now = monotonicNanoseconds()
        let (roomWaiters, idleWaiters) = state.withLock { state -> ([CheckedContinuation<Int, Never>], [CheckedContinuation<Void, Never>]) in
            for event in events {
                guard case .message(let subject, _, _, let payload) = event, subject.hasPrefix(inboxPrefix),
                      let id = UInt64(subject.dropFirst(inboxPrefix.count)),
                      let intended = state.waiting.removeValue(forKey: id) else { continue }
                if let error = NatsConnection.jetStreamError(payload) {
                    failed += 1
                    failure = error
                } else {
                    acknowledged.append(intended)
                }
            }
            if let failure { state.failure = failure }
            var room: [CheckedContinuation<Int, Never>] = []
            if state.waiting.count < unacknowledgedMax {
                room = state.roomWaiters
                state.roomWaiters.removeAll()
            }
            var idle: [CheckedContinuation<Void, Never>] = []
            if state.waiting.isEmpty {
                idle = state.idleWaiters
                state.idleWaiters.removeAll()
            }
            return (room, idle)
        }
        recorder.count(.acknowledged, acknowledged.count, at: now)
        recorder.recordLatencies(from: acknowledged, to: now)
        recorder.count(.errors, failed, at: now)
        // Woken with no room granted: each asks again for its share.
        for waiter in roomWaiters { waiter.resume(returning: 0) }
        for waiter in idleWaiters { waiter.resume() }
    }

    func flush() async throws {
        guard waitForAcks else {
            try await connection.withLock { $0 }?.ping()
            return
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.waiting.isEmpty { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
        if let failure = state.withLock({ $0.failure }) { throw TargetError.refused(failure) }
    }

    func close() async {
        await connection.withLock { $0 }?.close()
    }
}

/// Receives a JetStream push consumer's messages.
final class NatsSubscriber: Subscriber {
    let connection = Mutex<NatsConnection?>(nil)
    private let handler = Mutex<(@Sendable ([ReceivedMessage]) -> Void)?>(nil)

    func received(_ events: [NatsEvent]) {
        var messages: [ReceivedMessage] = []
        for event in events {
            // The subject is STREAM.KEY: the key is what follows the first dot.
            if case .message(let subject, let sid, _, let payload) = event, sid == 2 {
                let key = subject.firstIndex(of: ".").map { Array(subject[subject.index(after: $0)...].utf8) }
                messages.append(ReceivedMessage(key: key, value: payload))
            }
        }
        guard !messages.isEmpty else { return }
        // The consumer pushes from the moment it exists, maybe before `run`
        // installed the handler: keep those messages rather than lose them.
        let handle = handler.withLock { handle -> (@Sendable ([ReceivedMessage]) -> Void)? in
            if handle == nil { early.withLock { $0 += messages } }
            return handle
        }
        handle?(messages)
    }

    private let early = Mutex<[ReceivedMessage]>([])

    func run(pollMilliseconds: Int, shouldStop: @escaping @Sendable () -> Bool, handle: @escaping @Sendable ([ReceivedMessage]) -> Void) async throws {
        let waiting = handler.withLock { installed -> [ReceivedMessage] in
            installed = handle
            return early.withLock { early in
                defer { early = [] }
                return early
            }
        }
        if !waiting.isEmpty { handle(waiting) }
        while !shouldStop() && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(min(pollMilliseconds, 50)))
        }
        handler.withLock { $0 = nil }
    }

    func close() async {
        await connection.withLock { $0 }?.close()
    }
}
