import Core
import Foundation
import KafkaWire
import LogStore
import Synchronization
import Testing

/// Compaction with a manual clock: no sleeps, the time is an argument.
@Suite struct CompactionTests {
    static let now: Int64 = 1_800_000_000_000

    /// A store whose segments close every 4 KiB, so a few hundred records make many.
    static func smallSegmentStore() throws -> (LogStore, String) {
        let path = NSTemporaryDirectory() + "postduif-compaction-\(UUID().uuidString)"
        var options = LogStoreOptions(durability: .none)
        options.segmentBytes = 4096
        return (try LogStore(path: path, options: options), path)
    }

    /// A batch of updates: key `k<n % keys>`, value the record's own offset
    /// (so a read can check that offsets survive), or nil for a tombstone.
    static func updates(from offset: Int64, count: Int, keys: Int, keyPrefix: String = "k", tombstone: (Int64) -> Bool = { _ in false }, timestamp: Int64 = now - 3_600_000) -> [UInt8] {
        var builder = RecordBatchBuilder()
        for position in 0..<count {
            let at = offset + Int64(position)
            builder.append(key: Array("\(keyPrefix)\(at % Int64(keys))".utf8), value: tombstone(at) ? nil : Array(String(at).utf8), timestamp: timestamp)
        }
        return builder.build()
    }

    static func records(_ partition: PartitionLog) throws -> [(offset: Int64, key: String, value: String?)] {
        var result: [(Int64, String, String?)] = []
        var offset = partition.logStartOffset
        while offset < partition.logEndOffset {
            let read = try partition.read(from: offset, bytesMax: 1 << 20)
            guard !read.batches.isEmpty else { break }
            for bytes in read.batches {
                let batch = try RecordBatch(validating: bytes, bytesMax: Limits.batchBytesConfigurableMax)
                for record in try batch.records() where batch.baseOffset + Int64(record.offsetDelta) >= offset {
                    result.append((batch.baseOffset + Int64(record.offsetDelta), text(record.key), record.value.map(text)))
                }
                offset = batch.nextOffset
            }
        }
        return result
    }

