import Foundation
import HTTPTypes
import Hummingbird
import KafkaWire
import NIOCore
import PostduifClient

extension HTTPProxy {
    func router() -> Router<ProxyRequestContext> {
        let router = Router(context: ProxyRequestContext.self)
        router.get("/") { _, _ in Self.json([String: Any]()) }
        router.get("/brokers") { request, context in
            await self.answer(request, context) { caller in
                Self.json(["brokers": try await Admin(client: caller.client).brokers()])
            }
        }
        router.get("/topics") { request, context in
            await self.answer(request, context) { caller in
                Self.json(try await Admin(client: caller.client).topics().map(\.name).filter { !$0.hasPrefix("__") })
            }
        }
        router.get("/topics/:topic") { request, context in
            await self.answer(request, context) { caller in
                let topic = try context.parameters.require("topic")
                let description = try await self.describe(topic, caller)
                var answer: [String: Any] = ["name": topic, "partitions": description.partitions.map(Self.partitionJSON)]
                // Configs where the caller may describe them (DescribeConfigs
                // on the topic); left out, not made up, where not.
                if let configs = try? await Admin(client: caller.client).topicConfigs(topic) {
                    answer["configs"] = configs.mapValues { $0.value as Any? ?? NSNull() }
                }
                return Self.json(answer)
            }
        }
        router.get("/topics/:topic/partitions") { request, context in
            await self.answer(request, context) { caller in
                Self.json(try await self.describe(try context.parameters.require("topic"), caller).partitions.map(Self.partitionJSON))
            }
        }
        router.get("/topics/:topic/partitions/:partition") { request, context in
            await self.answer(request, context) { caller in
                let partition = try context.parameters.require("partition", as: Int32.self)
                guard let found = try await self.describe(try context.parameters.require("topic"), caller).partitions.first(where: { $0.index == partition }) else {
                    throw ProxyError.partitionNotFound(partition)
                }
                return Self.json(Self.partitionJSON(found))
            }
        }
        router.post("/topics/:topic") { request, context in
            await self.answer(request, context) { caller in
                try await self.produce(request, topic: try context.parameters.require("topic"), partition: nil, caller)
            }
        }
        router.post("/topics/:topic/partitions/:partition") { request, context in
            await self.answer(request, context) { caller in
                try await self.produce(request, topic: try context.parameters.require("topic"),
                                       partition: try context.parameters.require("partition", as: Int32.self), caller)
            }
        }
        router.get("/topics/:topic/events") { request, context in
            await self.answer(request, context) { caller in try await self.topicEvents(request, topic: try context.parameters.require("topic"), caller) }
        }
        // What reaches the router here was not upgraded: say why.
        router.get("/topics/:topic/ws") { request, context in
            await self.answer(request, context) { caller in
                var query: [String: String] = [:]
                for (name, value) in request.uri.queryParameters { query[String(name)] = String(value) }
                let (consumer, _) = try await self.subscription(topic: try context.parameters.require("topic"), query: query, caller)
                await consumer.close()
                throw ProxyError(code: 42601, message: "a WebSocket upgrade is needed here (Connection: Upgrade, Upgrade: websocket)")
            }
        }
        consumerRoutes(router)
        return router
    }

    func describe(_ topic: String, _ caller: Caller) async throws -> Admin.TopicDescription {
        let found = try await Admin(client: caller.client).topics([topic])
        guard let description = found.first(where: { $0.name == topic }) else { throw ProxyError.topicNotFound(topic) }
        return description
    }

    static func partitionJSON(_ partition: Admin.TopicDescription.Partition) -> [String: Any] {
        ["partition": partition.index, "leader": partition.leader,
         "replicas": partition.replicas.map { ["broker": $0, "leader": $0 == partition.leader, "in_sync": partition.inSync.contains($0)] }]
    }

    // MARK: Produce

