import Cluster
import Foundation
import KafkaWire
import LogStore
import Logging
import Testing

@testable import Broker

/// A broker over a temporary store, driven through `handle(frame:)` exactly
/// as a connection drives it, without sockets.
final class TestBroker {
    let path = NSTemporaryDirectory() + "postduif-broker-\(UUID().uuidString)"
    let store: LogStore
    let broker: Broker
    var correlation: Int32 = 0

    init(durability: Durability = .none, conversationIndexedTopics: Set<String> = []) throws {
        store = try LogStore(path: path, options: LogStoreOptions(durability: durability))
        var configuration = BrokerConfiguration()
        configuration.port = 9999
        configuration.conversationIndexedTopics = conversationIndexedTopics
        broker = Broker(store: store, configuration: configuration, logger: Logger(label: "test"))
    }

    deinit {
        store.close()
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Sends a request and returns the response body after the correlation id.
    func call(_ api: ApiKey, version: Int16, _ encode: (inout ByteWriter) -> Void) async throws -> ByteReader? {
        try await call(key: api.rawValue, version: version, flexible: version >= api.firstFlexibleVersion, encode)
    }

    /// The same for an API by its key (the broker's own extension APIs).
    func call(key: Int16, version: Int16, flexible: Bool = false, _ encode: (inout ByteWriter) -> Void) async throws -> ByteReader? {
        correlation += 1
        var writer = ByteWriter()
        RequestHeader(apiKey: key, apiVersion: version, correlationID: correlation, clientID: "test").encode(&writer, flexible: flexible)
        encode(&writer)
        guard let response = try await broker.handle(frame: writer.bytes, client: "test") else { return nil }
        var reader = ByteReader(response)
        #expect(Int(try reader.readInt32()) == response.count - 4)
        #expect(try reader.readInt32() == correlation)
        return reader
    }
}

@Suite struct BrokerRequestTests {
    @Test func apiVersionsListsExactlyTheSupportedRanges() async throws {
        let test = try TestBroker()
        for version: Int16 in [0, 3] {
            var reader = try #require(try await test.call(.apiVersions, version: version) { ApiVersionsRequest(clientSoftwareName: "t", clientSoftwareVersion: "1").encode(&$0, version: version) })
            let response = try ApiVersionsResponse.decode(&reader, version: version)
            #expect(response.errorCode == 0)
            #expect(response.apiKeys == SupportedAPIs.advertised(sasl: false))
            #expect(response.apiKeys.contains(ApiVersionRange(apiKey: 0, minVersion: 0, maxVersion: 8)))
        }
    }

    @Test func unknownApiVersionsVersionGetsErrorThirtyFiveInAVersionZeroBody() async throws {
        let test = try TestBroker()
        var reader = try #require(try await test.call(.apiVersions, version: 9) { _ in })
        let response = try ApiVersionsResponse.decode(&reader, version: 0)
        #expect(response.errorCode == ErrorCode.unsupportedVersion.rawValue)
        #expect(response.apiKeys == [ApiVersionRange(apiKey: 18, minVersion: 0, maxVersion: 4)])
    }

    @Test func unknownApiKeysAndVersionsCloseTheConnection() async throws {
        let test = try TestBroker()
        var writer = ByteWriter()
        RequestHeader(apiKey: 999, apiVersion: 0, correlationID: 1, clientID: nil).encode(&writer, flexible: false)
        await #expect(throws: CloseConnection.self) { _ = try await test.broker.handle(frame: writer.bytes, client: "t") }
        await #expect(throws: CloseConnection.self) { _ = try await test.call(.metadata, version: 12) { _ in } }
        await #expect(throws: CloseConnection.self) { _ = try await test.broker.handle(frame: [0, 3], client: "t") }
    }

