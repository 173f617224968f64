import Core
import Foundation
import KafkaWire
import LogStore
import Testing

@Suite struct HistoryTests {
    /// 30 messages in batches of 2: rooms a and b alternate, so each has 15
    /// and room a's message n sits at offset 2(n - 1).
    func conversationStore() async throws -> (TemporaryStore, PartitionLog) {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("conversations", configuration: TopicConfiguration(conversationIndex: true))
        let partition = try temporary.store.partition(topic: "conversations", index: 0)
        for batch in 0..<15 {
            _ = try await partition.append(makeBatch(count: 2, conversations: ["a", "b"], valuePrefix: "b\(batch)-", compression: batch % 2 == 0 ? .zstd : .none))
        }
        return (temporary, partition)
    }

    @Test func latestPageHoldsTheNewestMessagesOldestFirst() async throws {
        let (temporary, partition) = try await conversationStore()
        defer { withExtendedLifetime(temporary) {} }
        let page = try partition.history(conversation: Array("a".utf8), limit: 4)
        #expect(page.map(\.sequence) == [12, 13, 14, 15])
        #expect(page.allSatisfy { $0.key == Array("a".utf8) })
        #expect(page.map(\.offset) == [22, 24, 26, 28])
        #expect(text(page.last?.value) == "b14-0")
    }

    @Test func pagingBackwardsVisitsEveryMessageOnce() async throws {
        let (temporary, partition) = try await conversationStore()
        defer { withExtendedLifetime(temporary) {} }
        var seen: [UInt64] = []
        var position = HistoryPosition.latest
        while true {
            let page = try partition.history(conversation: Array("b".utf8), from: position, limit: 4)
            guard let first = page.first else { break }
            seen.insert(contentsOf: page.map(\.sequence), at: 0)
            position = .before(sequence: first.sequence)
        }
        #expect(seen == Array(1...15))
    }

    @Test func pagingForwardsVisitsEveryMessageOnce() async throws {
        let (temporary, partition) = try await conversationStore()
        defer { withExtendedLifetime(temporary) {} }
        var seen: [UInt64] = []
        var values: [String] = []
        var position = HistoryPosition.after(sequence: 0)
        while true {
            let page = try partition.history(conversation: Array("a".utf8), from: position, limit: 4)
            guard let last = page.last else { break }
            seen += page.map(\.sequence)
            values += page.map { text($0.value) }
            position = .after(sequence: last.sequence)
        }
        #expect(seen == Array(1...15))
        #expect(values.prefix(3) == ["b0-0", "b1-0", "b2-0"])
    }

    @Test func historyHidesMessagesAtOrAboveTheGivenMaximumOffset() async throws {
        let (temporary, partition) = try await conversationStore()
        defer { withExtendedLifetime(temporary) {} }
        let page = try partition.history(conversation: Array("a".utf8), limit: 100, maxOffset: 6)
        #expect(page.map(\.offset) == [0, 2, 4])
        let forward = try partition.history(conversation: Array("a".utf8), from: .after(sequence: 2), limit: 100, maxOffset: 6)
        #expect(forward.map(\.sequence) == [3])
    }

    @Test func unknownConversationHasNoHistoryAndPlainTopicsRefuseHistory() async throws {
        let (temporary, partition) = try await conversationStore()
        #expect(try partition.history(conversation: Array("nobody".utf8), limit: 10).isEmpty)
        try temporary.store.createTopic("plain", configuration: TopicConfiguration())
        #expect { try temporary.store.partition(topic: "plain", index: 0).history(conversation: [1], limit: 1) } throws: {
            ($0 as? LogStoreError)?.code == .invalidConfiguration
        }
    }

    @Test func sequencesContinueAfterReopening() async throws {
        let (temporary, _) = try await conversationStore()
        try temporary.reopen(durability: .none)
        let partition = try temporary.store.partition(topic: "conversations", index: 0)
        _ = try await partition.append(makeBatch(count: 1, conversations: ["a"]))
        let newest = try partition.history(conversation: Array("a".utf8), limit: 1)
        #expect(newest.map(\.sequence) == [16])
        #expect(try partition.conversationCount() == 2)
        #expect(try partition.verify().isEmpty)
    }
}

