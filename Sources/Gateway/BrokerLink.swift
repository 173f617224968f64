import ChatWire
import Foundation
import KafkaNIO
import KafkaWire
import Logging
import Metrics
import NIOSSL
import PostduifClient

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

/// The gateway's way to the broker: Kafka's protocol through PostduifClient
/// (the connections, leaders and admin calls of one `KafkaClient`, and its
/// `Producer`), plus the ConversationHistory extension. Requests go to each
/// partition's leader on the client's shared connections; long-polling
/// tails take connections of their own (`open`), because a broker answers
/// one connection's requests in order and a waiting Fetch would hold up
/// every produce.
struct BrokerLink: Sendable {
    let client: KafkaClient
    /// Idempotent, so a send retried after a lost answer is stored once,
    /// and batching: sends to a partition while a request to it is out go
    /// together in the next (ADR 0015).
    let producer: Producer
    let logger: Logger

    /// `bootstrap`: brokers to ask for metadata, comma-separated; the next
    /// is tried when one fails, so the gateway survives the loss of any
    /// one. `credentials`: SASL PLAIN for a broker that requires it; `tls`
    /// for listeners that ask for it; `local`: the broker of this process,
    /// if the gateway runs inside one (asked without a socket).
    init(bootstrap: String, logger: Logger, credentials: (user: String, password: String)? = nil, tls: NIOSSLContext? = nil, local: (any KafkaLocalBroker)? = nil) {
        let listed = bootstrap.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let security = KafkaClientSecurity(tls: tls, sasl: credentials.map { SaslCredentials(user: $0.user, password: $0.password) })
        client = KafkaClient(ClientConfiguration(bootstrap: listed.isEmpty ? [bootstrap] : listed, clientID: "postduif-gateway", security: security, local: local))
        // A shared batch stays well inside a topic's 1 MiB batch limit, so
        // its size never refuses a record the broker would take alone.
        producer = Producer(client: client, idempotent: true, batchBytesMax: 512 << 10, clock: { MatrixAPI.now }, onRequest: { records in
            Self.produceRequests.increment()
            Self.producedRecords.increment(by: records)
        })
        self.logger = logger
    }

    /// A new connection of the caller's own to a broker.
    func open(_ address: String) async throws -> KafkaClientConnection {
        try await refusing { try await client.openConnection(address) }
    }

    /// PostduifClient's refusals as the gateway's own (answered as a store
    /// that is unavailable).
    private func refusing<Answer>(_ body: () async throws -> Answer) async throws -> Answer {
        do {
            return try await body()
        } catch let error as ClientError {
            throw BrokerRefusal(description: error.description)
        }
    }

    /// Creates a topic unless it exists.
    func ensureTopic(_ name: String, partitions: Int32, configs: [(String, String?)] = []) async throws {
        try await refusing {
            do {
                var settings: [String: String] = [:]
                for (key, value) in configs { settings[key] = value }
                try await Admin(client: client).createTopic(name, partitions: partitions, configs: settings)
            } catch let error as ClientError where error.errorCode == .topicAlreadyExists {}
            _ = try await client.leaders(of: name, refresh: true)
        }
    }

    /// A topic's config value, from DescribeConfigs (nil: not set anywhere).
    func topicConfig(_ topic: String, _ name: String) async throws -> String? {
        try await refusing { try await Admin(client: client).topicConfigs(topic)[name]?.value }
    }

    /// Sets one config of a topic (IncrementalAlterConfigs).
    func setTopicConfig(_ topic: String, _ name: String, _ value: String) async throws {
        try await refusing { try await Admin(client: client).alterTopicConfigs(topic, set: [name: value]) }
    }

    /// Each partition's leader, from Metadata; retried briefly while a new topic's leaders are chosen.
    func layout(_ topic: String, refresh: Bool = false) async throws -> [Int32: String] {
        try await refusing { try await client.leaders(of: topic, refresh: refresh) }
    }

    func partitionCount(_ topic: String) async throws -> Int32 {
        try await refusing { try await client.partitionCount(topic) }
    }