    @Test func produceThenFetchReturnsTheStampedBatch() async throws {
        let test = try TestBroker()
        try test.store.createTopic("t", configuration: TopicConfiguration(partitionCount: 1))
        var builder = RecordBatchBuilder()
        builder.append(key: Array("k".utf8), value: Array("v".utf8), timestamp: 1)
        let batch = builder.build()
        var produceReader = try #require(try await test.call(.produce, version: 8) {
            ProduceRequest(acks: -1, timeoutMilliseconds: 1000, topics: [.init(topic: "t", partitions: [.init(index: 0, batch: batch)])]).encode(&$0, version: 8)
        })
        let produced = try ProduceResponse.decode(&produceReader, version: 8)
        #expect(produced.topics.first?.partitions.first?.errorCode == 0)
        #expect(produced.topics.first?.partitions.first?.baseOffset == 0)
        var fetchReader = try #require(try await test.call(.fetch, version: 11) {
            FetchRequest(maxWaitMilliseconds: 0, minBytes: 1, topics: [.init(name: "t", partitions: [.init(index: 0, fetchOffset: 0, partitionBytesMax: 1 << 20)])]).encode(&$0, version: 11)
        })
        let fetched = try FetchResponse.decode(&fetchReader, version: 11)
        let partition = try #require(fetched.topics.first?.partitions.first)
        #expect(partition.errorCode == 0 && partition.highWatermark == 1 && partition.lastStableOffset == 1)
        let batches = try RecordBatch.batches(in: try #require(partition.batches.first))
        #expect(try batches.first?.records().first?.value == Array("v".utf8))
    }

    @Test func produceVersionsZeroToTwoAreAdvertisedButRefused() async throws {
        let test = try TestBroker()
        try test.store.createTopic("t", configuration: TopicConfiguration())
        var reader = try #require(try await test.call(.produce, version: 2) {
            ProduceRequest(acks: 1, timeoutMilliseconds: 1000, topics: [.init(topic: "t", partitions: [.init(index: 0, batch: [1, 2, 3])])]).encode(&$0, version: 2)
        })
        let response = try ProduceResponse.decode(&reader, version: 2)
        #expect(response.topics.first?.partitions.first?.errorCode == ErrorCode.unsupportedVersion.rawValue)
        #expect(test.store.topic(named: "t") != nil)
        #expect(try test.store.partition(topic: "t", index: 0).logEndOffset == 0)
    }

    @Test func produceWithAcksZeroGetsNoResponseButIsStored() async throws {
        let test = try TestBroker()
        try test.store.createTopic("t", configuration: TopicConfiguration())
        var builder = RecordBatchBuilder()
        builder.append(key: nil, value: [1], timestamp: 1)
        let batch = builder.build()
        let response = try await test.call(.produce, version: 7) {
            ProduceRequest(acks: 0, timeoutMilliseconds: 1000, topics: [.init(topic: "t", partitions: [.init(index: 0, batch: batch)])]).encode(&$0, version: 7)
        }
        #expect(response == nil)
        #expect(try test.store.partition(topic: "t", index: 0).logEndOffset == 1)
    }

    @Test func corruptBatchIsRefusedWithCorruptMessageAndNothingIsStored() async throws {
        let test = try TestBroker()
        try test.store.createTopic("t", configuration: TopicConfiguration())
        var builder = RecordBatchBuilder()
        builder.append(key: nil, value: [1, 2, 3], timestamp: 1)
        var batch = builder.build()
        batch[batch.count - 1] ^= 0xff
        var reader = try #require(try await test.call(.produce, version: 8) {
            ProduceRequest(acks: 1, timeoutMilliseconds: 1000, topics: [.init(topic: "t", partitions: [.init(index: 0, batch: batch)])]).encode(&$0, version: 8)
        })
        let response = try ProduceResponse.decode(&reader, version: 8)
        #expect(response.topics.first?.partitions.first?.errorCode == ErrorCode.corruptMessage.rawValue)
        #expect(response.topics.first?.partitions.first?.errorMessage?.contains("CRC") == true)
        #expect(try test.store.partition(topic: "t", index: 0).logEndOffset == 0)
    }

    @Test func fetchLongPollIsWokenByAProduce() async throws {
        let test = try TestBroker()
        try test.store.createTopic("t", configuration: TopicConfiguration())
        let broker = test.broker
        var builder = RecordBatchBuilder()
        builder.append(key: nil, value: [9], timestamp: 1)
        let batch = builder.build()
        var fetchWriter = ByteWriter()
        RequestHeader(apiKey: ApiKey.fetch.rawValue, apiVersion: 11, correlationID: 5, clientID: nil).encode(&fetchWriter, flexible: false)
        // A wait far longer than the test: only the produce can end it early.
        FetchRequest(maxWaitMilliseconds: 30_000, minBytes: 1, topics: [.init(name: "t", partitions: [.init(index: 0, fetchOffset: 0, partitionBytesMax: 1 << 20)])]).encode(&fetchWriter, version: 11)
        let fetchFrame = fetchWriter.bytes
        let clock = ContinuousClock()
        let started = clock.now
        async let fetched = broker.handle(frame: fetchFrame, client: "consumer")
        let partition = try test.store.partition(topic: "t", index: 0)
        _ = try await partition.append(batch)
        try partition.advanceHighWatermark(to: 1)
        broker.notifier.notify(PartitionID(topic: "t", index: 0))
        let response = try #require(try await fetched)
        #expect(clock.now - started < .seconds(25), "the fetch ended because of the produce, not its timeout")
        var reader = ByteReader(response)
        _ = try reader.readInt32()
        _ = try reader.readInt32()
        let decoded = try FetchResponse.decode(&reader, version: 11)
        #expect(decoded.topics.first?.partitions.first?.highWatermark == 1)
        #expect(decoded.topics.first?.partitions.first?.batches.isEmpty == false)
    }

    /// A partition's news wakes only its own waiters: one counter for the
    /// whole broker woke every parked fetch on every append anywhere.
    @Test func dataNotificationsArePerPartition() async throws {
        let notifier = DataNotifier()
        let mine = [PartitionID(topic: "t", index: 0), PartitionID(topic: "t", index: 1)]
        let before = notifier.generation(of: mine)
        notifier.notify(PartitionID(topic: "t", index: 2))
        notifier.notify(PartitionID(topic: "u", index: 0))
        #expect(notifier.generation(of: mine) == before)
        async let woken: Void = notifier.wait(on: mine, afterGeneration: before, timeout: .seconds(60))
        notifier.notify(PartitionID(topic: "t", index: 1))
        let clock = ContinuousClock()
        let started = clock.now
        await woken
        #expect(clock.now - started < .seconds(30), "woken by its partition's news, not by the timeout")
        #expect(notifier.generation(of: mine) != before)
    }

    /// Found by the fault campaign: a leader elected a moment ago learns the
    /// high watermark a fetch late, and a consumer past it (between the high
    /// watermark and the log end) was told OFFSET_OUT_OF_RANGE and reset to
    /// the start. It is in range: the fetch answers nothing yet, no error.
    @Test func aConsumerBetweenTheHighWatermarkAndTheLogEndWaitsWithoutAnError() async throws {
        let test = try TestBroker()
        try test.store.createTopic("gap", configuration: TopicConfiguration(partitionCount: 1))
        let log = try test.store.partition(topic: "gap", index: 0)
        var builder = RecordBatchBuilder()
        builder.append(key: Array("room".utf8), value: Array("copied".utf8), timestamp: 1)
        // A copy from a leader (its epoch, 0, stamped where the leader
        // stamps it, outside the CRC): in the log, not yet under the high watermark.
        var copied = builder.build()
        copied.replaceSubrange(12..<16, with: [0, 0, 0, 0])
        _ = try await log.writeReplica(copied).durable()
        #expect(log.logEndOffset == 1 && log.highWatermark == 0)
        func fetch(at offset: Int64) async throws -> FetchResponse.Partition? {
            let request = FetchRequest(maxWaitMilliseconds: 0, minBytes: 1, maxBytes: 1 << 20, topics: [
                .init(name: "gap", partitions: [.init(index: 0, fetchOffset: offset, partitionBytesMax: 1 << 20)]),
            ])
            var reader = try #require(try await test.call(.fetch, version: 11) { request.encode(&$0, version: 11) })
            return try FetchResponse.decode(&reader, version: 11).topics.first?.partitions.first
        }
        let waiting = try #require(try await fetch(at: 1))
        #expect(waiting.errorCode == 0 && waiting.batches.isEmpty && waiting.highWatermark == 0)
        // Past the log end is still out of range.
        #expect(try await fetch(at: 2)?.errorCode == ErrorCode.offsetOutOfRange.rawValue)
    }

    @Test func fetchSessionsAreDeclined() async throws {
        let test = try TestBroker()
        var request = FetchRequest(maxWaitMilliseconds: 0, minBytes: 1, topics: [])
        request.sessionID = 12
        var reader = try #require(try await test.call(.fetch, version: 7) { request.encode(&$0, version: 7) })
        #expect(try FetchResponse.decode(&reader, version: 7).errorCode == ErrorCode.fetchSessionIdNotFound.rawValue)
    }

    @Test func metadataAutoCreatesAndReportsThisNodeAsControllerAndLeader() async throws {
        let test = try TestBroker(conversationIndexedTopics: ["indexed"])
        var reader = try #require(try await test.call(.metadata, version: 8) { MetadataRequest(topics: ["indexed", "plain", "bad name!"]).encode(&$0, version: 8) })
        _ = try reader.readInt32()  // throttle
        let brokersCount = try reader.readInt32()
        #expect(brokersCount == 1)
        #expect(try reader.readInt32() == 1)
        #expect(try reader.readString() == "127.0.0.1")
        #expect(try reader.readInt32() == 9999)
        _ = try reader.readNullableString()  // rack
        #expect(try reader.readNullableString() == test.store.clusterID)
        #expect(try reader.readInt32() == 1)  // controller: this node
        // The index comes from the node's settings, never from a topic's name.
        #expect(test.store.topic(named: "indexed")?.configuration.conversationIndex == true)
        #expect(test.store.topic(named: "plain")?.configuration.conversationIndex == false)
        #expect(test.store.topic(named: "bad name!") == nil)
    }
}
