import ChatWire
import Foundation
import KafkaNIO
import KafkaWire
import Logging
import Metrics
import NIOSSL

/// One record as the gateway reads it back.
struct StoredRecord: Sendable {
    var offset: Int64
    var timestamp: Int64
    var key: [UInt8]
    var value: [UInt8]?
    var headers: [RecordHeader]
}

struct BrokerRefusal: Error, CustomStringConvertible {
    var description: String
}

/// The gateway's way to the broker: Kafka's protocol through Postduif's own
/// client (KafkaNIO), plus the ConversationHistory extension. Requests go
/// to each partition's leader; long-polling tails take connections of their
/// own (`tailConnection`), because a broker answers one connection's
/// requests in order and a waiting Fetch would hold up every produce.
actor BrokerLink {
    /// Brokers to ask for metadata, comma-separated; the next is tried
    /// when one fails, so the gateway survives the loss of any one.
    let bootstraps: [String]
    private var bootstrapIndex = 0
    var bootstrap: String { bootstraps[bootstrapIndex % bootstraps.count] }
    let logger: Logger
    private var connections: [String: KafkaClientConnection] = [:]
    private var layouts: [String: [Int32: String]] = [:]
    static let produceVersion: Int16 = 7
    static let fetchVersion: Int16 = 11

    /// SASL PLAIN credentials for a broker that requires SASL (`--sasl`).
    nonisolated let credentials: (user: String, password: String)?

    /// TLS to brokers whose listener asks for it.
    nonisolated let tls: NIOSSLContext?

    /// The broker of this process, if the gateway runs inside one.
    nonisolated let local: (any KafkaLocalBroker)?

    init(bootstrap: String, logger: Logger, credentials: (user: String, password: String)? = nil, tls: NIOSSLContext? = nil, local: (any KafkaLocalBroker)? = nil) {
        self.credentials = credentials
        self.tls = tls
        self.local = local
        let listed = bootstrap.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        bootstraps = listed.isEmpty ? [bootstrap] : listed
        self.logger = logger
    }

    /// A new connection to a broker, authenticated with SASL PLAIN when
    /// credentials are set (the broker's user file holds the user).
    nonisolated func open(_ address: String) async throws -> KafkaClientConnection {
        if let local, local.isSelf(address) { return KafkaClientConnection(local: local, clientID: "postduif-gateway") }
        let parts = address.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw BrokerRefusal(description: "bad broker address \(address)") }
        return try await KafkaClientConnection.connect(host: String(parts[0]), port: port, clientID: "postduif-gateway",
                                                       security: KafkaClientSecurity(tls: tls, sasl: credentials.map { SaslCredentials(user: $0.user, password: $0.password) }))
    }

    private func connection(_ address: String) async throws -> KafkaClientConnection {
        if let open = connections[address] { return open }
        let made = try await open(address)
        if let raced = connections[address] {
            Task { await made.close() }
            return raced
        }
        connections[address] = made
        return made
    }

    /// Forgets a failed connection and what it said about leaders.
    private func forget(_ address: String) {
        if let dropped = connections.removeValue(forKey: address) { Task { await dropped.close() } }
        layouts.removeAll()
    }

    /// Creates a topic unless it exists.
    func ensureTopic(_ name: String, partitions: Int32, configs: [(String, String?)] = []) async throws {
        let connection = try await connection(bootstrap)
        var reader = try await connection.request(.createTopics, version: 4) { writer in
            CreateTopicsRequest(topics: [.init(name: name, partitionCount: partitions, replicationFactor: -1, configs: configs)]).encode(&writer, version: 4)
        }
        for topic in try CreateTopicsResponse.decode(&reader, version: 4).topics
        where topic.errorCode != 0 && topic.errorCode != ErrorCode.topicAlreadyExists.rawValue {
            throw BrokerRefusal(description: "creating topic \(topic.name): error \(topic.errorCode) \(topic.errorMessage ?? "")")
        }
        _ = try await layout(name, refresh: true)
    }

    /// A topic's config value, from DescribeConfigs (nil: not set anywhere).
    func topicConfig(_ topic: String, _ name: String) async throws -> String? {
        let connection = try await connection(bootstrap)
        let request = DescribeConfigsRequest(resources: [.init(type: 2, name: topic, keys: [name])])
        var reader = try await connection.request(.describeConfigs, version: 3) { request.encode(&$0, version: 3) }
        guard let result = try DescribeConfigsResponse.decode(&reader, version: 3).results.first else {
            throw BrokerRefusal(description: "an empty DescribeConfigs answer for \(topic)")
        }
        guard result.errorCode == 0 else { throw BrokerRefusal(description: "describing \(topic): error \(result.errorCode) \(result.errorMessage ?? "")") }
        return result.configs.first { $0.name == name }?.value
    }

    /// Sets one config of a topic (IncrementalAlterConfigs).
    func setTopicConfig(_ topic: String, _ name: String, _ value: String) async throws {
        let connection = try await connection(bootstrap)
        let request = AlterConfigsRequest(resources: [.init(type: 2, name: topic, changes: [.init(name: name, value: value, operation: .set)])], incremental: true)
        var reader = try await connection.request(.incrementalAlterConfigs, version: 0) { request.encode(&$0, version: 0) }
        if let refused = try AlterConfigsResponse.decode(&reader, version: 0).results.first(where: { $0.errorCode != 0 }) {
            throw BrokerRefusal(description: "setting \(name) of \(topic): error \(refused.errorCode) \(refused.errorMessage ?? "")")
        }
    }

    /// Each partition's leader, from Metadata; retried briefly while a new topic's leaders are chosen.
    func layout(_ topic: String, refresh: Bool = false) async throws -> [Int32: String] {
        if !refresh, let known = layouts[topic] { return known }
        do {
            return try await askLayout(topic)
        } catch let refusal as BrokerRefusal {
            throw refusal
        } catch {
            // The bootstrap connection broke (the broker restarted or died):
            // next time open one, to the next broker listed.
            forget(bootstrap)
            bootstrapIndex += 1
            throw error
        }
    }

    private func askLayout(_ topic: String) async throws -> [Int32: String] {
        guard let leaders = try await connection(bootstrap).partitionLeaders(of: topic) else {
            throw BrokerRefusal(description: "topic \(topic) has no leaders")
        }
        layouts[topic] = leaders
        return leaders
    }

    func partitionCount(_ topic: String) async throws -> Int32 {
        Int32(try await layout(topic).count)
    }

    /// Appends one record, acknowledged by every in-sync replica; returns
    /// where it landed. Keyed records go where Kafka's default partitioner
    /// puts them, so a Kafka client keying by conversation agrees.
    ///
    /// Records for a broker that already has `producesInFlightMax` Produce
    /// requests unanswered wait and go together in the next one, as a Kafka
    /// producer batches: one request, one store write and one answer for
    /// many sends instead of one each (with twenty rooms sending at once the
    /// broker's per-request work was most of its CPU). A record waits no
    /// longer than an answer's round trip, which under that load it would
    /// spend waiting for the broker's next sync anyway; a lone sender's
    /// record goes at once. Whatever such a request could not place (a
    /// broken connection, a moved leader, any refusal) is sent again alone
    /// below.
    /// `partitionKey` chooses the partition when it is not the key itself
    /// (a membership keyed by room and member goes where the room's messages do).
    func produce(topic: String, key: [UInt8], partitionKey: [UInt8]? = nil, value: [UInt8]?, headers: [RecordHeader] = [], timestamp: Int64) async throws -> (partition: Int32, offset: Int64) {
        if let leaders = layouts[topic], !leaders.isEmpty {
            let partition = KafkaPartitioner.partition(forKey: partitionKey ?? key, partitionCount: Int32(leaders.count))
            if let address = leaders[partition], connections[address] != nil {
                let record = QueuedRecord(topic: topic, partition: partition, key: key, value: value, headers: headers, timestamp: timestamp)
                if let offset = await coalesced(record, to: address) { return (partition, offset) }
            }
        }
        return try await produceAlone(topic: topic, key: key, partitionKey: partitionKey ?? key, value: value, headers: headers, timestamp: timestamp)
    }

    /// Unanswered Produce requests per broker, past which records wait.
    static let producesInFlightMax = 2
    /// At most this many records, or bytes of keys, values and headers, in
    /// one coalesced request: well inside a topic's 1 MiB batch limit.
    static let coalescedRecordsMax = 500
    static let coalescedBytesMax = 512 << 10

    private struct QueuedRecord: Sendable {
        var topic: String
        var partition: Int32
        var key: [UInt8]
        var value: [UInt8]?
        var headers: [RecordHeader]
        var timestamp: Int64

        /// What the record adds to a batch, near enough (a record's own framing is a few bytes more).
        var bytesCount: Int {
            key.count + (value?.count ?? 0) + headers.reduce(0) { $0 + $1.key.count + ($1.value?.count ?? 0) } + 32
        }
    }

    /// One broker's Produce requests in flight and the records waiting for the next.
    private struct ProduceQueue {
        var inFlight = 0
        /// Each waiting record and who waits for its offset (nil: retry alone).
        var waiting: [(record: QueuedRecord, answer: CheckedContinuation<Int64?, Never>)] = []
    }

    private var produceQueues: [String: ProduceQueue] = [:]

    /// The record's offset through a (possibly shared) request to `address`;
    /// nil when it should be retried alone.
    private func coalesced(_ record: QueuedRecord, to address: String) async -> Int64? {
        if produceQueues[address, default: ProduceQueue()].inFlight >= Self.producesInFlightMax {
            return await withCheckedContinuation { answer in
                produceQueues[address, default: ProduceQueue()].waiting.append((record, answer))
            }
        }
        produceQueues[address, default: ProduceQueue()].inFlight += 1
        let offset = await sendTogether([record], to: address)[0]
        finishedRequest(to: address)
        return offset
    }

    /// A request to `address` was answered: what waits goes next, from a
    /// task of its own so the caller's answer is not held up by it.
    private func finishedRequest(to address: String) {
        produceQueues[address]?.inFlight -= 1
        guard let queue = produceQueues[address], !queue.waiting.isEmpty, queue.inFlight < Self.producesInFlightMax else { return }
        produceQueues[address]!.inFlight += 1
        Task { await self.flushWaiting(to: address) }
    }

    private func flushWaiting(to address: String) async {
        while true {
            var taken: [(record: QueuedRecord, answer: CheckedContinuation<Int64?, Never>)] = []
            var bytes = 0
            while let next = produceQueues[address]?.waiting.first, taken.count < Self.coalescedRecordsMax,
                  taken.isEmpty || bytes + next.record.bytesCount <= Self.coalescedBytesMax {
                bytes += next.record.bytesCount
                taken.append(produceQueues[address]!.waiting.removeFirst())
            }
            if taken.isEmpty { break }
            let offsets = await sendTogether(taken.map(\.record), to: address)
            for (waiter, offset) in zip(taken, offsets) { waiter.answer.resume(returning: offset) }
        }
        produceQueues[address]?.inFlight -= 1
    }

    /// One Produce request carrying `records` (one batch per partition, in
    /// the order given); each record's offset, or nil where it should be
    /// sent again alone.
    private func sendTogether(_ records: [QueuedRecord], to address: String) async -> [Int64?] {
        // A batch per (topic, partition), and each record's place in its batch.
        var batches: [String: [Int32: RecordBatchBuilder]] = [:]
        var indexInBatch = [Int](repeating: 0, count: records.count)
        for (position, record) in records.enumerated() {
            var builder = batches[record.topic, default: [:]].removeValue(forKey: record.partition) ?? RecordBatchBuilder()
            indexInBatch[position] = builder.recordsCount
            builder.append(key: record.key, value: record.value, headers: record.headers, timestamp: record.timestamp)
            batches[record.topic, default: [:]][record.partition] = builder
        }
        let request = ProduceRequest(acks: -1, timeoutMilliseconds: 10_000, topics: batches.map { topic, partitions in
            .init(topic: topic, partitions: partitions.map { partition, builder in .init(index: partition, batch: builder.build()) })
        })
        let response: ProduceResponse
        do {
            guard let connection = connections[address] else { return records.map { _ in nil } }
            Self.produceRequests.increment()
            Self.producedRecords.increment(by: records.count)
            var reader = try await connection.request(.produce, version: Self.produceVersion) { request.encode(&$0, version: Self.produceVersion) }
            response = try ProduceResponse.decode(&reader, version: Self.produceVersion)
        } catch {
            forget(address)
            return records.map { _ in nil }
        }
        var answers: [String: [Int32: ProduceResponse.PartitionResponse]] = [:]
        for topic in response.topics {
            for partition in topic.partitions { answers[topic.name, default: [:]][partition.index] = partition }
        }
        // Any refusal sends the record again alone: leadership may have moved
        // (the slow path asks again), and a refusal of the shared batch (its
        // size, say) must not fail a record the broker takes by itself; one
        // it refuses alone too gets that refusal from the slow path.
        return records.enumerated().map { position, record in
            guard let answer = answers[record.topic]?[record.partition], answer.errorCode == 0 else { return nil }
            return answer.baseOffset + Int64(indexInBatch[position])
        }
    }

    /// Produce requests sent and records they carried: their ratio is how
    /// many sends one request carries.
    static let produceRequests = Counter(label: "postduif_gateway_produce_requests_total")
    static let producedRecords = Counter(label: "postduif_gateway_produced_records_total")

    static let retriableProduceErrors: [ErrorCode] = [.notLeaderOrFollower, .leaderNotAvailable, .notEnoughReplicas, .requestTimedOut, .unknownTopicOrPartition]

    /// One record in a request of its own, asked again while leadership
    /// settles or after a broken connection.
    private func produceAlone(topic: String, key: [UInt8], partitionKey: [UInt8], value: [UInt8]?, headers: [RecordHeader], timestamp: Int64) async throws -> (partition: Int32, offset: Int64) {
        var builder = RecordBatchBuilder()
        builder.append(key: key, value: value, headers: headers, timestamp: timestamp)
        let batch = builder.build()
        var lastError = ""
        for attempt in 0..<20 {
            let leaders = try await layout(topic, refresh: attempt > 0)
            let partition = KafkaPartitioner.partition(forKey: partitionKey, partitionCount: Int32(leaders.count))
            guard let address = leaders[partition] else { throw BrokerRefusal(description: "no leader for \(topic)/\(partition)") }
            do {
                let connection = try await connection(address)
                let request = ProduceRequest(acks: -1, timeoutMilliseconds: 10_000, topics: [.init(topic: topic, partitions: [.init(index: partition, batch: batch)])])
                Self.produceRequests.increment()
                Self.producedRecords.increment()
                var reader = try await connection.request(.produce, version: Self.produceVersion) { request.encode(&$0, version: Self.produceVersion) }
                let response = try ProduceResponse.decode(&reader, version: Self.produceVersion)
                guard let answer = response.topics.first?.partitions.first else { throw BrokerRefusal(description: "empty produce answer") }
                if answer.errorCode == 0 { return (partition, answer.baseOffset) }
                lastError = "error \(answer.errorCode) \(answer.errorMessage ?? "")"
                // Leadership moved or replicas are catching up: ask again.
                guard Self.retriableProduceErrors.contains(where: { $0.rawValue == answer.errorCode }) else { break }
            } catch let refusal as BrokerRefusal {
                throw refusal
            } catch {
                lastError = "\(error)"
                forget(address)
            }
            try await Task.sleep(for: .milliseconds(100 * (attempt + 1)))
        }
        throw BrokerRefusal(description: "producing to \(topic): \(lastError)")
    }

    /// A page of one conversation, from the partition leader's index.
    func history(topic: String, conversation: [UInt8], position: ConversationHistoryRequest.Position, limit: Int32, maxOffset: Int64 = -1) async throws -> ConversationHistoryResponse {
        for attempt in 0..<10 {
            let leaders = try await layout(topic, refresh: attempt > 0)
            let partition = KafkaPartitioner.partition(forKey: conversation, partitionCount: Int32(leaders.count))
            guard let address = leaders[partition] else { throw BrokerRefusal(description: "no leader for \(topic)/\(partition)") }
            do {
                let connection = try await connection(address)
                let request = ConversationHistoryRequest(topic: topic, partition: partition, conversation: conversation, position: position, limit: limit, maxOffset: maxOffset)
                var reader = try await connection.request(extensionKey: ChatApiKey.conversationHistory.rawValue, version: 0) { request.encode(&$0, version: 0) }
                let response = try ConversationHistoryResponse.decode(&reader, version: 0)
                if response.errorCode == 0 { return response }
                guard response.errorCode == ErrorCode.notLeaderOrFollower.rawValue else {
                    throw BrokerRefusal(description: "history of \(topic): error \(response.errorCode)")
                }
            } catch let refusal as BrokerRefusal {
                throw refusal
            } catch {
                forget(address)
            }
            try await Task.sleep(for: .milliseconds(100 * (attempt + 1)))
        }
        throw BrokerRefusal(description: "history of \(topic): no leader answered")
    }

    /// A partition's first offset (`earliest`) or next one, from its leader,
    /// asked again while leadership settles: a topic just made has leaders
    /// on record that do not lead it yet and refuse (a gateway starting with
    /// a new cluster exited on that).
    func offset(topic: String, partition: Int32, earliest: Bool) async throws -> Int64 {
        var lastError: any Error = BrokerRefusal(description: "no leader for \(topic)/\(partition)")
        for attempt in 0..<20 {
            do {
                let connection = try await open(try await leader(topic: topic, partition: partition, refresh: attempt > 0))
                defer { Task { await connection.close() } }
                return try await PartitionTail(topic: topic, partition: partition, connection: connection).offset(earliest: earliest)
            } catch {
                lastError = error
            }
            try await Task.sleep(for: .milliseconds(100 * (attempt + 1)))
        }
        throw lastError
    }

    /// The values of the records at these partitions and offsets of
    /// `topic`, in order (nil where a record is no longer held), read from
    /// each partition's leader on a connection of their own; one fetch
    /// usually brings the next records too.
    func values(topic: String, at positions: [(partition: Int32, offset: Int64)]) async throws -> [[UInt8]?] {
        var connections: [Int32: KafkaClientConnection] = [:]
        var fetched: [Int32: [Int64: [UInt8]]] = [:]
        var answer: [[UInt8]?] = []
        do {
            for (partition, offset) in positions {
                if fetched[partition]?[offset] == nil {
                    if connections[partition] == nil {
                        connections[partition] = try await open(try await leader(topic: topic, partition: partition, refresh: false))
                    }
                    let tail = PartitionTail(topic: topic, partition: partition, connection: connections[partition]!)
                    let (records, _, _) = try await tail.fetch(from: offset, maxWaitMilliseconds: 0)
                    for record in records { fetched[partition, default: [:]][record.offset] = record.value ?? [] }
                }
                answer.append(fetched[partition]?.removeValue(forKey: offset))
            }
        } catch {
            for connection in connections.values { await connection.close() }
            throw error
        }
        for connection in connections.values { await connection.close() }
        return answer
    }

    /// The leader's address for a partition, for a tail's own connection.
    func leader(topic: String, partition: Int32, refresh: Bool) async throws -> String {
        guard let address = try await layout(topic, refresh: refresh)[partition] else {
            throw BrokerRefusal(description: "no leader for \(topic)/\(partition)")
        }
        return address
    }
}

