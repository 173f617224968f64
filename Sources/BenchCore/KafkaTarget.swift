import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import NIOSSL

/// A Kafka broker (Postduif or any other) through the tool's own client.
public struct KafkaTarget: Target {
    public let host: String
    public let port: Int
    public let replicas: Int
    public var url: String { "kafka://\(host):\(port)" }
    public var label: String { "kafka" }

    static let produceVersion: Int16 = 7
    static let fetchVersion: Int16 = 11

    public init(host: String, port: Int, replicas: Int = 1) {
        self.host = host
        self.port = port
        self.replicas = replicas
    }

    func connect() async throws -> KafkaClientConnection {
        try await Self.connect("\(host):\(port)")
    }

    public func prepare(stream: String, partitions: Int) async throws {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        var reader = try await connection.request(.createTopics, version: 4) { writer in
            CreateTopicsRequest(topics: [.init(name: stream, partitionCount: Int32(partitions), replicationFactor: Int16(replicas))]).encode(&writer, version: 4)
        }
        let response = try CreateTopicsResponse.decode(&reader, version: 4)
        for topic in response.topics where topic.errorCode != 0 && topic.errorCode != ErrorCode.topicAlreadyExists.rawValue {
            throw TargetError.refused("creating topic \(topic.name): error \(topic.errorCode) \(topic.errorMessage ?? "")")
        }
        try await waitUntilLed(stream)
    }

