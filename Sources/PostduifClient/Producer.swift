import KafkaNIO
import KafkaWire

/// A record to send.
public struct ProducerRecord: Sendable {
    public var topic: String
    /// Nil: by the key's hash (Kafka's murmur2, as the Java client and
    /// librdkafka's `murmur2_random`), or spread when there is no key.
    public var partition: Int32?
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [RecordHeader]
    /// Milliseconds since 1970; nil: when the batch is built.
    public var timestamp: Int64?

    public init(topic: String, partition: Int32? = nil, key: [UInt8]? = nil, value: [UInt8]?, headers: [RecordHeader] = [], timestamp: Int64? = nil) {
        self.topic = topic
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp
    }
}

/// Where an acknowledged record was written.
public struct RecordMetadata: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }
}

/// A producer: records sent to one partition while a request to it is
/// unanswered wait and then go together in the next batch (batching
/// without a linger timer); with idempotence on, each batch carries the
/// producer id and its partition's sequence, so a batch sent again after
/// a lost answer is stored once; retriable refusals (leadership moving, a
/// topic just made) are sent again up to the client's `retries`.
///
/// No task of its own: the caller that finds a partition idle sends its
/// batch; when it is answered, the first record that queued meanwhile
/// is woken to send the next batch for all that queued.
public actor Producer {
    public let client: KafkaClient
    public let acks: Int16
    public let idempotent: Bool
    /// The most a batch carries; more records wait for the next one.
    public let batchBytesMax: Int
    private let clock: @Sendable () -> Int64
    /// Told the number of records of each Produce request as it leaves
    /// (records per request is how well sends are batched).
    private let onRequest: (@Sendable (_ records: Int) -> Void)?

    private enum Turn {
        case done(Result<RecordMetadata, any Error>)
        case send
    }

    private struct Waiting {
        var record: ProducerRecord
        var continuation: CheckedContinuation<Turn, Never>
    }

    private struct PartitionQueue {
        var waiting: [Waiting] = []
        var sending = false
        var nextSequence: Int32 = 0
    }

    private var queues: [TopicPartition: PartitionQueue] = [:]
    private var producerID: (id: Int64, epoch: Int16)?
    private var spread: [String: Int32] = [:]

    static let produceVersion: Int16 = 7
    static let initProducerIdVersion: Int16 = 1

    /// `clock`: the wall clock in milliseconds, for record timestamps.
    public init(client: KafkaClient, acks: Int16 = -1, idempotent: Bool = true, batchBytesMax: Int = 1 << 20,
                clock: @escaping @Sendable () -> Int64, onRequest: (@Sendable (_ records: Int) -> Void)? = nil) {
        self.client = client
        self.acks = idempotent ? -1 : acks
        self.idempotent = idempotent
        self.batchBytesMax = batchBytesMax
        self.clock = clock
        self.onRequest = onRequest
    }

    /// Sends one record; returns once it is acknowledged.
    public func send(_ record: ProducerRecord) async throws -> RecordMetadata {
        let place = TopicPartition(record.topic, try await choosePartition(record))
        if queues[place]?.sending == true {
            let turn = await withCheckedContinuation { continuation in
                queues[place, default: PartitionQueue()].waiting.append(Waiting(record: record, continuation: continuation))
            }
            if case .done(let result) = turn { return try result.get() }
            // Woken to send: this record is first among those waiting.
            var batch = takeBatch(place)
            let results = await sendBatch(place, batch.map(\.record))
            let mine = results[0]
            // The first entry is this caller's own, already resumed.
            batch.removeFirst()
            finish(place, batch, results.dropFirst())
            return try mine.get()
        }
        queues[place, default: PartitionQueue()].sending = true
        let mine = await sendBatch(place, [record])[0]
        finish(place, [], [])
        return try mine.get()
    }

    /// Answers the rest of a sent batch, then wakes the next sender.
    private func finish(_ place: TopicPartition, _ batch: [Waiting], _ results: ArraySlice<Result<RecordMetadata, any Error>>) {
        for (entry, result) in zip(batch, results) { entry.continuation.resume(returning: .done(result)) }
        if let next = queues[place]?.waiting.first {
            next.continuation.resume(returning: .send)
        } else {
            queues[place]?.sending = false
        }
    }

    /// Those waiting, up to `batchBytesMax`, the woken one first.
    private func takeBatch(_ place: TopicPartition) -> [Waiting] {
        guard var queue = queues[place] else { return [] }
        var bytes = 0
        var count = 0
        for entry in queue.waiting {
            let size = (entry.record.key?.count ?? 0) + (entry.record.value?.count ?? 0) + 32
            if count > 0 && bytes + size > batchBytesMax { break }
            bytes += size
            count += 1
        }
        let batch = Array(queue.waiting.prefix(count))
        queue.waiting.removeFirst(count)
        queues[place] = queue
        return batch
    }

    /// Sends many records at once; each one's result in order. Without
    /// idempotence they go as one batch per partition in one Produce
    /// request per leader (the HTTP proxy's path); with it, each partition's
    /// queue orders them.
    public func send(_ records: [ProducerRecord]) async -> [Result<RecordMetadata, ClientError>] {
        guard idempotent else { return await sendTogether(records) }
        return await sendQueued(records)
    }

    private func sendTogether(_ records: [ProducerRecord]) async -> [Result<RecordMetadata, ClientError>] {
        var results = [Result<RecordMetadata, ClientError>](repeating: .failure(ClientError("not sent")), count: records.count)
        var byPartition: [TopicPartition: [Int]] = [:]
        // Each topic's partition count asked once per call, not per record.
        var counts: [String: Result<Int32, ClientError>] = [:]
        for (position, record) in records.enumerated() {
            if counts[record.topic] == nil {
                do {
                    counts[record.topic] = .success(try await client.partitionCount(record.topic, autoCreate: true))
                } catch {
                    counts[record.topic] = .failure((error as? ClientError) ?? ClientError("\(error)"))
                }
            }
            do {
                let partition = try choosePartition(record, count: try counts[record.topic]!.get())
                byPartition[TopicPartition(record.topic, partition), default: []].append(position)
            } catch {
                results[position] = .failure((error as? ClientError) ?? ClientError("\(error)"))
            }
        }
        let now = clock()
        var batches: [TopicPartition: (batch: [UInt8], records: Int)] = [:]
        for (place, positions) in byPartition {
            guard positions.count <= RecordBatchBuilder.recordsMax else {
                let refused = ClientError(code: ErrorCode.messageTooLarge.rawValue, "\(positions.count) records for \(place) in one call; one batch holds at most \(RecordBatchBuilder.recordsMax)")
                for position in positions { results[position] = .failure(refused) }
                continue
            }
            let capacity = positions.reduce(0) { total, position in
                let record = records[position]
                return total + RecordBatchBuilder.encodedCount(keyCount: record.key?.count, valueCount: record.value?.count, headers: record.headers)
            }
            var builder = RecordBatchBuilder(capacity: capacity)
            for position in positions {
                let record = records[position]
                builder.append(key: record.key, value: record.value, headers: record.headers, timestamp: record.timestamp ?? now)
            }
            batches[place] = (builder.build(), positions.count)
        }
        Self.record(await send(built: batches), of: byPartition, in: &results)
        return results
    }

    /// Each record's outcome from its batch's (`send(built:)`): `positions`
    /// gives, per partition, where its batch's records stand in `results`,
    /// in the batch's order; a record's offset is the batch's base plus its
    /// place in the batch.
    public static func record(_ answers: [TopicPartition: Result<Int64, ClientError>], of positions: [TopicPartition: [Int]],
                              in results: inout [Result<RecordMetadata, ClientError>]) {
        for (place, answer) in answers {
            let positions = positions[place] ?? []
            switch answer {
            case .success(let base):
                for (index, position) in positions.enumerated() {
                    // Offset -1 with acks=0, as Kafka's clients give it.
                    results[position] = .success(RecordMetadata(topic: place.topic, partition: place.partition, offset: base < 0 ? -1 : base + Int64(index)))
                }
            case .failure(let error):
                for position in positions { results[position] = .failure(error) }
            }
        }
    }

    /// Sends batches the caller built (`RecordBatchBuilder`, one per
    /// partition, with how many records each holds) in one Produce request
    /// per leader, each sent again on retriable refusals up to the client's
    /// `retries`: the HTTP proxy builds its batches straight from a
    /// request's body. Each partition's base offset (-1 with acks=0) or
    /// error. Not for an idempotent producer, whose batches carry its
    /// sequence numbers.
    public func send(built batches: [TopicPartition: (batch: [UInt8], records: Int)]) async -> [TopicPartition: Result<Int64, ClientError>] {
        precondition(!idempotent, "an idempotent producer numbers its own batches")
        var outcome: [TopicPartition: Result<Int64, ClientError>] = [:]
        var pending = Set(batches.keys)
        var lastError: [TopicPartition: ClientError] = [:]
        let client = self.client
        let acks = self.acks
        let onRequest = self.onRequest
        for attempt in 0...client.configuration.retries where !pending.isEmpty {
            if attempt > 0 { try? await Task.sleep(for: .milliseconds(min(50 * attempt, 1_000))) }
            var byLeader: [String: [TopicPartition]] = [:]
            for place in pending {
                do {
                    byLeader[try await client.leader(place, refresh: attempt > 0), default: []].append(place)
                } catch let error as ClientError {
                    lastError[place] = error
                } catch {
                    lastError[place] = ClientError("\(error)")
                }
            }
            let answers = await withTaskGroup(of: [(TopicPartition, Result<Int64, ClientError>)].self) { group in
                for (address, places) in byLeader {
                    let topics = Dictionary(grouping: places, by: \.topic).map { topic, parts in
                        ProduceRequest.TopicData(topic: topic, partitions: parts.map { ProduceRequest.PartitionData(index: $0.partition, batch: batches[$0]?.batch) })
                    }
                    let request = ProduceRequest(acks: acks, timeoutMilliseconds: 30_000, topics: topics)
                    onRequest?(places.reduce(0) { $0 + (batches[$1]?.records ?? 0) })
                    group.addTask {
                        do {
                            if acks == 0 {
                                // No answer comes: written is all that is known.
                                try await client.send(address, .produce, version: Self.produceVersion) { request.encode(&$0, version: Self.produceVersion) }
                                return places.map { ($0, .success(-1)) }
                            }
                            let response = try await client.call(address, .produce, version: Self.produceVersion, { request.encode(&$0, version: Self.produceVersion) },
                                                                 decode: { try ProduceResponse.decode(&$0, version: Self.produceVersion) })
                            var found: [(TopicPartition, Result<Int64, ClientError>)] = []
                            for topic in response.topics {
                                for answer in topic.partitions {
                                    let place = TopicPartition(topic.name, answer.index)
                                    found.append((place, answer.errorCode == 0 ? .success(answer.baseOffset)
                                        : .failure(ClientError(code: answer.errorCode, "producing to \(place)\(answer.errorMessage.map { ": \($0)" } ?? "")"))))
                                }
                            }
                            return found
                        } catch {
                            let failure = (error as? ClientError) ?? ClientError("\(error)")
                            return places.map { ($0, .failure(failure)) }
                        }
                    }
                }
                var all: [(TopicPartition, Result<Int64, ClientError>)] = []
                for await found in group { all += found }
                return all
            }
            for (place, answer) in answers {
                switch answer {
                case .success:
                    pending.remove(place)
                    outcome[place] = answer
                case .failure(let error):
                    lastError[place] = error
                    if !error.isRetriable { pending.remove(place) }
                }
            }
            for place in pending.filter({ lastError[$0]?.isRetriable == false }) { pending.remove(place) }
        }
        for place in batches.keys where outcome[place] == nil {
            outcome[place] = .failure(lastError[place] ?? ClientError("not sent"))
        }
        return outcome
    }

    private func sendQueued(_ records: [ProducerRecord]) async -> [Result<RecordMetadata, ClientError>] {
        await withTaskGroup(of: (Int, Result<RecordMetadata, ClientError>).self) { group in
            for (position, record) in records.enumerated() {
                group.addTask {
                    do {
                        return (position, .success(try await self.send(record)))
                    } catch let error as ClientError {
                        return (position, .failure(error))
                    } catch {
                        return (position, .failure(ClientError("\(error)")))
                    }
                }
            }
            var results = [Result<RecordMetadata, ClientError>](repeating: .failure(ClientError("not sent")), count: records.count)
            for await (position, result) in group { results[position] = result }
            return results
        }
    }

    private func choosePartition(_ record: ProducerRecord) async throws -> Int32 {
        try choosePartition(record, count: try await client.partitionCount(record.topic, autoCreate: true))
    }

    private func choosePartition(_ record: ProducerRecord, count: Int32) throws -> Int32 {
        var next = spread[record.topic, default: 0]
        defer { spread[record.topic] = next }
        return try Self.partition(of: record, among: count, next: &next)
    }

    /// The partition `send` chooses for a record of a topic with `count`
    /// partitions: its own (checked), its key's hash, or `next` in turn
    /// (then moved on). For callers that build their batches (`send(built:)`).
    public static func partition(of record: ProducerRecord, among count: Int32, next: inout Int32) throws -> Int32 {
        if let partition = record.partition {
            guard partition >= 0, partition < count else {
                throw ClientError(code: ErrorCode.unknownTopicOrPartition.rawValue, "\(record.topic) has no partition \(partition)")
            }
            return partition
        }
        if let key = record.key { return KafkaPartitioner.partition(forKey: key, partitionCount: count) }
        let chosen = next % count
        next = (next + 1) % count
        return chosen
    }

    private func ensureProducerID() async throws -> (id: Int64, epoch: Int16) {
        if let producerID { return producerID }
        let request = InitProducerIdRequest(transactionalID: nil, transactionTimeoutMilliseconds: 60_000)
        let response = try await client.anyBroker { address in
            try await client.call(address, .initProducerId, version: Self.initProducerIdVersion, { request.encode(&$0, version: Self.initProducerIdVersion) },
                                  decode: { try InitProducerIdResponse.decode(&$0, version: Self.initProducerIdVersion) })
        }
        guard response.errorCode == 0 else { throw ClientError(code: response.errorCode, "InitProducerId") }
        let made = (response.producerID, response.producerEpoch)
        producerID = made
        return made
    }

    /// One batch to its partition's leader, sent again on retriable
    /// refusals with the same sequence.
    private func sendBatch(_ place: TopicPartition, _ records: [ProducerRecord]) async -> [Result<RecordMetadata, any Error>] {
        do {
            var builder = RecordBatchBuilder()
            if idempotent {
                let (id, epoch) = try await ensureProducerID()
                builder.producerID = id
                builder.producerEpoch = epoch
                let sequence = queues[place]?.nextSequence ?? 0
                builder.baseSequence = sequence
                queues[place]?.nextSequence = sequence &+ Int32(records.count)
            }
            let now = clock()
            for record in records {
                builder.append(key: record.key, value: record.value, headers: record.headers, timestamp: record.timestamp ?? now)
            }
            let batch = builder.build()
            let request = ProduceRequest(acks: acks, timeoutMilliseconds: 30_000,
                                         topics: [.init(topic: place.topic, partitions: [.init(index: place.partition, batch: batch)])])
            var lastError = ClientError("not sent")
            for attempt in 0...client.configuration.retries {
                do {
                    let address = try await client.leader(place, refresh: attempt > 0)
                    onRequest?(records.count)
                    let response = try await client.call(address, .produce, version: Self.produceVersion, { request.encode(&$0, version: Self.produceVersion) },
                                                         decode: { try ProduceResponse.decode(&$0, version: Self.produceVersion) })
                    guard let answer = response.topics.first?.partitions.first else { throw ClientError("an empty Produce answer") }
                    if answer.errorCode == 0 || answer.errorCode == ErrorCode.duplicateSequenceNumber.rawValue {
                        return records.indices.map { .success(RecordMetadata(topic: place.topic, partition: place.partition, offset: answer.baseOffset + Int64($0))) }
                    }
                    throw ClientError(code: answer.errorCode, "producing to \(place)\(answer.errorMessage.map { ": \($0)" } ?? "")")
                } catch let error as ClientError {
                    lastError = error
                    guard error.isRetriable else { break }
                }
                try await Task.sleep(for: .milliseconds(min(50 * (attempt + 1), 1_000)))
            }
            // A batch given up leaves a gap in the sequence: the next batch
            // starts a new producer id, as a restarted producer would.
            if idempotent { resetSequences() }
            return records.map { _ in .failure(lastError) }
        } catch {
            if idempotent { resetSequences() }
            return records.map { _ in .failure(error) }
        }
    }

    private func resetSequences() {
        producerID = nil
        for place in queues.keys { queues[place]?.nextSequence = 0 }
    }
}

extension Result {
    var isFailure: Bool {
        if case .failure = self { return true }
        return false
    }
}
