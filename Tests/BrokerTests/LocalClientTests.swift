import Foundation
import KafkaNIO
import KafkaWire
import LogStore
import Logging
import Testing

@testable import Broker

/// The in-process connection the embedded gateway uses (ADR 0016): the same
/// frames as a socket's, answered by the same handlers.
@Suite struct LocalClientTests {
    @Test func produceAndFetchGoThroughTheSameHandlersAsASocket() async throws {
        let test = try TestBroker(durability: .fsync)
        try test.store.createTopic("t", configuration: TopicConfiguration(partitionCount: 1))
        let connection = KafkaClientConnection(local: test.broker.localClient(name: "test"), clientID: "test")
        var offsets: [Int64] = []
        // Two at once, as the gateway's Produce requests overlap.
        try await withThrowingTaskGroup(of: Int64.self) { group in
            for value in ["a", "b"] {
                group.addTask {
                    var builder = RecordBatchBuilder()
                    builder.append(key: Array("k".utf8), value: Array(value.utf8), timestamp: 1)
                    let batch = builder.build()
                    var reader = try await connection.request(.produce, version: 7) {
                        ProduceRequest(acks: -1, timeoutMilliseconds: 1000, topics: [.init(topic: "t", partitions: [.init(index: 0, batch: batch)])]).encode(&$0, version: 7)
                    }
                    let answer = try #require(try ProduceResponse.decode(&reader, version: 7).topics.first?.partitions.first)
                    #expect(answer.errorCode == 0)
                    return answer.baseOffset
                }
            }
            for try await offset in group { offsets.append(offset) }
        }
        #expect(offsets.sorted() == [0, 1])
        // Through `send` too (the future-based path the load tool pipelines on).
        let future = connection.send(.fetch, version: 11) {
            FetchRequest(maxWaitMilliseconds: 0, minBytes: 1, maxBytes: 1 << 20, topics: [.init(name: "t", partitions: [.init(index: 0, fetchOffset: 0, partitionBytesMax: 1 << 20)])]).encode(&$0, version: 11)
        }
        var reader = try #require(try await future.get())
        let fetched = try #require(try FetchResponse.decode(&reader, version: 11).topics.first?.partitions.first)
        #expect(fetched.errorCode == 0 && fetched.highWatermark == 2)
        var values: [String] = []
        for blob in fetched.batches {
            for batch in try RecordBatch.split(stored: blob) {
                for record in try batch.records() { values.append(String(decoding: record.value ?? [], as: UTF8.self)) }
            }
        }
        #expect(values.sorted() == ["a", "b"])
    }