    func produce(_ request: Request, topic: String, partition: Int32?, _ caller: Caller) async throws -> Response {
        let contentType = request.headers[.contentType]
        guard let format = ProxyMedia.format(contentType) else {
            throw ProxyError(code: 41501, message: "Content-Type \(contentType ?? "(none)") is not served: use \(ProxyMedia.jsonV2) or \(ProxyMedia.binaryV2) (schemas are not served)")
        }
        let results: [Result<RecordMetadata, ClientError>]
        if format == .binary {
            results = try await produceBinary(request, topic: topic, partition: partition, caller)
        } else {
            var records: [ProducerRecord] = []
            let body = try await Self.body(request)
            for entry in (body["records"] as? [[String: Any]]) ?? [] {
                let chosen = partition ?? (entry["partition"] as? NSNumber)?.int32Value
                records.append(ProducerRecord(topic: topic, partition: chosen, key: try format.bytes(entry["key"]), value: try format.bytes(entry["value"])))
            }
            guard !records.isEmpty else { throw ProxyError.unprocessable("the body needs a non-empty \"records\" list") }
            guard records.count <= RecordBatchBuilder.recordsMax else { throw Self.tooManyRecords(records.count) }
            try await requireTopic(topic, caller)
            let producer = Producer(client: caller.client, idempotent: false, clock: configuration.wallMilliseconds)
            results = await producer.send(records)
        }
        if let refused = results.compactMap({ result -> ClientError? in if case .failure(let error) = result { error } else { nil } }).first,
           [.topicAuthorizationFailed, .clusterAuthorizationFailed].contains(refused.errorCode) {
            throw ProxyError.kafka(refused)
        }
        // Written by hand for the same reason as the typed decoding above.
        var text = "{\"key_schema_id\":null,\"value_schema_id\":null,\"offsets\":["
        for (position, result) in results.enumerated() {
            if position > 0 { text += "," }
            switch result {
            case .success(let written):
                text += "{\"partition\":\(written.partition),\"offset\":\(written.offset),\"error_code\":null,\"error\":null}"
            case .failure(let error):
                let message = (try? JSONSerialization.data(withJSONObject: error.description, options: [.fragmentsAllowed])).map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
                text += "{\"partition\":null,\"offset\":null,\"error_code\":\(error.isRetriable ? 1 : 2),\"error\":\(message)}"
            }
        }
        text += "]}"
        return Response(status: .ok, headers: [.contentType: ProxyMedia.v2Json], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// A request's records may all go to one partition, in one batch: more
    /// than a batch holds is refused whole (a body of empty objects reaches
    /// that count in a few megabytes).
    static func tooManyRecords(_ count: Int) -> ProxyError {
        ProxyError.unprocessable("\(count) records in one request; at most \(RecordBatchBuilder.recordsMax)")
    }

    /// The topic must exist: the REST Proxy answers 404 rather than one
    /// error per record. Its partition count.
    @discardableResult
    private func requireTopic(_ topic: String, _ caller: Caller) async throws -> Int32 {
        do {
            return try await caller.client.partitionCount(topic, autoCreate: true)
        } catch let error as ClientError where error.errorCode == .unknownTopicOrPartition {
            throw ProxyError.topicNotFound(topic)
        }
    }

    /// A binary body, read in place (BinaryProduceBody: Foundation's JSON
    /// took most of a batched request's time) and written straight into
    /// record batches: each value is decoded from the body's base64 into
    /// its place in a batch, with no array of its own. A partition's
    /// records go into a batch of this request's own, or, while the
    /// caller's previous batch for that partition is being written, into
    /// the batch waiting behind it (SharedBatches).
    private func produceBinary(_ request: Request, topic: String, partition: Int32?, _ caller: Caller) async throws -> [Result<RecordMetadata, ClientError>] {
        let buffer = try await request.body.collect(upTo: 64 << 20)
        let entries: [BinaryProduceBody.Entry]
        do {
            entries = try buffer.withUnsafeReadableBytes { try BinaryProduceBody.parse($0) }
        } catch BinaryProduceBody.Failure.notBase64 {
            throw ProxyError.unprocessable("a binary key or value must be a base64 string")
        } catch {
            throw ProxyError.unprocessable("the body needs a \"records\" list of {\"key\", \"value\", \"partition\"} with base64 keys and values (\(error))")
        }
        guard !entries.isEmpty else { throw ProxyError.unprocessable("the body needs a non-empty \"records\" list") }
        guard entries.count <= RecordBatchBuilder.recordsMax else { throw Self.tooManyRecords(entries.count) }
        let count = try await requireTopic(topic, caller)
        var results = [Result<RecordMetadata, ClientError>](repeating: .failure(ClientError("not sent")), count: entries.count)
        var byPartition: [TopicPartition: [Int]] = [:]
        var next: Int32 = 0
        for (position, entry) in entries.enumerated() {
            do {
                let chosen = try Producer.partition(of: ProducerRecord(topic: topic, partition: partition ?? entry.partition, key: entry.key, value: nil), among: count, next: &next)
                byPartition[TopicPartition(topic, chosen), default: []].append(position)
            } catch {
                results[position] = .failure((error as? ClientError) ?? ClientError("\(error)"))
            }
        }
        let now = configuration.wallMilliseconds()
        // Every text was checked when parsed, so no append below fails and
        // nothing of a refused request reaches a shared batch.
        var own: [TopicPartition: [Int]] = [:]
        var leading: [TopicPartition] = []
        var waiting: [(place: TopicPartition, positions: [Int], answer: SharedBatches.Answer)] = []
        buffer.withUnsafeReadableBytes { body in
            for (place, positions) in byPartition {
                let bytes = Self.encodedCount(positions, of: entries, in: body)
                let turn = caller.batches.join(place, records: positions.count, bytes: bytes) { builder in
                    Self.append(positions, of: entries, in: body, timestamp: now, to: &builder)
                }
                switch turn {
                case .lead:
                    leading.append(place)
                    own[place] = positions
                case .alone, nil:
                    own[place] = positions
                case .wait(let answer, _):
                    waiting.append((place, positions, answer))
                }
            }
        }
        let producer = Producer(client: caller.client, idempotent: false, clock: configuration.wallMilliseconds)
        if !own.isEmpty {
            let built: [TopicPartition: (batch: [UInt8], records: Int)]
            do {
                built = try Self.batches(own, of: entries, in: buffer, timestamp: now)
            } catch {
                for place in leading { caller.batches.written(place) }
                throw error
            }
            let answers = await producer.send(built: built)
            for place in leading { caller.batches.written(place) }
            Producer.record(answers, of: own, in: &results)
        }
        var alone: [TopicPartition: [Int]] = [:]
        for (place, positions, answer) in waiting {
            let outcome = await answer.outcome
            if case .failure(let error) = outcome.offset, outcome.shared, SharedBatches.mayBeOneRequests(error) {
                alone[place] = positions
            } else {
                Producer.record([place: outcome.offset], of: [place: positions], in: &results)
            }
        }
        if !alone.isEmpty {
            // A shared batch was refused for what may be another request's
            // records: these are tried in a batch of their own.
            Producer.record(await producer.send(built: try Self.batches(alone, of: entries, in: buffer, timestamp: now)), of: alone, in: &results)
        }
        return results
    }

    private static func encodedCount(_ positions: [Int], of entries: [BinaryProduceBody.Entry], in body: UnsafeRawBufferPointer) -> Int {
        positions.reduce(0) { total, position in
            total + RecordBatchBuilder.encodedCount(keyCount: entries[position].key?.count, valueCount: entries[position].value.count(in: body))
        }
    }

    /// Appends the records at `positions`; false (with some appended) if a
    /// value did not decode, which the parser's check rules out.
    private static func append(_ positions: [Int], of entries: [BinaryProduceBody.Entry], in body: UnsafeRawBufferPointer, timestamp: Int64,
                               to builder: inout RecordBatchBuilder) -> Bool {
        for position in positions {
            let entry = entries[position]
            guard builder.append(key: entry.key, valueCount: entry.value.count(in: body), timestamp: timestamp, writeValue: { entry.value.write(in: body, to: $0) }) else {
                return false
            }
        }
        return true
    }

    /// A batch of each partition's records of its own.
    private static func batches(_ byPartition: [TopicPartition: [Int]], of entries: [BinaryProduceBody.Entry], in buffer: ByteBuffer,
                                timestamp: Int64) throws(ProxyError) -> [TopicPartition: (batch: [UInt8], records: Int)] {
        try buffer.withUnsafeReadableBytes { body throws(ProxyError) in
            var batches: [TopicPartition: (batch: [UInt8], records: Int)] = [:]
            for (place, positions) in byPartition {
                var builder = RecordBatchBuilder(capacity: encodedCount(positions, of: entries, in: body))
                guard append(positions, of: entries, in: body, timestamp: timestamp, to: &builder) else {
                    throw ProxyError.unprocessable("a binary key or value must be a base64 string")
                }
                batches[place] = (builder.build(), positions.count)
            }
            return batches
        }
    }
}