@Suite struct RetentionTests {
    @Test func retentionBySizeDropsTheOldestWholeBatchesBelowTheHighWatermark() async throws {
        let temporary = try TemporaryStore(durability: .none)
        var configuration = TopicConfiguration(conversationIndex: true)
        configuration.retentionBytes = 3000
        try temporary.store.createTopic("conversations", configuration: configuration)
        let partition = try temporary.store.partition(topic: "conversations", index: 0)
        for _ in 0..<10 { _ = try await partition.append(makeBatch(count: 2, conversations: ["a"], valueBytes: 500)) }
        let batchBytes = Int64(try partition.read(from: 0, bytesMax: 1).batches[0].count)
        #expect(try partition.enforceRetention(nowMilliseconds: 0).batches == 0, "nothing is committed yet")
        try partition.advanceHighWatermark(to: 20)
        let dropped = try partition.enforceRetention(nowMilliseconds: 0).batches
        #expect(dropped == Int(10 - 3000 / batchBytes))
        #expect(partition.sizeBytes <= 3000)
        #expect(partition.logStartOffset == Int64(dropped * 2))
        #expect { try partition.read(from: 0, bytesMax: 100) } throws: { ($0 as? LogStoreError)?.code == .offsetOutOfRange }
        #expect(try partition.read(from: partition.logStartOffset, bytesMax: 1).parsed[0].baseOffset == partition.logStartOffset)
        let history = try partition.history(conversation: Array("a".utf8), from: .after(sequence: 0), limit: 100)
        #expect(history.first?.offset == partition.logStartOffset)
        #expect(try partition.verify().isEmpty)
        try temporary.reopen(durability: .none)
        let reopened = try temporary.store.partition(topic: "conversations", index: 0)
        #expect(reopened.logStartOffset == Int64(dropped * 2) && reopened.logEndOffset == 20)
    }

    @Test func retentionByTimeDropsBatchesWhoseNewestRecordIsTooOld() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("t", configuration: TopicConfiguration(retentionTime: .seconds(60)))
        let partition = try temporary.store.partition(topic: "t", index: 0)
        let now: Int64 = 1_795_000_000_000
        _ = try await partition.append(makeBatch(count: 2, timestamp: now - 120_000))
        _ = try await partition.append(makeBatch(count: 2, timestamp: now - 61_000))
        _ = try await partition.append(makeBatch(count: 2, timestamp: now - 30_000))
        try partition.advanceHighWatermark(to: partition.logEndOffset)
        #expect(try temporary.store.enforceRetention(nowMilliseconds: now).batches == 2)
        #expect(partition.logStartOffset == 4)
        #expect(try partition.read(from: 4, bytesMax: 1 << 20).parsed.map(\.baseOffset) == [4])
    }

    @Test func anEmptiedLogKeepsItsEndOffsetAcrossARestart() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("t", configuration: TopicConfiguration(retentionBytes: 0))
        let partition = try temporary.store.partition(topic: "t", index: 0)
        _ = try await partition.append(makeBatch(count: 3))
        try partition.advanceHighWatermark(to: 3)
        #expect(try partition.enforceRetention(nowMilliseconds: 0).batches == 1)
        try temporary.reopen(durability: .none)
        let reopened = try temporary.store.partition(topic: "t", index: 0)
        #expect(reopened.logStartOffset == 3 && reopened.logEndOffset == 3)
        #expect(try await reopened.append(makeBatch()).baseOffset == 3)
    }
}

