import Foundation
import KafkaNIO
import KafkaWire
import NIOCore

/// A Kafka broker (Postduif or any other) through the tool's own client.
public struct KafkaTarget: Target {
    public let host: String
    public let port: Int
    public let replicas: Int
    public var url: String { "kafka://\(host):\(port)" }
    public var label: String { "kafka" }

    static let produceVersion: Int16 = 7
    static let fetchVersion: Int16 = 11
    static let metadataVersion: Int16 = 8

    public init(host: String, port: Int, replicas: Int = 1) {
        self.host = host
        self.port = port
        self.replicas = replicas
    }

    func connect() async throws -> KafkaClientConnection {
        try await KafkaClientConnection.connect(host: host, port: port, clientID: "postduif-bench")
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
    }

    static func partitionCount(of topic: String, on connection: KafkaClientConnection) async throws -> Int32 {
        // The topic may have just been created: retry briefly until it is listed.
        for _ in 0..<50 {
            var reader = try await connection.request(.metadata, version: metadataVersion) { writer in
                MetadataRequest(topics: [topic], allowAutoTopicCreation: false).encode(&writer, version: metadataVersion)
            }
            let response = try MetadataResponse.decode(&reader, version: metadataVersion)
            if let found = response.topics.first(where: { $0.name == topic }), found.errorCode == 0, !found.partitions.isEmpty {
                return Int32(found.partitions.count)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TargetError.refused("topic \(topic) has no partitions")
    }

    public func makePublisher(stream: String, recorder: Recorder, settings: PublishSettings) async throws -> any Publisher {
        let connection = try await connect()
        let partitions = try await Self.partitionCount(of: stream, on: connection)
        return KafkaPublisher(connection: connection, topic: stream, partitionCount: partitions, recorder: recorder, settings: settings)
    }

    public func makeSubscriber(stream: String, fromStart: Bool) async throws -> any Subscriber {
        let connection = try await connect()
        let partitions = try await Self.partitionCount(of: stream, on: connection)
        return try await KafkaSubscriber(connection: connection, topic: stream, partitionCount: partitions, fromStart: fromStart)
    }
}

/// Batches messages per partition as a Kafka producer does (a batch leaves
/// when it is full or its linger passed) and keeps several Produce requests
/// in flight on one connection. Without a connection it is the discard
/// target: it builds and encodes every request, then drops it.
actor KafkaPublisher: Publisher {
    let connection: KafkaClientConnection?
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
    private var lingerTask: Task<Void, Never>?

    init(connection: KafkaClientConnection?, topic: String, partitionCount: Int32, recorder: Recorder, settings: PublishSettings) {
        self.connection = connection
        self.topic = topic
        self.partitionCount = partitionCount
        self.recorder = recorder
        self.settings = settings
    }

    private func startLingerTimer() {
        guard lingerTask == nil else { return }
        let period = max(settings.lingerMilliseconds, 1)
        lingerTask = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(period))
                await self?.sendIfDue()
            }
        }
    }

    func publish(_ messages: [OutgoingMessage]) async throws {
        startLingerTimer()
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
            guard force || lingered || fullBatches > 0 else { return }
            sendOne()
        }
    }

    /// Sends the first batch of every partition in one Produce request.
    private func sendOne() {
        var partitions: [ProduceRequest.PartitionData] = []
        var messages: [UInt64] = []
        var bytes = 0
        for partition in batches.keys.sorted() {
            var queue = batches[partition]!
            let batch = queue.removeFirst()
            if !queue.isEmpty { fullBatches -= 1 }
            batches[partition] = queue.isEmpty ? nil : queue
            partitions.append(.init(index: partition, batch: batch.builder.build()))
            messages += batch.intended
            bytes += batch.bytes
        }
        pendingBytes -= bytes
        oldestPending = monotonicNanoseconds()
        let request = ProduceRequest(acks: settings.acks, timeoutMilliseconds: 30_000, topics: [.init(topic: topic, partitions: partitions)])
        for waiter in waitingForRoom { waiter.resume() }
        waitingForRoom.removeAll()

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
        while pendingBytes > 0 || inFlight > 0 {
            sendIfDue(force: true)
            if pendingBytes == 0 && inFlight == 0 { break }
            await withCheckedContinuation { waitingForIdle.append($0) }
        }
        if let failure { throw failure }
    }

    func close() async {
        lingerTask?.cancel()
        await connection?.close()
    }
}