    /// Appends one record, acknowledged by every in-sync replica; returns
    /// where it landed. Keyed records go where Kafka's default partitioner
    /// puts them, so a Kafka client keying by conversation agrees;
    /// `partitionKey` chooses the partition when it is not the key itself
    /// (a membership keyed by room and member goes where the room's
    /// messages do).
    func produce(topic: String, key: [UInt8], partitionKey: [UInt8]? = nil, value: [UInt8]?, headers: [RecordHeader] = [], timestamp: Int64) async throws -> (partition: Int32, offset: Int64) {
        try await refusing {
            let partition = KafkaPartitioner.partition(forKey: partitionKey ?? key, partitionCount: try await client.partitionCount(topic))
            let written = try await producer.send(ProducerRecord(topic: topic, partition: partition, key: key, value: value, headers: headers, timestamp: timestamp))
            return (written.partition, written.offset)
        }
    }

    /// Produce requests sent and records they carried: their ratio is how
    /// many sends one request carries.
    static let produceRequests = Counter(label: "postduif_gateway_produce_requests_total")
    static let producedRecords = Counter(label: "postduif_gateway_produced_records_total")

    /// A page of one conversation, from the partition leader's index.
    func history(topic: String, conversation: [UInt8], position: ConversationHistoryRequest.Position, limit: Int32, maxOffset: Int64 = -1) async throws -> ConversationHistoryResponse {
        for attempt in 0..<10 {
            let leaders = try await layout(topic, refresh: attempt > 0)
            let partition = KafkaPartitioner.partition(forKey: conversation, partitionCount: try await refusing { try await client.partitionCount(topic) })
            guard let address = leaders[partition] else { throw BrokerRefusal(description: "no leader for \(topic)/\(partition)") }
            do {
                let connection = try await client.connection(address)
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
                await client.forget(address)
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
    static let fetchVersion: Int16 = 11
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

    /// Committed records from `offset`, waiting up to `maxWait` for some;
    /// `bytesMax` of batches at most (past the first), their CRC-32C checked
    /// when `checksums`.
    func fetch(from offset: Int64, maxWaitMilliseconds: Int32, bytesMax: Int32 = 4 << 20, checksums: Bool = false) async throws -> (records: [StoredRecord], next: Int64, highWatermark: Int64) {
        let request = FetchRequest(maxWaitMilliseconds: maxWaitMilliseconds, minBytes: 1, maxBytes: 16 << 20,
                                   topics: [.init(name: topic, partitions: [.init(index: partition, fetchOffset: offset, partitionBytesMax: bytesMax)])])
        var reader = try await connection.request(.fetch, version: Self.fetchVersion) { request.encode(&$0, version: Self.fetchVersion) }
        let response = try FetchResponse.decode(&reader, version: Self.fetchVersion)
        guard let answer = response.topics.first?.partitions.first else { return ([], offset, -1) }
        guard answer.errorCode == 0 else {
            throw BrokerRefusal(description: "fetch from \(topic)/\(partition): error \(answer.errorCode)")
        }
        var records: [StoredRecord] = []
        var next = offset
        for blob in answer.batches {
            next = try StoredRecord.append(of: RecordBatch.split(stored: blob, checksums: checksums), from: next, to: &records)
        }
        return (records, next, answer.highWatermark)
    }
}

extension StoredRecord {
    /// Appends the records of `batches` at `offset` and after to `records`;
    /// returns the offset after the last batch (`offset` if none reach it).
    static func append(of batches: [RecordBatch], from offset: Int64, to records: inout [StoredRecord]) throws(RecordBatchError) -> Int64 {
        var next = offset
        for batch in batches where batch.lastOffset >= next {
            for record in try batch.records() {
                let position = batch.baseOffset + Int64(record.offsetDelta)
                guard position >= next else { continue }
                records.append(StoredRecord(offset: position, timestamp: batch.baseTimestamp + record.timestampDelta,
                                            key: record.key ?? [], value: record.value, headers: record.headers))
            }
            next = batch.nextOffset
        }
        return next
    }
}
