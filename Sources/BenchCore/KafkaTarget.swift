import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import NIOSSL
import PostduifClient

/// A Kafka broker (Postduif or any other) through PostduifClient: its
/// admin calls, metadata, connections and producer; the tool adds the
/// pacing and the measuring (`KafkaPublisher`).
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

    /// A client of PostduifClient for this target: its metadata, leaders,
    /// admin calls and connections (each publisher and subscriber opens
    /// connections of its own through it, as separate clients would).
    func makeClient() throws -> KafkaClient {
        KafkaClient(ClientConfiguration(bootstrap: ["\(host):\(port)"], clientID: "postduif-bench", security: try Self.security.get()))
    }

    public func prepare(stream: String, partitions: Int) async throws {
        let client = try makeClient()
        do {
            do {
                try await Admin(client: client).createTopic(stream, partitions: Int32(partitions), replicationFactor: Int16(replicas))
            } catch let error as ClientError where error.errorCode == .topicAlreadyExists {}
            try await waitUntilLed(stream, client)
        } catch let error as ClientError {
            await client.close()
            throw TargetError.refused("preparing topic \(stream): \(error)")
        }
        await client.close()
    }

    /// In a cluster, a new topic's leaders take it up a moment after
    /// Metadata names them: ask each leader for its partitions' offsets
    /// until all answer, so the run does not start with refusals.
    func waitUntilLed(_ topic: String, _ client: KafkaClient) async throws {
        for _ in 0..<100 {
            var ready = true
            for (address, partitions) in Self.partitionsByLeader(try await client.leaders(of: topic, refresh: true)) {
                let request = ListOffsetsRequest(topics: [.init(name: topic, partitions: partitions.map { .init(index: $0, timestamp: -1) })])
                let answer = try await client.call(address, .listOffsets, version: 2, { request.encode(&$0, version: 2) },
                                                   decode: { try ListOffsetsResponse.decode(&$0, version: 2) })
                if answer.topics.flatMap(\.partitions).contains(where: { $0.errorCode != 0 }) { ready = false }
            }
            if ready { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TargetError.refused("the leaders of \(topic) did not take it up")
    }

    /// Which partitions each broker leads, in partition order.
    static func partitionsByLeader(_ leaders: [Int32: String]) -> [String: [Int32]] {
        var partitions: [String: [Int32]] = [:]
        for (partition, address) in leaders.sorted(by: { $0.key < $1.key }) { partitions[address, default: []].append(partition) }
        return partitions
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

    /// The topic's leaders, and a connection of the caller's own to each.
    func leaderConnections(_ topic: String) async throws -> (leaders: [Int32: String], connections: [String: KafkaClientConnection]) {
        let client = try makeClient()
        defer { Task { await client.close() } }
        let leaders: [Int32: String]
        do {
            leaders = try await client.leaders(of: topic)
        } catch let error as ClientError {
            throw TargetError.refused("the leaders of \(topic): \(error)")
        }
        var connections: [String: KafkaClientConnection] = [:]
        for address in Set(leaders.values) { connections[address] = try await client.openConnection(address) }
        return (leaders, connections)
    }

    /// A publisher with a client of its own, as a separate producer would
    /// have: its own connection to each leader.
    public func makePublisher(stream: String, recorder: Recorder, settings: PublishSettings) async throws -> any Publisher {
        let client = try makeClient()
        let partitions: Int32
        do {
            partitions = try await client.partitionCount(stream)
            _ = try await client.leaders(of: stream)
        } catch let error as ClientError {
            await client.close()
            throw TargetError.refused("the leaders of \(stream): \(error)")
        }
        let producer = Producer(client: client, acks: settings.acks, idempotent: false, clock: { Int64(Date().timeIntervalSince1970 * 1000) })
        return KafkaPublisher(producer: producer, topic: stream, partitionCount: partitions, recorder: recorder, settings: settings)
    }

    public func makeSubscriber(stream: String, fromStart: Bool) async throws -> any Subscriber {
        let (leaders, connections) = try await leaderConnections(stream)
        var parts: [KafkaSubscriber] = []
        for (address, partitions) in Self.partitionsByLeader(leaders).sorted(by: { $0.key < $1.key }) {
            parts.append(try await KafkaSubscriber(connection: connections[address]!, topic: stream, partitions: partitions, fromStart: fromStart))
        }
        return parts.count == 1 ? parts[0] : KafkaSubscribers(parts: parts)
    }
}

/// Paces and windows a run's sends as a Kafka producer does: messages
/// queue per partition; once the oldest has lingered its time (or a
/// partition holds a full batch), one call of PostduifClient's `Producer`
/// takes up to a batch of every partition (one Produce request per leading
/// broker), with up to `inFlightMax` such calls unanswered. The linger,
/// the window and the per-message latency are the load tool's; building,
/// routing and retrying the requests are the library's. Without a producer
/// it is the discard target: it builds and encodes every request, then
/// drops it.
actor KafkaPublisher: Publisher {
    /// Nil for discard.
    let producer: Producer?
    let topic: String
    let partitionCount: Int32
    let recorder: Recorder
    let settings: PublishSettings

    /// One partition's messages not yet sent, from `head` on.
    private struct Queue {
        var records: [ProducerRecord] = []
        var intended: [UInt64] = []
        var sizes: [Int] = []
        var head = 0
        var bytes = 0

        /// Drops what was sent once it is most of the arrays, so taking
        /// from the front costs no shifting per send.
        mutating func compact() {
            guard head > 1024, head * 2 > records.count else { return }
            records.removeFirst(head)
            intended.removeFirst(head)
            sizes.removeFirst(head)
            head = 0
        }
    }
    private var queues: [Int32: Queue] = [:]
    private var pendingBytes = 0
    private var oldestPending: UInt64 = 0
    /// Partitions holding at least a batch's bytes: they leave without lingering.
    private var fullQueues = 0
    private var inFlight = 0
    private var waitingForRoom: [CheckedContinuation<Void, Never>] = []
    private var waitingForIdle: [CheckedContinuation<Void, Never>] = []
    private var failure: (any Error)?
    /// The deadline the linger timer is armed for, if it is.
    private var lingerDue: UInt64?

    init(producer: Producer?, topic: String, partitionCount: Int32, recorder: Recorder, settings: PublishSettings) {
        self.producer = producer
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
            var queue = queues.removeValue(forKey: partition) ?? Queue()
            let wasFull = queue.bytes >= settings.batchBytes
            queue.records.append(ProducerRecord(topic: topic, partition: partition, key: message.key, value: message.value, timestamp: timestamp))
            queue.intended.append(message.intended)
            queue.sizes.append(size)
            queue.bytes += size
            if !wasFull && queue.bytes >= settings.batchBytes { fullQueues += 1 }
            queues[partition] = queue
            pendingBytes += size
        }
        recorder.count(.sent, messages.count, bytes: messages.reduce(0) { $0 + $1.value.count }, at: now)
        sendIfDue()
    }

    func sendIfDue(force: Bool = false) {
        while pendingBytes > 0 && inFlight < settings.inFlightMax {
            let lingered = monotonicNanoseconds() - oldestPending >= UInt64(settings.lingerMilliseconds) * 1_000_000
            guard force || lingered || fullQueues > 0 else {
                armLinger()
                return
            }
            sendOne()
        }
    }

    /// Takes up to a batch (`batchBytes`, at least one message) of every
    /// partition and sends them in one call of the producer.
    private func sendOne() {
        var records: [ProducerRecord] = []
        var intended: [UInt64] = []
        for partition in queues.keys.sorted() {
            var queue = queues.removeValue(forKey: partition)!
            let wasFull = queue.bytes >= settings.batchBytes
            var taken = 0
            var end = queue.head
            while end < queue.records.count, end == queue.head || taken + queue.sizes[end] <= settings.batchBytes {
                taken += queue.sizes[end]
                end += 1
            }
            records += queue.records[queue.head..<end]
            intended += queue.intended[queue.head..<end]
            queue.head = end
            queue.bytes -= taken
            pendingBytes -= taken
            if wasFull && queue.bytes < settings.batchBytes { fullQueues -= 1 }
            if queue.head < queue.records.count {
                queue.compact()
                queues[partition] = queue
            }
        }
        oldestPending = monotonicNanoseconds()
        for waiter in waitingForRoom { waiter.resume() }
        waitingForRoom.removeAll()
        guard let producer else {
            discard(records, intended)
            return
        }
        inFlight += 1
        Task {
            let results = await producer.send(records)
            self.completed(intended, results)
        }
    }

    /// Discard: pays for the batches and the request's encoding, then
    /// acknowledges at once.
    private func discard(_ records: [ProducerRecord], _ intended: [UInt64]) {
        var builders: [Int32: RecordBatchBuilder] = [:]
        var bytes = 0
        for record in records {
            builders[record.partition!, default: RecordBatchBuilder()].append(key: record.key, value: record.value, timestamp: record.timestamp ?? 0)
            bytes += (record.key?.count ?? 0) + (record.value?.count ?? 0) + 16
        }
        let request = ProduceRequest(acks: settings.acks, timeoutMilliseconds: 30_000, topics: [.init(topic: topic, partitions: builders.sorted { $0.key < $1.key }.map {
            var builder = $0.value
            return .init(index: $0.key, batch: builder.build())
        })])
        var writer = ByteWriter(capacity: bytes + 256)
        request.encode(&writer, version: KafkaTarget.produceVersion)
        let now = monotonicNanoseconds()
        recorder.count(.acknowledged, intended.count, at: now)
        recorder.recordLatencies(from: intended, to: now)
    }

    private func completed(_ intended: [UInt64], _ results: [Result<RecordMetadata, ClientError>]) {
        inFlight -= 1
        let now = monotonicNanoseconds()
        var acknowledged: [UInt64] = []
        acknowledged.reserveCapacity(intended.count)
        var refused: ClientError?
        var refusedCount = 0
        for (position, result) in results.enumerated() {
            switch result {
            case .success:
                acknowledged.append(intended[position])
            case .failure(let error):
                refused = refused ?? error
                refusedCount += 1
            }
        }
        recorder.count(.acknowledged, acknowledged.count, at: now)
        // With acks=0 nothing is acknowledged by the broker: no latency.
        if settings.acks != 0 { recorder.recordLatencies(from: acknowledged, to: now) }
        if let refused {
            recorder.count(.errors, refusedCount, at: now)
            failure = TargetError.refused("produce refused: \(refused)")
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
        await producer?.client.close()
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
        KafkaPublisher(producer: nil, topic: stream, partitionCount: 8, recorder: recorder, settings: settings)
    }

    public func makeSubscriber(stream: String, fromStart: Bool) async throws -> any Subscriber {
        throw TargetError.refused("the discard target keeps nothing to consume; use it with the produce workload")
    }
}