/// Fetches every partition of a topic in one request after another, from
/// the start or from the end, and hands the records over.
final class KafkaSubscriber: Subscriber {
    let connection: KafkaClientConnection
    let topic: String
    let partitionCount: Int32
    let startOffsets: [Int64]

    init(connection: KafkaClientConnection, topic: String, partitionCount: Int32, fromStart: Bool) async throws {
        self.connection = connection
        self.topic = topic
        self.partitionCount = partitionCount
        var reader = try await connection.request(.listOffsets, version: 2) { writer in
            ListOffsetsRequest(topics: [.init(name: topic, partitions: (0..<partitionCount).map { .init(index: $0, timestamp: fromStart ? -2 : -1) })]).encode(&writer, version: 2)
        }
        let response = try ListOffsetsResponse.decode(&reader, version: 2)
        var offsets = [Int64](repeating: 0, count: Int(partitionCount))
        for partition in response.topics.flatMap(\.partitions) where partition.errorCode == 0 {
            offsets[Int(partition.index)] = partition.offset
        }
        startOffsets = offsets
    }

    func run(pollMilliseconds: Int, shouldStop: @escaping @Sendable () -> Bool, handle: @escaping @Sendable ([ReceivedMessage]) -> Void) async throws {
        var offsets = startOffsets
        while !shouldStop() && !Task.isCancelled {
            let request = FetchRequest(
                maxWaitMilliseconds: Int32(pollMilliseconds), minBytes: 1, maxBytes: 32 << 20,
                topics: [.init(name: topic, partitions: (0..<partitionCount).map { .init(index: $0, fetchOffset: offsets[Int($0)], partitionBytesMax: 4 << 20) })])
            var reader = try await connection.request(.fetch, version: KafkaTarget.fetchVersion) { request.encode(&$0, version: KafkaTarget.fetchVersion) }
            let response = try FetchResponse.decode(&reader, version: KafkaTarget.fetchVersion)
            var received: [ReceivedMessage] = []
            for partition in response.topics.flatMap(\.partitions) {
                guard partition.errorCode == 0 else {
                    throw TargetError.refused("fetch from \(topic)/\(partition.index): error \(partition.errorCode)")
                }
                for blob in partition.batches {
                    for batch in try RecordBatch.split(stored: blob) where batch.baseOffset + Int64(batch.lastOffsetDelta) >= offsets[Int(partition.index)] {
                        for (position, record) in try batch.records().enumerated() where batch.baseOffset + Int64(position) >= offsets[Int(partition.index)] {
                            received.append(ReceivedMessage(key: record.key, value: record.value))
                        }
                        offsets[Int(partition.index)] = batch.nextOffset
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

/// Measures the tool itself: every request is built and encoded as for a
/// broker, then dropped and acknowledged at once.
public struct DiscardTarget: Target {
    public var url: String { "discard://" }
    public var label: String { "discard" }

    public init() {}

    public func prepare(stream: String, partitions: Int) async throws {}

    public func makePublisher(stream: String, recorder: Recorder, settings: PublishSettings) async throws -> any Publisher {
        KafkaPublisher(connection: nil, topic: stream, partitionCount: 8, recorder: recorder, settings: settings)
    }

    public func makeSubscriber(stream: String, fromStart: Bool) async throws -> any Subscriber {
        throw TargetError.refused("the discard target keeps nothing to consume; use it with the produce workload")
    }
}