@Suite struct TruncationAndEpochTests {
    @Test func truncateDropsWholeBatchesAndTheIndexFollows() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("conversations", configuration: TopicConfiguration(conversationIndex: true))
        let partition = try temporary.store.partition(topic: "conversations", index: 0)
        _ = try await partition.append(makeBatch(count: 4, conversations: ["a", "b"]), leaderEpoch: 0)
        _ = try await partition.append(makeBatch(count: 4, conversations: ["a", "b"]), leaderEpoch: 1)
        _ = try await partition.append(makeBatch(count: 4, conversations: ["a"]), leaderEpoch: 2)
        try partition.advanceHighWatermark(to: 12)
        let end = try partition.truncate(to: 6)
        #expect(end == 4, "the batch holding offset 6 starts at 4 and goes whole")
        #expect(partition.logEndOffset == 4)
        #expect(partition.highWatermark == 4)
        #expect(partition.epochEntries == [EpochEntry(epoch: 0, startOffset: 0)])
        #expect(try partition.history(conversation: Array("a".utf8), limit: 100).map(\.sequence) == [1, 2])
        #expect(try partition.verify().isEmpty)
        let next = try await partition.append(makeBatch(count: 1, conversations: ["a"]), leaderEpoch: 3)
        #expect(next.baseOffset == 4)
        #expect(try partition.history(conversation: Array("a".utf8), limit: 1).map(\.sequence) == [3])
        try temporary.reopen(durability: .none)
        let reopened = try temporary.store.partition(topic: "conversations", index: 0)
        #expect(reopened.logEndOffset == 5)
        #expect(reopened.epochEntries == [EpochEntry(epoch: 0, startOffset: 0), EpochEntry(epoch: 3, startOffset: 4)])
        #expect(try reopened.verify().isEmpty)
    }

    @Test func endOffsetForLeaderEpochFollowsKIP279() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("t", configuration: TopicConfiguration())
        let partition = try temporary.store.partition(topic: "t", index: 0)
        #expect(partition.endOffset(forLeaderEpoch: 0) == nil)
        _ = try await partition.append(makeBatch(count: 2), leaderEpoch: 2)
        _ = try await partition.append(makeBatch(count: 3), leaderEpoch: 2)
        _ = try await partition.append(makeBatch(count: 1), leaderEpoch: 5)
        #expect(partition.epochEntries == [EpochEntry(epoch: 2, startOffset: 0), EpochEntry(epoch: 5, startOffset: 5)])
        #expect(partition.endOffset(forLeaderEpoch: 5)! == (5, 6), "the current epoch ends at the log end")
        #expect(partition.endOffset(forLeaderEpoch: 2)! == (2, 5), "an old epoch ends where the next starts")
        #expect(partition.endOffset(forLeaderEpoch: 3)! == (2, 5), "an unknown epoch answers with the largest below it")
        #expect(partition.endOffset(forLeaderEpoch: 1)! == (1, 0), "below the first epoch: its start")
        #expect(partition.endOffset(forLeaderEpoch: 9)! == (5, 6))
        await #expect { _ = try await partition.append(makeBatch(), leaderEpoch: 4) } throws: {
            ($0 as? LogStoreError)?.code == .staleLeaderEpoch
        }
    }
}

@Suite struct ProducerStateTests {
    func producerBatch(sequence: Int32, count: Int = 2, epoch: Int16 = 0) -> [UInt8] {
        makeBatch(count: count, producerID: 77, producerEpoch: epoch, baseSequence: sequence)
    }

    @Test func aRetriedBatchIsNotWrittenAgainAndGetsItsOriginalOffsets() async throws {
        let temporary = try TemporaryStore()
        try temporary.store.createTopic("t", configuration: TopicConfiguration())
        let partition = try temporary.store.partition(topic: "t", index: 0)
        let first = try await partition.append(producerBatch(sequence: 0))
        _ = try await partition.append(producerBatch(sequence: 2))
        let retry = try await partition.append(producerBatch(sequence: 0))
        #expect(retry == AppendResult(baseOffset: first.baseOffset, lastOffset: first.lastOffset, isDuplicate: true, logStartOffset: 0))
        #expect(partition.logEndOffset == 4)
    }