/// A long-polling reader of one partition on a connection of its own.
struct PartitionTail {
    let topic: String
    let partition: Int32
    let connection: KafkaClientConnection

    /// The first offset still held (`earliest`) or the next to be written.
    func offset(earliest: Bool) async throws -> Int64 {
        var reader = try await connection.request(.listOffsets, version: 2) { writer in
            ListOffsetsRequest(topics: [.init(name: topic, partitions: [.init(index: partition, timestamp: earliest ? -2 : -1)])]).encode(&writer, version: 2)
        }
        guard let answer = try ListOffsetsResponse.decode(&reader, version: 2).topics.first?.partitions.first else {
            throw BrokerRefusal(description: "no offsets for \(topic)/\(partition)")
        }
        guard answer.errorCode == 0 else {
            throw BrokerRefusal(description: "no offsets for \(topic)/\(partition): error \(answer.errorCode)")
        }
        return answer.offset
    }

    /// Committed records from `offset`, waiting up to `maxWait` for some.
    func fetch(from offset: Int64, maxWaitMilliseconds: Int32) async throws -> (records: [StoredRecord], next: Int64, highWatermark: Int64) {
        let request = FetchRequest(maxWaitMilliseconds: maxWaitMilliseconds, minBytes: 1, maxBytes: 16 << 20,
                                   topics: [.init(name: topic, partitions: [.init(index: partition, fetchOffset: offset, partitionBytesMax: 4 << 20)])])
        var reader = try await connection.request(.fetch, version: BrokerLink.fetchVersion) { request.encode(&$0, version: BrokerLink.fetchVersion) }
        let response = try FetchResponse.decode(&reader, version: BrokerLink.fetchVersion)
        guard let answer = response.topics.first?.partitions.first else { return ([], offset, -1) }
        guard answer.errorCode == 0 else {
            throw BrokerRefusal(description: "fetch from \(topic)/\(partition): error \(answer.errorCode)")
        }
        var records: [StoredRecord] = []
        var next = offset
        for blob in answer.batches {
            for batch in try RecordBatch.split(stored: blob) where batch.lastOffset >= next {
                for record in try batch.records() {
                    let position = batch.baseOffset + Int64(record.offsetDelta)
                    guard position >= next else { continue }
                    records.append(StoredRecord(offset: position, timestamp: batch.baseTimestamp + record.timestampDelta,
                                                key: record.key ?? [], value: record.value, headers: record.headers))
                }
                next = batch.nextOffset
            }
        }
        return (records, next, answer.highWatermark)
    }
}