    /// In a cluster, a new topic's leaders take it up a moment after
    /// Metadata names them: ask each leader for its partitions' offsets
    /// until all answer, so the run does not start with refusals.
    func waitUntilLed(_ topic: String) async throws {
        for _ in 0..<100 {
            let layout = try await layout(of: topic)
            let (connections, partitions) = try await leaderConnections(layout)
            var ready = true
            for (address, connection) in connections {
                var reader = try await connection.request(.listOffsets, version: 2) { writer in
                    ListOffsetsRequest(topics: [.init(name: topic, partitions: partitions[address]!.map { .init(index: $0, timestamp: -1) })]).encode(&writer, version: 2)
                }
                let answer = try ListOffsetsResponse.decode(&reader, version: 2)
                if answer.topics.flatMap(\.partitions).contains(where: { $0.errorCode != 0 }) { ready = false }
                await connection.close()
            }
            if ready { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TargetError.refused("the leaders of \(topic) did not take it up")
    }

    /// Where each partition of a topic is led: broker addresses by
    /// partition, from Metadata (a single node leads them all).
    struct Layout {
        var leaders: [Int32: String]
        var partitionCount: Int32 { Int32(leaders.count) }
    }

    func layout(of topic: String) async throws -> Layout {
        let connection = try await connect()
        defer { Task { await connection.close() } }
        // The topic may have just been created: retried briefly until every partition has a leader.
        guard let leaders = try await connection.partitionLeaders(of: topic) else {
            throw TargetError.refused("topic \(topic) has no leaders")
        }
        return Layout(leaders: leaders)
    }

    static func connect(_ address: String) async throws -> KafkaClientConnection {
        let parts = address.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw TargetError.refused("bad broker address \(address)") }
        return try await KafkaClientConnection.connect(host: String(parts[0]), port: port, clientID: "postduif-bench", security: try security.get())
    }

    /// TLS and SASL PLAIN for a secured listener, from the environment
    /// (the same for every connection of a run): POSTDUIF_BENCH_TLS_CA_FILE
    /// turns TLS on with that CA; POSTDUIF_BENCH_SASL_USER and
    /// POSTDUIF_BENCH_SASL_PASSWORD sign in.
    static let security: Result<KafkaClientSecurity, any Error> = Result {
        let environment = ProcessInfo.processInfo.environment
        var security = KafkaClientSecurity()
        if let ca = environment["POSTDUIF_BENCH_TLS_CA_FILE"] {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.trustRoots = .file(ca)
            configuration.certificateVerification = .noHostnameVerification
            security.tls = try NIOSSLContext(configuration: configuration)
        }
        if let user = environment["POSTDUIF_BENCH_SASL_USER"] {
            security.sasl = SaslCredentials(user: user, password: environment["POSTDUIF_BENCH_SASL_PASSWORD"] ?? "")
        }
        return security
    }

    /// One connection per leading broker, and which partitions each leads.
    func leaderConnections(_ layout: Layout) async throws -> (connections: [String: KafkaClientConnection], partitions: [String: [Int32]]) {
        var connections: [String: KafkaClientConnection] = [:]
        var partitions: [String: [Int32]] = [:]
        for (partition, address) in layout.leaders.sorted(by: { $0.key < $1.key }) {
            if connections[address] == nil { connections[address] = try await Self.connect(address) }
            partitions[address, default: []].append(partition)
        }
        return (connections, partitions)
    }

    public func makePublisher(stream: String, recorder: Recorder, settings: PublishSettings) async throws -> any Publisher {
        let layout = try await layout(of: stream)
        let (connections, _) = try await leaderConnections(layout)
        let routes = layout.leaders.mapValues { connections[$0]! }
        return KafkaPublisher(routes: routes, topic: stream, partitionCount: layout.partitionCount, recorder: recorder, settings: settings)
    }

    public func makeSubscriber(stream: String, fromStart: Bool) async throws -> any Subscriber {
        let layout = try await layout(of: stream)
        let (connections, partitions) = try await leaderConnections(layout)
        var parts: [KafkaSubscriber] = []
        for (address, connection) in connections.sorted(by: { $0.key < $1.key }) {
            parts.append(try await KafkaSubscriber(connection: connection, topic: stream, partitions: partitions[address]!, fromStart: fromStart))
        }
        return parts.count == 1 ? parts[0] : KafkaSubscribers(parts: parts)
    }
}

/// Batches messages per partition as a Kafka producer does (a batch leaves
/// when it is full or its linger passed), sends each partition's batch to
/// the broker leading it, and keeps several Produce requests in flight.
/// Without routes it is the discard target: it builds and encodes every
/// request, then drops it.
actor KafkaPublisher: Publisher {
    /// The connection to each partition's leader; empty for discard.
    let routes: [Int32: KafkaClientConnection]
    let topic: String
    let partitionCount: Int32
    let recorder: Recorder
    let settings: PublishSettings

    /// Per partition, batches waiting to be sent: the last one fills, the
    /// first one leaves with the next request (one batch per partition per
    /// request, each at most `batchBytes`).
    private struct OpenBatch {
        var builder: RecordBatchBuilder
        var intended: [UInt64] = []
        var bytes = 0
    }
    private var batches: [Int32: [OpenBatch]] = [:]
    private var pendingBytes = 0
    private var oldestPending: UInt64 = 0
    private var fullBatches = 0
    private var inFlight = 0
    private var waitingForRoom: [CheckedContinuation<Void, Never>] = []
    private var waitingForIdle: [CheckedContinuation<Void, Never>] = []
    private var failure: (any Error)?
    /// The deadline the linger timer is armed for, if it is.
    private var lingerDue: UInt64?

    init(routes: [Int32: KafkaClientConnection], topic: String, partitionCount: Int32, recorder: Recorder, settings: PublishSettings) {
        self.routes = routes
        self.topic = topic
        self.partitionCount = partitionCount
        self.recorder = recorder
        self.settings = settings
    }

    /// Arms a one-shot timer for the moment the oldest pending message has
    /// lingered its time. A periodic check every linger period (as before)
    /// sent a batch between one and two periods after its first message.
    private func armLinger() {
        let due = oldestPending + UInt64(settings.lingerMilliseconds) * 1_000_000
        if let armed = lingerDue, armed <= due { return }
        lingerDue = due
        let now = monotonicNanoseconds()
        let delay = due > now ? due - now : 0
        Task { [weak self] in
            try? await Task.sleep(nanoseconds: delay)
            await self?.lingered(due)
        }
    }

    private func lingered(_ due: UInt64) {
        if lingerDue == due { lingerDue = nil }
        sendIfDue()
    }

    func publish(_ messages: [OutgoingMessage]) async throws {
        if let failure { throw failure }
        while pendingBytes >= settings.bufferBytesMax {
            await withCheckedContinuation { waitingForRoom.append($0) }
        }
        let now = monotonicNanoseconds()
        let timestamp = Int64(Date().timeIntervalSince1970 * 1000)
        if pendingBytes == 0 { oldestPending = now }
        for message in messages {
            let partition = KafkaPartitioner.partition(forKey: message.key, partitionCount: partitionCount)
            let size = message.key.count + message.value.count + 16
            var queue = batches[partition] ?? []
            if queue.isEmpty || queue[queue.count - 1].bytes + size > settings.batchBytes {
                if !queue.isEmpty { fullBatches += 1 }
                queue.append(OpenBatch(builder: RecordBatchBuilder(capacity: min(settings.batchBytes, 1 << 20))))
            }
            queue[queue.count - 1].builder.append(key: message.key, value: message.value, timestamp: timestamp)
            queue[queue.count - 1].intended.append(message.intended)
            queue[queue.count - 1].bytes += size
            batches[partition] = queue
            pendingBytes += size
        }
        recorder.count(.sent, messages.count, bytes: messages.reduce(0) { $0 + $1.value.count }, at: now)
        sendIfDue()
    }

    func sendIfDue(force: Bool = false) {
        while pendingBytes > 0 && inFlight < settings.inFlightMax {
            let lingered = monotonicNanoseconds() - oldestPending >= UInt64(settings.lingerMilliseconds) * 1_000_000
            guard force || lingered || fullBatches > 0 else {
                armLinger()
                return
            }
            sendOne()
        }
    }

    /// Sends the first batch of every partition, one Produce request per
    /// leading broker.
    private func sendOne() {
        var requests: [ObjectIdentifier: (connection: KafkaClientConnection?, partitions: [ProduceRequest.PartitionData], messages: [UInt64], bytes: Int)] = [:]
        for partition in batches.keys.sorted() {
            var queue = batches[partition]!
            let batch = queue.removeFirst()
            if !queue.isEmpty { fullBatches -= 1 }
            batches[partition] = queue.isEmpty ? nil : queue
            let connection = routes[partition]
            let key = connection.map(ObjectIdentifier.init) ?? ObjectIdentifier(KafkaPublisher.self)
            var request = requests[key] ?? (connection, [], [], 0)
            request.partitions.append(.init(index: partition, batch: batch.builder.build()))
            request.messages += batch.intended
            request.bytes += batch.bytes
            requests[key] = request
            pendingBytes -= batch.bytes
        }
        oldestPending = monotonicNanoseconds()
        for waiter in waitingForRoom { waiter.resume() }
        waitingForRoom.removeAll()
        for request in requests.values {
            send(ProduceRequest(acks: settings.acks, timeoutMilliseconds: 30_000, topics: [.init(topic: topic, partitions: request.partitions)]),
                 messages: request.messages, bytes: request.bytes, on: request.connection)
        }
    }

    private func send(_ request: ProduceRequest, messages: [UInt64], bytes: Int, on connection: KafkaClientConnection?) {
        guard let connection else {
            // Discard: pay for the encoding, acknowledge at once.
            var writer = ByteWriter(capacity: bytes + 256)
            request.encode(&writer, version: KafkaTarget.produceVersion)
            let now = monotonicNanoseconds()
            recorder.count(.acknowledged, messages.count, at: now)
            recorder.recordLatencies(from: messages, to: now)
            return
        }
        let answer = connection.send(.produce, version: KafkaTarget.produceVersion, expectsResponse: settings.acks != 0) { writer in
            request.encode(&writer, version: KafkaTarget.produceVersion)
        }
        inFlight += 1
        Task {
            let outcome: Result<ByteReader?, any Error>
            do { outcome = .success(try await answer.get()) } catch { outcome = .failure(error) }
            self.completed(messages, outcome)
        }
    }

    private func completed(_ messages: [UInt64], _ outcome: Result<ByteReader?, any Error>) {
        inFlight -= 1
        let now = monotonicNanoseconds()
        switch outcome {
        case .success(nil):
            recorder.count(.acknowledged, messages.count, at: now)
        case .success(var reader?):
            do {
                let response = try ProduceResponse.decode(&reader, version: KafkaTarget.produceVersion)
                let failed = response.topics.flatMap(\.partitions).filter { $0.errorCode != 0 }
                if failed.isEmpty {
                    recorder.count(.acknowledged, messages.count, at: now)
                    recorder.recordLatencies(from: messages, to: now)
                } else {
                    // Which messages were in the failed partitions is not kept:
                    // a refused request counts as failed whole.
                    recorder.count(.errors, messages.count, at: now)
                    failure = TargetError.refused("produce refused: error \(failed[0].errorCode) \(failed[0].errorMessage ?? "")")
                }
            } catch {
                recorder.count(.errors, messages.count, at: now)
                failure = error
            }
        case .failure(let error):
            recorder.count(.errors, messages.count, at: now)
            failure = error
        }
        sendIfDue()
        if inFlight == 0 && pendingBytes == 0 {
            for waiter in waitingForIdle { waiter.resume() }
            waitingForIdle.removeAll()
        }
    }

    func flush() async throws {
        // A target that stops answering must not hang the run: after the
        // deadline, what is still unacknowledged counts as failed.
        let deadline = monotonicNanoseconds() + UInt64(settings.flushTimeoutSeconds * 1e9)
        let timer = Task { [weak self] in
            try? await Task.sleep(for: .seconds(self?.settings.flushTimeoutSeconds ?? 0))
            await self?.wakeIdleWaiters()
        }
        defer { timer.cancel() }
        while pendingBytes > 0 || inFlight > 0 {
            sendIfDue(force: true)
            if pendingBytes == 0 && inFlight == 0 { break }
            if monotonicNanoseconds() >= deadline {
                throw TargetError.refused("\(inFlight) requests and \(pendingBytes) bytes still unacknowledged after \(settings.flushTimeoutSeconds) s")
            }
            await withCheckedContinuation { waitingForIdle.append($0) }
        }
        if let failure { throw failure }
    }

    private func wakeIdleWaiters() {
        for waiter in waitingForIdle { waiter.resume() }
        waitingForIdle.removeAll()
    }

    func close() async {
        var unique: [ObjectIdentifier: KafkaClientConnection] = [:]
        for connection in routes.values { unique[ObjectIdentifier(connection)] = connection }
        for connection in unique.values { await connection.close() }
    }
}

/// Fetches every partition of a topic in one request after another, from
/// the start or from the end, and hands the records over.
final class KafkaSubscriber: Subscriber {
    let connection: KafkaClientConnection
    let topic: String
    /// The partitions this subscriber reads (those its broker leads).
    let partitions: [Int32]
    let startOffsets: [Int32: Int64]