    @Test func sequenceRulesRefuseGapsOldEpochsAndNewEpochsNotStartingAtZero() async throws {
        let temporary = try TemporaryStore()
        try temporary.store.createTopic("t", configuration: TopicConfiguration())
        let partition = try temporary.store.partition(topic: "t", index: 0)
        _ = try await partition.append(producerBatch(sequence: 10, epoch: 1))  // an unknown producer may start anywhere
        await #expect { _ = try await partition.append(producerBatch(sequence: 13, epoch: 1)) } throws: {
            ($0 as? LogStoreError)?.code == .outOfOrderSequence
        }
        await #expect { _ = try await partition.append(producerBatch(sequence: 12, epoch: 0)) } throws: {
            ($0 as? LogStoreError)?.code == .producerFenced
        }
        await #expect { _ = try await partition.append(producerBatch(sequence: 5, epoch: 2)) } throws: {
            ($0 as? LogStoreError)?.code == .outOfOrderSequence
        }
        #expect(try await partition.append(producerBatch(sequence: 12, epoch: 1)).baseOffset == 2)
        #expect(try await partition.append(producerBatch(sequence: 0, epoch: 2)).baseOffset == 4)
        #expect(partition.logEndOffset == 6)
    }

    /// A batch the disk refused leaves a gap in its producer's sequences;
    /// the batches the producer sent behind it get the same retriable
    /// storage error, not "out of order" (which librdkafka 2.0.2 answers
    /// with a new producer epoch, storing twice whatever else it had in
    /// flight), and are taken in order once the refused one is.
    @Test func batchesBehindOneTheDiskRefusedAreRefusedAlikeNotOutOfOrder() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("t", configuration: TopicConfiguration())
        let partition = try temporary.store.partition(topic: "t", index: 0)
        _ = try await partition.append(producerBatch(sequence: 0))
        // The segment's descriptor turns read-only: its next write fails
        // with EBADF, as a full disk fails one with ENOSPC.
        // (RocksDB's write-ahead log files end in .log too: the segment is
        // the one under segments/.)
        let segment = try #require(FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap { Int32($0) }.first { fd in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") else { return false }
            return target.hasPrefix(temporary.path) && target.contains("/segments/") && target.hasSuffix(".log")
        })
        let saved = dup(segment)
        let readOnly = open("/dev/null", O_RDONLY)
        dup2(readOnly, segment)
        await #expect { _ = try await partition.append(producerBatch(sequence: 2)) } throws: {
            ($0 as? LogStoreError)?.isStorageFailure == true
        }
        for sequence: Int32 in [4, 6] {
            await #expect { _ = try await partition.append(producerBatch(sequence: sequence)) } throws: {
                ($0 as? LogStoreError)?.isStorageFailure == true
            }
        }
        // The disk heals: the refused batch, then those behind it, in order.
        dup2(saved, segment)
        close(saved)
        close(readOnly)
        for (sequence, offset): (Int32, Int64) in [(2, 2), (4, 4), (6, 6)] {
            #expect(try await partition.append(producerBatch(sequence: sequence)).baseOffset == offset)
        }
        // A real gap is still out of order.
        await #expect { _ = try await partition.append(producerBatch(sequence: 12)) } throws: {
            ($0 as? LogStoreError)?.code == .outOfOrderSequence
        }
    }

    @Test func onlyTheLastFiveBatchesAreRememberedAndStateSurvivesRestart() async throws {
        let temporary = try TemporaryStore()
        try temporary.store.createTopic("t", configuration: TopicConfiguration())
        var partition = try temporary.store.partition(topic: "t", index: 0)
        for batch in 0..<7 { _ = try await partition.append(producerBatch(sequence: Int32(batch * 2))) }
        try temporary.reopen()
        partition = try temporary.store.partition(topic: "t", index: 0)
        #expect(try await partition.append(producerBatch(sequence: 8)).isDuplicate, "batch 4 of 7 is among the last five")
        await #expect { _ = try await partition.append(producerBatch(sequence: 2)) } throws: {
            ($0 as? LogStoreError)?.code == .outOfOrderSequence
        }
        #expect(try await partition.append(producerBatch(sequence: 14)).baseOffset == 14)
    }
}

