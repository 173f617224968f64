import Core
import Foundation
import KafkaWire
import LogStore
import Testing

@Suite struct AppendAndReadTests {
    @Test func appendsGetConsecutiveOffsetsStampedIntoTheBatch() async throws {
        let temporary = try TemporaryStore()
        try temporary.store.createTopic("events", configuration: TopicConfiguration(partitionCount: 2))
        let partition = try temporary.store.partition(topic: "events", index: 1)
        let first = try await partition.append(makeBatch(count: 3), leaderEpoch: 4)
        let second = try await partition.append(makeBatch(count: 2), leaderEpoch: 4)
        #expect(first == AppendResult(baseOffset: 0, lastOffset: 2, isDuplicate: false, logStartOffset: 0))
        #expect(second.baseOffset == 3 && second.lastOffset == 4)
        #expect(partition.logEndOffset == 5)
        let read = try partition.read(from: 0, bytesMax: 1 << 20)
        #expect(read.parsed.map(\.baseOffset) == [0, 3])
        #expect(read.parsed.allSatisfy { $0.partitionLeaderEpoch == 4 })
        #expect(try temporary.store.partition(topic: "events", index: 0).logEndOffset == 0)
    }

    @Test func readReturnsTheFirstBatchWholeEvenPastTheByteLimit() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("t", configuration: TopicConfiguration())
        let partition = try temporary.store.partition(topic: "t", index: 0)
        for _ in 0..<4 { _ = try await partition.append(makeBatch(count: 2, valueBytes: 1000)) }
        let batchSize = try partition.read(from: 0, bytesMax: 1).batches[0].count
        let one = try partition.read(from: 0, bytesMax: 10)
        #expect(one.batches.count == 1)
        let two = try partition.read(from: 0, bytesMax: batchSize * 2 + batchSize / 2)
        #expect(two.parsed.map(\.baseOffset) == [0, 2])
        let all = try partition.read(from: 0, bytesMax: 1 << 20)
        #expect(all.parsed.map(\.baseOffset) == [0, 2, 4, 6])
    }

    @Test func readFromAnOffsetInsideABatchReturnsThatWholeBatch() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("t", configuration: TopicConfiguration())
        let partition = try temporary.store.partition(topic: "t", index: 0)
        _ = try await partition.append(makeBatch(count: 5))
        _ = try await partition.append(makeBatch(count: 5))
        let read = try partition.read(from: 7, bytesMax: 1 << 20)
        #expect(read.parsed.map(\.baseOffset) == [5])
        #expect(read.logEndOffset == 10)
    }

    @Test func readAtTheEndIsEmptyAndBeyondItIsOutOfRange() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("t", configuration: TopicConfiguration())
        let partition = try temporary.store.partition(topic: "t", index: 0)
        _ = try await partition.append(makeBatch(count: 3))
        #expect(try partition.read(from: 3, bytesMax: 100).batches.isEmpty)
        #expect { try partition.read(from: 4, bytesMax: 100) } throws: { ($0 as? LogStoreError)?.code == .offsetOutOfRange }
        #expect { try partition.read(from: -1, bytesMax: 100) } throws: { ($0 as? LogStoreError)?.code == .offsetOutOfRange }
    }

    @Test func readStopsAtTheGivenMaximumOffsetSuchAsTheHighWatermark() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("t", configuration: TopicConfiguration())
        let partition = try temporary.store.partition(topic: "t", index: 0)
        _ = try await partition.append(makeBatch(count: 2))
        _ = try await partition.append(makeBatch(count: 2))
        try partition.advanceHighWatermark(to: 2)
        let read = try partition.read(from: 0, bytesMax: 1 << 20, maxOffset: partition.highWatermark)
        #expect(read.parsed.map(\.baseOffset) == [0])
        #expect(read.highWatermark == 2)
        try partition.advanceHighWatermark(to: 100)
        #expect(partition.highWatermark == 4, "the high watermark never passes the log end")
        try partition.advanceHighWatermark(to: 1)
        #expect(partition.highWatermark == 4, "the high watermark never moves back")
    }

    @Test func concurrentFsyncAppendsShareWALSyncs() async throws {
        let temporary = try TemporaryStore(durability: .fsync)
        try temporary.store.createTopic("t", configuration: TopicConfiguration(partitionCount: 4))
        let store = temporary.store
        let syncsBefore = store.walSyncCount
        let appendsCount = 200
        let results = try await withThrowingTaskGroup(of: AppendResult.self) { group in
            for index in 0..<appendsCount {
                group.addTask {
                    try await store.partition(topic: "t", index: Int32(index % 4)).append(makeBatch(count: 1))
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == appendsCount)
        let ends = try (0..<4).map { try store.partition(topic: "t", index: Int32($0)).logEndOffset }
        #expect(ends.reduce(0, +) == Int64(appendsCount))
        #expect(store.walSyncCount - syncsBefore < UInt64(appendsCount), "group commit shares syncs between waiting appends")
    }
}

@Suite struct BadInputTests {
    func storeWithData() async throws -> (TemporaryStore, PartitionLog, [UInt8]) {
        let temporary = try TemporaryStore()
        try temporary.store.createTopic("conversations", configuration: TopicConfiguration(conversationIndex: true))
        let partition = try temporary.store.partition(topic: "conversations", index: 0)
        let good = makeBatch(count: 3, conversations: ["room"])
        _ = try await partition.append(good)
        return (temporary, partition, good)
    }

    func expectRefusedAndNothingWritten(_ bytes: [UInt8], matching check: (RecordBatchError) -> Bool) async throws {
        let (temporary, partition, _) = try await storeWithData()
        await #expect {
            _ = try await partition.append(bytes)
        } throws: { error in
            guard let error = error as? LogStoreError, case .batchRefused(let reason) = error.code else { return false }
            return check(reason) && !error.message.isEmpty
        }
        #expect(partition.logEndOffset == 3)
        let read = try partition.read(from: 0, bytesMax: 1 << 20)
        #expect(read.parsed.map(\.baseOffset) == [0])
        #expect(try partition.history(conversation: Array("room".utf8), limit: 10).count == 3)
        #expect(try partition.verify().isEmpty)
        try temporary.reopen()
        #expect(try temporary.store.partition(topic: "conversations", index: 0).logEndOffset == 3)
    }

    @Test func corruptChecksumIsRefused() async throws {
        var bytes = makeBatch(count: 2, conversations: ["room"])
        bytes[bytes.count - 1] ^= 0x55
        try await expectRefusedAndNothingWritten(bytes) { if case .checksumMismatch = $0 { true } else { false } }
    }

    @Test func truncatedBatchIsRefused() async throws {
        let bytes = Array(makeBatch(count: 2, conversations: ["room"]).dropLast(7))
        try await expectRefusedAndNothingWritten(bytes) { if case .truncated = $0 { true } else { false } }
    }

    @Test func wrongMagicIsRefused() async throws {
        var bytes = makeBatch(count: 2, conversations: ["room"])
        bytes[16] = 0
        try await expectRefusedAndNothingWritten(bytes) { $0 == .unsupportedMagic(0) }
    }

    @Test func recordCountMismatchIsRefused() async throws {
        var bytes = makeBatch(count: 2, conversations: ["room"])
        bytes[26] = 5  // lastOffsetDelta's low byte
        var writer = ByteWriter()
        writer.writeUInt32(CRC32C.checksum(bytes, from: 21))
        bytes.replaceSubrange(17..<21, with: writer.bytes)
        try await expectRefusedAndNothingWritten(bytes) { $0 == .recordCountMismatch(recordsCount: 2, lastOffsetDelta: 5) }
    }

    @Test func oversizedBatchIsRefused() async throws {
        let bytes = makeBatch(count: 2, conversations: ["room"], valueBytes: Limits.batchBytesDefaultMax)
        try await expectRefusedAndNothingWritten(bytes) { if case .tooLarge = $0 { true } else { false } }
    }

    @Test func conversationRecordWithoutAKeyIsRefused() async throws {
        var builder = RecordBatchBuilder()
        builder.append(key: nil, value: [1], timestamp: 0)
        try await expectRefusedAndNothingWritten(builder.build()) { if case .invalidRecord = $0 { true } else { false } }
    }

    @Test func corruptCompressedPayloadIsRefused() async throws {
        var bytes = makeBatch(count: 20, conversations: ["room"], compression: .lz4)
        for index in 70..<80 { bytes[index] ^= 0xff }
        var writer = ByteWriter()
        writer.writeUInt32(CRC32C.checksum(bytes, from: 21))
        bytes.replaceSubrange(17..<21, with: writer.bytes)
        try await expectRefusedAndNothingWritten(bytes) { if case .decompression = $0 { true } else if case .invalidRecord = $0 { true } else { false } }
    }
}