    init(connection: KafkaClientConnection, topic: String, partitions: [Int32], fromStart: Bool) async throws {
        self.connection = connection
        self.topic = topic
        self.partitions = partitions
        var reader = try await connection.request(.listOffsets, version: 2) { writer in
            ListOffsetsRequest(topics: [.init(name: topic, partitions: partitions.map { .init(index: $0, timestamp: fromStart ? -2 : -1) })]).encode(&writer, version: 2)
        }
        let response = try ListOffsetsResponse.decode(&reader, version: 2)
        var offsets: [Int32: Int64] = Dictionary(uniqueKeysWithValues: partitions.map { ($0, 0) })
        for partition in response.topics.flatMap(\.partitions) where partition.errorCode == 0 {
            offsets[partition.index] = partition.offset
        }
        startOffsets = offsets
    }

    func run(pollMilliseconds: Int, shouldStop: @escaping @Sendable () -> Bool, handle: @escaping @Sendable ([ReceivedMessage]) -> Void) async throws {
        var offsets = startOffsets
        while !shouldStop() && !Task.isCancelled {
            let request = FetchRequest(
                maxWaitMilliseconds: Int32(pollMilliseconds), minBytes: 1, maxBytes: 32 << 20,
                topics: [.init(name: topic, partitions: partitions.map { .init(index: $0, fetchOffset: offsets[$0] ?? 0, partitionBytesMax: 4 << 20) })])
            var reader = try await connection.request(.fetch, version: KafkaTarget.fetchVersion) { request.encode(&$0, version: KafkaTarget.fetchVersion) }
            let response = try FetchResponse.decode(&reader, version: KafkaTarget.fetchVersion)
            var received: [ReceivedMessage] = []
            for partition in response.topics.flatMap(\.partitions) {
                guard partition.errorCode == 0 else {
                    throw TargetError.refused("fetch from \(topic)/\(partition.index): error \(partition.errorCode)")
                }
                for blob in partition.batches {
                    let from = offsets[partition.index] ?? 0
                    for batch in try RecordBatch.split(stored: blob) where batch.baseOffset + Int64(batch.lastOffsetDelta) >= from {
                        for (position, record) in try batch.records().enumerated() where batch.baseOffset + Int64(position) >= from {
                            received.append(ReceivedMessage(key: record.key, value: record.value))
                        }
                        offsets[partition.index] = batch.nextOffset
                    }
                }
            }
            if !received.isEmpty { handle(received) }
        }
    }