@Suite struct DeleteRecordsAndSegmentAgeTests {
    @Test func deleteRecordsMovesTheStartInsideABatchAndKeepsThatBatchWhole() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("rooms", configuration: TopicConfiguration(conversationIndex: true))
        let partition = try temporary.store.partition(topic: "rooms", index: 0)
        for _ in 0..<3 { _ = try await partition.append(makeBatch(count: 4, conversations: ["a", "b"])) }
        #expect { try partition.deleteRecords(before: 5) } throws: { ($0 as? LogStoreError)?.code == .offsetOutOfRange }
        try partition.advanceHighWatermark(to: 12)
        #expect(try partition.deleteRecords(before: 6) == 6)
        #expect(partition.logStartOffset == 6)
        // The batch of offsets 4-7 stays whole; reading from the start returns it.
        #expect(try partition.read(from: 6, bytesMax: 1 << 20).parsed.map(\.baseOffset) == [4, 8])
        #expect { try partition.read(from: 3, bytesMax: 100) } throws: { ($0 as? LogStoreError)?.code == .offsetOutOfRange }
        // Index entries below the new start are gone, in both conversations.
        let a = try partition.history(conversation: Array("a".utf8), from: .after(sequence: 0), limit: 100)
        let b = try partition.history(conversation: Array("b".utf8), from: .after(sequence: 0), limit: 100)
        #expect(a.map(\.offset) == [6, 8, 10] && b.map(\.offset) == [7, 9, 11])
        #expect(try partition.deleteRecords(before: 2) == 6, "a start never moves back")
        #expect(try partition.deleteRecords(before: -1) == 12, "-1 is the high watermark")
        #expect(try partition.verify().isEmpty)
        try temporary.reopen(durability: .none)
        #expect(try temporary.store.partition(topic: "rooms", index: 0).logStartOffset == 12)
    }

    @Test func aSegmentOlderThanSegmentMsClosesAndRetentionThenFreesIt() async throws {
        let temporary = try TemporaryStore(durability: .none)
        let configuration = TopicConfiguration(retentionTime: .seconds(60), segmentTime: .seconds(10))
        try temporary.store.createTopic("t", configuration: configuration)
        let partition = try temporary.store.partition(topic: "t", index: 0)
        let start: Int64 = 1_795_000_000_000
        _ = try await partition.append(makeBatch(count: 2, timestamp: start))
        _ = try await partition.append(makeBatch(count: 2, timestamp: start + 1_000))
        try partition.advanceHighWatermark(to: 4)
        #expect(try partition.closeActiveSegment(nowMilliseconds: start + 5_000) == false, "younger than segment.ms")
        #expect(try partition.closeActiveSegment(nowMilliseconds: start + 10_001))
        _ = try await partition.append(makeBatch(count: 2, timestamp: start + 11_000))
        #expect(partition.segmentPaths.count == 2, "the append after the close began a new segment")
        try partition.advanceHighWatermark(to: 6)
        let removed = try temporary.store.enforceRetention(nowMilliseconds: start + 61_500)
        #expect(removed.batches == 2 && removed.segments == 1)
        #expect(partition.logStartOffset == 4 && partition.segmentPaths.count == 1)
        // The pass closed the active segment as well (its first batch was
        // 50 s old); once everything in it is old, it goes too, and appends go on.
        #expect(try partition.closeActiveSegment(nowMilliseconds: start + 200_000) == false, "closed already")
        #expect(try temporary.store.enforceRetention(nowMilliseconds: start + 200_000).segments == 1)
        #expect(partition.segmentPaths.isEmpty && partition.logStartOffset == 6)
        #expect(try await partition.append(makeBatch(timestamp: start + 200_000)).baseOffset == 6)
        try temporary.reopen(durability: .none)
        let reopened = try temporary.store.partition(topic: "t", index: 0)
        #expect(reopened.logStartOffset == 6 && reopened.logEndOffset == 7)
        #expect(try reopened.verify().isEmpty)
    }

    @Test func reconfiguringATopicAppliesAtOnceAndSurvivesARestart() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("t", configuration: TopicConfiguration(partitionCount: 2))
        let partition = try temporary.store.partition(topic: "t", index: 1)
        for _ in 0..<4 { _ = try await partition.append(makeBatch(count: 1, valueBytes: 100)) }
        try partition.advanceHighWatermark(to: 4)
        #expect(try partition.enforceRetention(nowMilliseconds: 0).batches == 0, "no retention set")
        var changed = try #require(temporary.store.topic(named: "t")).configuration
        changed.retentionBytes = 0
        changed.overrides = ["retention.bytes": "0"]
        try temporary.store.reconfigureTopic("t", to: changed)
        #expect(partition.configuration.retentionBytes == 0)
        #expect(try partition.enforceRetention(nowMilliseconds: 0).batches == 4)
        var indexed = changed
        indexed.conversationIndex = true
        #expect { try temporary.store.reconfigureTopic("t", to: indexed) } throws: { ($0 as? LogStoreError)?.code == .invalidConfiguration }
        try temporary.reopen(durability: .none)
        #expect(temporary.store.topic(named: "t")?.configuration.overrides == ["retention.bytes": "0"])
        #expect(try temporary.store.partition(topic: "t", index: 0).configuration.retentionBytes == 0)
    }
}

@Suite struct LogAppendTimeTests {
    @Test func aLogAppendTimeTopicStampsTheBrokersClockAndKeepsTheBatchValid() async throws {
        let path = NSTemporaryDirectory() + "postduif-logstore-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var options = LogStoreOptions(durability: .none)
        let clock = ManualWallClock(at: 1_800_000_000_123)
        options.wallClock = clock
        let store = try LogStore(path: path, options: options)
        defer { store.close() }
        try store.createTopic("stamped", configuration: TopicConfiguration(timestampType: .logAppendTime))
        try store.createTopic("as-sent", configuration: TopicConfiguration())
        let sent = makeBatch(count: 3, timestamp: 1_700_000_000_000)
        _ = try await store.partition(topic: "stamped", index: 0).append(sent)
        _ = try await store.partition(topic: "as-sent", index: 0).append(sent)
        let stamped = try #require(try store.partition(topic: "stamped", index: 0).read(from: 0, bytesMax: 1 << 20).parsed.first)
        #expect(stamped.usesLogAppendTime && stamped.maxTimestamp == 1_800_000_000_123)
        #expect(stamped.baseTimestamp == 1_700_000_000_000, "the records keep their own deltas")
        let kept = try #require(try store.partition(topic: "as-sent", index: 0).read(from: 0, bytesMax: 1 << 20).parsed.first)
        #expect(!kept.usesLogAppendTime && kept.maxTimestamp == 1_700_000_000_002)
        #expect(try store.partition(topic: "stamped", index: 0).verify().isEmpty)
    }
}