@Suite struct TopicTests {
    @Test func invalidNamesAndConfigurationsAreRefused() throws {
        let temporary = try TemporaryStore()
        for name in ["", ".", "..", "has space", String(repeating: "a", count: 250), "ümlaut"] {
            #expect { try temporary.store.createTopic(name, configuration: TopicConfiguration()) } throws: {
                ($0 as? LogStoreError)?.code == .invalidTopicName
            }
        }
        #expect { try temporary.store.createTopic("t", configuration: TopicConfiguration(partitionCount: 0)) } throws: {
            ($0 as? LogStoreError)?.code == .invalidConfiguration
        }
        try temporary.store.createTopic("t", configuration: TopicConfiguration())
        #expect { try temporary.store.createTopic("t", configuration: TopicConfiguration()) } throws: {
            ($0 as? LogStoreError)?.code == .topicAlreadyExists
        }
        #expect { try temporary.store.partition(topic: "t", index: 1) } throws: { ($0 as? LogStoreError)?.code == .unknownPartition }
        #expect { try temporary.store.partition(topic: "nope", index: 0) } throws: { ($0 as? LogStoreError)?.code == .unknownTopic }
    }

    @Test func deletedTopicLeavesNothingBehindAndARecreatedOneStartsEmpty() async throws {
        let temporary = try TemporaryStore()
        try temporary.store.createTopic("conversations", configuration: TopicConfiguration(conversationIndex: true))
        let old = try temporary.store.partition(topic: "conversations", index: 0)
        _ = try await old.append(makeBatch(count: 4))
        let oldID = try #require(temporary.store.topic(named: "conversations")).id
        func logEntries() -> String? { temporary.store.logProperty("rocksdb.num-entries-active-mem-table") }
        #expect(logEntries() == "0", "nothing read the partition: its append's entries wait")
        try temporary.store.deleteTopic("conversations")
        #expect(logEntries() == "1", "the topic's range deletion")
        await #expect { _ = try await old.append(makeBatch()) } throws: { ($0 as? LogStoreError)?.code == .unknownTopic }
        // The appends' entries were still waiting (nothing had read the
        // partition): they went with the topic, and what would write them
        // writes nothing.
        _ = try? old.read(from: 0, bytesMax: Int.max)
        try old.checkpointHighWatermark()
        #expect(logEntries() == "1")
        let recreated = try temporary.store.createTopic("conversations", configuration: TopicConfiguration(conversationIndex: true))
        #expect(recreated.id != oldID)
        #expect(recreated.configuration.conversationIndex)
        let partition = try temporary.store.partition(topic: "conversations", index: 0)
        #expect(partition.logEndOffset == 0)
        #expect(try partition.history(conversation: Array("room-a".utf8), limit: 10).isEmpty)
        try temporary.reopen()
        #expect(temporary.store.topicDescriptors.map(\.name) == ["conversations"])
        #expect(try temporary.store.partition(topic: "conversations", index: 0).logEndOffset == 0)
    }
}