    @Test func compactionKeepsEachKeysNewestRecordAtItsOwnOffset() async throws {
        let (store, path) = try Self.smallSegmentStore()
        defer { store.close(); try? FileManager.default.removeItem(atPath: path) }
        try store.createTopic("state", configuration: TopicConfiguration(cleanupPolicy: .compact))
        let partition = try store.partition(topic: "state", index: 0)
        for batch in 0..<100 { _ = try await partition.append(Self.updates(from: Int64(batch * 10), count: 10, keys: 25)) }
        try partition.advanceHighWatermark(to: 1000)
        let segmentsBefore = partition.segmentPaths.count
        #expect(segmentsBefore >= 5)
        let sizeBefore = partition.sizeBytes
        let outcome = try partition.compact(nowMilliseconds: Self.now)
        #expect(outcome.didWork)
        #expect(partition.segmentPaths.count < segmentsBefore)
        #expect(partition.sizeBytes < sizeBefore / 5)
        let kept = try Self.records(partition)
        // Every record's value is its own offset: offsets survived.
        #expect(kept.allSatisfy { $0.value == String($0.offset) })
        // Each key's newest record is there; no key appears twice in the compacted part.
        var newest: [String: Int64] = [:]
        for offset in Int64(0)..<1000 { newest["k\(offset % 25)"] = offset }
        for (key, offset) in newest { #expect(kept.contains { $0.key == key && $0.offset == offset }) }
        let activePath = try #require(partition.segmentPaths.last)
        let activeBase = try #require(Int64(URL(fileURLWithPath: activePath).deletingPathExtension().lastPathComponent))
        let keptClosed = kept.filter { $0.offset < activeBase }.count
        #expect(keptClosed <= 25, "the closed segments hold at most one record per key")
        #expect(outcome.recordsRemoved == Int(activeBase) - keptClosed)
        #expect(kept.filter { $0.offset >= activeBase }.count == Int(1000 - activeBase), "the active segment is untouched")
        #expect(partition.logEndOffset == 1000 && partition.logStartOffset == 0)
        #expect(try partition.verify().isEmpty)
        // Appends go on, at the next offset.
        #expect(try await partition.append(Self.updates(from: 1000, count: 1, keys: 25)).baseOffset == 1000)
        // A second pass finds too little new to clean (min.cleanable.dirty.ratio).
        #expect(try partition.compact(nowMilliseconds: Self.now).didWork == false)
    }

    @Test func tombstonesStayForTheirRetentionThenGo() async throws {
        let (store, path) = try Self.smallSegmentStore()
        defer { store.close(); try? FileManager.default.removeItem(atPath: path) }
        var configuration = TopicConfiguration(cleanupPolicy: .compact, tombstoneRetention: .seconds(60))
        configuration.cleanableDirtyRatioMin = 0
        try store.createTopic("state", configuration: configuration)
        let partition = try store.partition(topic: "state", index: 0)
        // Keys k0..k9; the last update of k3 (offset 593) is a tombstone.
        // Then other keys, so k3's tombstone lies in a closed segment.
        for batch in 0..<60 {
            _ = try await partition.append(Self.updates(from: Int64(batch * 10), count: 10, keys: 10, tombstone: { $0 == 593 }, timestamp: Self.now - 30_000))
        }
        for batch in 60..<100 {
            _ = try await partition.append(Self.updates(from: Int64(batch * 10), count: 10, keys: 10, keyPrefix: "other", timestamp: Self.now - 30_000))
        }
        try partition.advanceHighWatermark(to: 1000)
        try partition.compact(nowMilliseconds: Self.now)
        #expect(try Self.records(partition).contains { $0.key == "k3" && $0.value == nil }, "a tombstone younger than delete.retention.ms stays")
        let later = try partition.compact(nowMilliseconds: Self.now + 31_000)
        #expect(later.tombstonesRemoved == 1)
        #expect(try Self.records(partition).allSatisfy { $0.key != "k3" })
        #expect(try partition.verify().isEmpty)
    }

    @Test func recordsYoungerThanTheLagStayAndDeleteTopicsAreNotCompacted() async throws {
        let (store, path) = try Self.smallSegmentStore()
        defer { store.close(); try? FileManager.default.removeItem(atPath: path) }
        try store.createTopic("lagged", configuration: TopicConfiguration(cleanupPolicy: .compact, compactionLagMin: .seconds(600)))
        try store.createTopic("plain", configuration: TopicConfiguration())
        for name in ["lagged", "plain"] {
            let partition = try store.partition(topic: name, index: 0)
            for batch in 0..<50 { _ = try await partition.append(Self.updates(from: Int64(batch * 10), count: 10, keys: 5, timestamp: Self.now - 60_000)) }
            try partition.advanceHighWatermark(to: 500)
            #expect(try partition.compact(nowMilliseconds: Self.now).didWork == false, "\(name)")
        }
        let lagged = try store.partition(topic: "lagged", index: 0)
        #expect(try lagged.compact(nowMilliseconds: Self.now + 600_000).didWork)
    }

    @Test func aCompactedPartitionReopensAndItsConversationIndexFollows() async throws {
        let (store, path) = try Self.smallSegmentStore()
        var configuration = TopicConfiguration(conversationIndex: true, cleanupPolicy: .compact)
        configuration.cleanableDirtyRatioMin = 0
        try store.createTopic("rooms", configuration: configuration)
        let partition = try store.partition(topic: "rooms", index: 0)
        for batch in 0..<40 { _ = try await partition.append(Self.updates(from: Int64(batch * 10), count: 10, keys: 4)) }
        try partition.advanceHighWatermark(to: 400)
        #expect(try partition.compact(nowMilliseconds: Self.now).didWork)
        let history = try partition.history(conversation: Array("k1".utf8), from: .after(sequence: 0), limit: 1000)
        let kept = try Self.records(partition).filter { $0.key == "k1" }.map(\.offset)
        #expect(history.map(\.offset) == kept, "the index names exactly the records kept")
        #expect(try partition.verify().isEmpty)
        let before = try Self.records(partition).map(\.offset)
        store.close()
        let reopened = try LogStore(path: path, options: LogStoreOptions(durability: .none))
        defer { reopened.close(); try? FileManager.default.removeItem(atPath: path) }
        let again = try reopened.partition(topic: "rooms", index: 0)
        #expect(try Self.records(again).map(\.offset) == before)
        #expect(try again.verify().isEmpty)
        #expect(try await again.append(Self.updates(from: 400, count: 1, keys: 4)).baseOffset == 400)
    }

    /// The cleaner holds a partition's lock while it makes its bookkeeping
    /// durable; the group-commit thread calls the appends' completions,
    /// which take that lock to move the high watermark. So the cleaner must
    /// not wait for that thread: here a completion holds it (as one waiting
    /// for the lock would), and compaction and DeleteRecords still finish.
    /// (Before the fix the broker stopped answering Produce mid-compaction.)
    @Test func theCleanerDoesNotWaitForTheGroupCommitThread() async throws {
        let path = NSTemporaryDirectory() + "postduif-compaction-\(UUID().uuidString)"
        var options = LogStoreOptions(durability: .fsync)
        options.segmentBytes = 4096
        let store = try LogStore(path: path, options: options)
        defer { store.close(); try? FileManager.default.removeItem(atPath: path) }
        try store.createTopic("state", configuration: TopicConfiguration(cleanupPolicy: .compact))
        let partition = try store.partition(topic: "state", index: 0)
        for batch in 0..<100 { _ = try await partition.append(Self.updates(from: Int64(batch * 10), count: 10, keys: 25)) }
        try partition.advanceHighWatermark(to: 1000)

        let entered = DispatchSemaphore(value: 0)
        let gate = DispatchSemaphore(value: 0)
        let pending = try partition.write(Self.updates(from: 1000, count: 1, keys: 25))
        pending.whenDurable { _ in
            entered.signal()
            // A real completion would wait here for the partition's lock
            // (and, before the fix, forever); the gate lets the test end.
            gate.wait()
        }
        #expect(entered.wait(timeout: .now() + 10) == .success, "the append's completion ran")

        let cleaned = DispatchSemaphore(value: 0)
        let outcome = Mutex<(CompactionOutcome, Int64)?>(nil)
        Thread.detachNewThread {
            let compacted = (try? partition.compact(nowMilliseconds: Self.now)) ?? CompactionOutcome()
            let start = (try? partition.deleteRecords(before: 100)) ?? -1
            outcome.withLock { $0 = (compacted, start) }
            cleaned.signal()
        }
        let finished = cleaned.wait(timeout: .now() + 10) == .success
        gate.signal()
        #expect(finished, "compaction and DeleteRecords finished while the group-commit thread was busy")
        if !finished { cleaned.wait() }
        let (compacted, start) = try #require(outcome.withLock { $0 })
        #expect(compacted.didWork)
        #expect(start == 100)
        #expect(try partition.verify().isEmpty)
    }
}