    func close() async {
        await connection.close()
    }
}

/// Subscribers to each leading broker, read at once.
final class KafkaSubscribers: Subscriber {
    let parts: [KafkaSubscriber]

    init(parts: [KafkaSubscriber]) {
        self.parts = parts
    }

    func run(pollMilliseconds: Int, shouldStop: @escaping @Sendable () -> Bool, handle: @escaping @Sendable ([ReceivedMessage]) -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for part in parts {
                group.addTask { try await part.run(pollMilliseconds: pollMilliseconds, shouldStop: shouldStop, handle: handle) }
            }
            try await group.waitForAll()
        }
    }

    func close() async {
        for part in parts { await part.close() }
    }
}

/// Measures the tool itself: every request is built and encoded as for a
/// broker, then dropped and acknowledged at once.
public struct DiscardTarget: Target {
    public var url: String { "discard://" }
    public var label: String { "discard" }

    public init() {}

    public func prepare(stream: String, partitions: Int) async throws {}

    public func makePublisher(stream: String, recorder: Recorder, settings: PublishSettings) async throws -> any Publisher {
        KafkaPublisher(routes: [:], topic: stream, partitionCount: 8, recorder: recorder, settings: settings)
    }

    public func makeSubscriber(stream: String, fromStart: Bool) async throws -> any Subscriber {
        throw TargetError.refused("the discard target keeps nothing to consume; use it with the produce workload")
    }
}