    /// The embedded gateway's message sends (ADR 0017): one record, no frame;
    /// `done` once it is committed, with the high watermark past it.
    @Test func directAppendsCommitAndRefuseAsAProduceWould() async throws {
        let test = try TestBroker(durability: .fsync)
        try test.store.createTopic("t", configuration: TopicConfiguration(partitionCount: 2))
        let broker = test.broker
        #expect(broker.appendsOneDirectly)
        func append(partition: Int32, topic: String = "t", _ value: String) async -> Result<Int64, any Error> {
            await withCheckedContinuation { continuation in
                let taken = broker.appendOne(topic: topic, partition: partition, key: Array("k".utf8), value: Array(value.utf8),
                                               headers: [RecordHeader(key: Array("txn".utf8), value: Array("x".utf8))], timestamp: 1) { continuation.resume(returning: $0.mapError { $0 as any Error }) }
                if !taken { continuation.resume(returning: .failure(NotTaken())) }
            }
        }
        let offsets = await withTaskGroup(of: Int64?.self) { group in
            for value in ["a", "b", "c"] { group.addTask { try? await append(partition: 1, value).get() } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(offsets.compactMap { $0 }.sorted() == [0, 1, 2])
        let partition = try test.store.partition(topic: "t", index: 1)
        #expect(partition.highWatermark == 3)
        let read = try partition.read(from: 0, bytesMax: 1 << 20)
        var values: [String] = []
        for blob in read.batches {
            for batch in try RecordBatch.split(stored: blob) {
                for record in try batch.records() {
                    values.append(String(decoding: record.value ?? [], as: UTF8.self))
                    #expect(record.headers.first?.key == Array("txn".utf8))
                }
            }
        }
        #expect(values.sorted() == ["a", "b", "c"])
        // What a Produce would be told: no such partition, no such topic.
        guard case .failure(let refusal) = await append(partition: 7, "d") else { Issue.record("appended to a partition that does not exist"); return }
        #expect((refusal as? AppendRefusal)?.errorCode == ErrorCode.unknownTopicOrPartition.rawValue)
        guard case .failure(let missing) = await append(partition: 0, topic: "missing", "e") else { Issue.record("appended to a topic that does not exist"); return }
        #expect((missing as? AppendRefusal)?.errorCode == ErrorCode.unknownTopicOrPartition.rawValue)
    }

    /// An upload's chunk: the caller appends the value into the batch
    /// itself, in pieces; the record is stored as a Produce of it would be,
    /// and a partition that does not exist is refused as a Produce would be.
    @Test func directAppendsOfValuesAppendedInPlace() async throws {
        let test = try TestBroker(durability: .fsync)
        try test.store.createTopic("media", configuration: TopicConfiguration(partitionCount: 1))
        let broker = test.broker
        let value = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        func append(partition: Int32) async -> Result<Int64, AppendRefusal>? {
            await withCheckedContinuation { continuation in
                let taken = broker.appendOne(topic: "media", partition: partition, key: Array("file".utf8), valueCount: value.count, timestamp: 1,
                                             appendValue: { bytes in
                                                 bytes += value[..<1_000]
                                                 bytes += value[1_000...]
                                             }) { continuation.resume(returning: $0) }
                if !taken { continuation.resume(returning: nil) }
            }
        }
        #expect(try await append(partition: 0)?.get() == 0)
        let read = try test.store.partition(topic: "media", index: 0).read(from: 0, bytesMax: 1 << 20)
        let records = try read.batches.flatMap { try RecordBatch.split(stored: $0) }.flatMap { try $0.records() }
        #expect(records.map(\.value) == [value])
        #expect(records.first?.key == Array("file".utf8))
        guard case .failure(let refusal) = await append(partition: 3) else { Issue.record("appended to a partition that does not exist"); return }
        #expect(refusal.errorCode == ErrorCode.unknownTopicOrPartition.rawValue)
    }

    @Test func aBrokerRequiringSaslStillAnswersItsOwnProcess() async throws {
        let path = NSTemporaryDirectory() + "postduif-local-\(UUID().uuidString)"
        let store = try LogStore(path: path, options: LogStoreOptions(durability: .none))
        defer {
            store.close()
            try? FileManager.default.removeItem(atPath: path)
        }
        var configuration = BrokerConfiguration()
        configuration.saslEnabled = true
        configuration.usersFile = path + "-users.json"
        let broker = Broker(store: store, configuration: configuration, logger: Logger(label: "test"))
        let connection = KafkaClientConnection(local: broker.localClient(name: "test"), clientID: "test")
        var reader = try await connection.request(.createTopics, version: 4) {
            CreateTopicsRequest(topics: [.init(name: "c", partitionCount: 1, replicationFactor: -1, configs: [])]).encode(&$0, version: 4)
        }
        #expect(try CreateTopicsResponse.decode(&reader, version: 4).topics.first?.errorCode == 0)
    }

    @Test func aRequestTheBrokerCannotReadClosesThatConnectionOnly() async throws {
        let test = try TestBroker()
        let local = test.broker.localClient(name: "test")
        let broken = KafkaClientConnection(local: local, clientID: "test")
        // Metadata v12 is not supported: a socket's connection would close.
        await #expect(throws: KafkaClientError.self) { _ = try await broken.request(.metadata, version: 12) { _ in } }
        await #expect(throws: KafkaClientError.self) { _ = try await broken.request(.apiVersions, version: 3) { ApiVersionsRequest(clientSoftwareName: "t", clientSoftwareVersion: "1").encode(&$0, version: 3) } }
        let other = KafkaClientConnection(local: local, clientID: "test")
        var reader = try await other.request(.apiVersions, version: 3) { ApiVersionsRequest(clientSoftwareName: "t", clientSoftwareVersion: "1").encode(&$0, version: 3) }
        #expect(try ApiVersionsResponse.decode(&reader, version: 3).errorCode == 0)
    }
}

/// `appendOne` declined the record (it would have to wait for followers).
private struct NotTaken: Error {}
