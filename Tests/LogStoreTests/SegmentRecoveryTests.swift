import Core
import Foundation
import KafkaWire
import LogStore
import RocksDB
import Testing

/// What opening a store repairs after a machine crash, when the segment
/// files and RocksDB's entries reached the disk in different amounts
/// (Docs/adr/0013). A SIGKILL (CrashSafetyTests) leaves the page cache
/// whole, so these states are made by hand: the store is closed, its
/// clean-close marker removed, and its files cut or swapped.
@Suite struct SegmentRecoveryTests {
    func conversationTopic(_ store: LogStore) throws -> PartitionLog {
        try store.createTopic("conversations", configuration: TopicConfiguration(partitionCount: 1, conversationIndex: true))
        return try store.partition(topic: "conversations", index: 0)
    }

    /// Makes a closed store look as if its process had died: no clean-close marker.
    func forgetCleanClose(_ path: String) throws {
        let database = try Database(path: path, columnFamilies: [])
        defer { database.close() }
        let topics = try #require(database.columnFamily("topics"))
        try database.delete(Array("closed-cleanly".utf8), in: topics, sync: true)
    }

    func size(_ path: String) throws -> Int64 {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? -1
    }

    func messages(_ partition: PartitionLog, _ conversation: String) throws -> [(UInt64, String)] {
        try partition.history(conversation: Array(conversation.utf8), from: .after(sequence: 0), limit: 100).map { ($0.sequence, text($0.value)) }
    }

    @Test func aTornWriteAtTheEndOfASegmentIsCutOffAndAppendsContinue() async throws {
        let temporary = try TemporaryStore()
        var partition = try conversationTopic(temporary.store)
        for round in 0..<3 {
            _ = try await partition.append(makeBatch(count: 2, conversations: ["x", "y"], valuePrefix: "r\(round)-"))
        }
        let segment = try #require(partition.segmentPaths.last)
        let sizeBefore = try size(segment)
        temporary.store.close()
        try forgetCleanClose(temporary.path)
        // Half of a fourth batch reached the disk.
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        try handle.seekToEnd()
        try handle.write(contentsOf: Array(makeBatch(count: 2, conversations: ["x", "y"]).prefix(70)))
        try handle.close()

        try temporary.reopen()
        partition = try temporary.store.partition(topic: "conversations", index: 0)
        #expect(partition.logEndOffset == 6)
        #expect(try size(segment) == sizeBefore)
        #expect(temporary.store.recoveryNotes.contains { $0.contains("incomplete write") })
        #expect(try partition.verify().isEmpty)
        #expect(try await partition.append(makeBatch(count: 2, conversations: ["x", "y"], valuePrefix: "r3-")).baseOffset == 6)
        #expect(try messages(partition, "x").map(\.0) == [1, 2, 3, 4])
        try temporary.reopen()
        #expect(try temporary.store.partition(topic: "conversations", index: 0).verify().isEmpty)
    }

    @Test func locationsAheadOfTheirSegmentAreDroppedWithTheirIndexEntries() async throws {
        let temporary = try TemporaryStore()
        var partition = try conversationTopic(temporary.store)
        for round in 0..<3 {
            _ = try await partition.append(makeBatch(count: 2, conversations: ["x", "y"], valuePrefix: "r\(round)-"))
        }
        let segment = try #require(partition.segmentPaths.last)
        temporary.store.close()
        try forgetCleanClose(temporary.path)
        // RocksDB's WAL reached the disk; the segment's last batch only in part.
        let handle = try #require(FileHandle(forWritingAtPath: segment))
        try handle.truncate(atOffset: UInt64(try size(segment) - 10))
        try handle.close()

        try temporary.reopen()
        partition = try temporary.store.partition(topic: "conversations", index: 0)
        #expect(partition.logEndOffset == 4)
        #expect(temporary.store.recoveryNotes.contains { $0.contains("from offset 4") })
        #expect(try partition.verify(checkIndex: true).isEmpty)
        #expect(try messages(partition, "x").map(\.1) == ["r0-0", "r1-0"])
        // The next message of x takes the sequence the dropped one had.
        _ = try await partition.append(makeBatch(count: 1, conversations: ["x"], valuePrefix: "again-"))
        #expect(try messages(partition, "x").map(\.0) == [1, 2, 3])
        #expect(try partition.verify(checkIndex: true).isEmpty)
    }

    @Test func batchesTheSegmentHoldsBeyondRocksDBAreRecordedAsTheirAppendsWould() async throws {
        let temporary = try TemporaryStore()
        var partition = try conversationTopic(temporary.store)
        func producerBatch(_ sequence: Int32) -> [UInt8] {
            makeBatch(count: 2, conversations: ["x", "y"], valuePrefix: "s\(sequence)-", producerID: 42, producerEpoch: 0, baseSequence: sequence)
        }
        _ = try await partition.append(producerBatch(0))
        _ = try await partition.append(producerBatch(2))
        temporary.store.close()
        let saved = temporary.path + "-rocksdb"
        try FileManager.default.copyItem(atPath: temporary.path, toPath: saved)
        defer { try? FileManager.default.removeItem(atPath: saved) }

        try temporary.reopen()
        partition = try temporary.store.partition(topic: "conversations", index: 0)
        _ = try await partition.append(producerBatch(4))
        temporary.store.close()
        // RocksDB as it was before the third append; the segment with it.
        for name in try FileManager.default.contentsOfDirectory(atPath: temporary.path) where name != "segments" {
            try FileManager.default.removeItem(atPath: temporary.path + "/" + name)
        }
        for name in try FileManager.default.contentsOfDirectory(atPath: saved) where name != "segments" {
            try FileManager.default.copyItem(atPath: saved + "/" + name, toPath: temporary.path + "/" + name)
        }
        try forgetCleanClose(temporary.path)

        try temporary.reopen()
        partition = try temporary.store.partition(topic: "conversations", index: 0)
        #expect(partition.logEndOffset == 6)
        #expect(temporary.store.recoveryNotes.contains { $0.contains("recorded 1 batches") })
        #expect(try partition.verify(checkIndex: true).isEmpty)
        #expect(try messages(partition, "y").map(\.0) == [1, 2, 3])
        #expect(try messages(partition, "y").last?.1 == "s4-1")
        // The producer's sequences were replayed too: a retry is recognised.
        let retry = try await partition.append(producerBatch(4))
        #expect(retry.isDuplicate && retry.baseOffset == 4)
        #expect(partition.summary.sizeBytes == Int64(try partition.read(from: 0, bytesMax: Int.max).bytesCount))
    }

    /// The store's files copied while it runs, as a SIGKILL leaves them (the
    /// page cache holds what the process wrote; RocksDB's WAL buffer and
    /// the appends' waiting entries are gone with the process).
    func copyAsAfterAProcessCrash(_ path: String) throws -> String {
        let copy = path + "-killed"
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: path) where name != "LOCK" {
            try FileManager.default.copyItem(atPath: path + "/" + name, toPath: copy + "/" + name)
        }
        return copy
    }

    @Test func appendsWhoseEntriesWaitedInTheProcessAreRebuiltAfterItDies() async throws {
        let temporary = try TemporaryStore(durability: .none)
        let partition = try conversationTopic(temporary.store)
        func producerBatch(_ sequence: Int32) -> [UInt8] {
            makeBatch(count: 2, conversations: ["x", "y"], valuePrefix: "s\(sequence)-", producerID: 42, producerEpoch: 0, baseSequence: sequence)
        }
        // Two appends whose entries a history read wrote and the next write
        // of another key took to RocksDB's WAL file, then ten that only wait.
        _ = try await partition.append(producerBatch(0))
        _ = try await partition.append(producerBatch(2))
        #expect(try messages(partition, "y").count == 2)
        try temporary.store.createTopic("other", configuration: TopicConfiguration(partitionCount: 1))
        for sequence in stride(from: Int32(4), to: 24, by: 2) { _ = try await partition.append(producerBatch(sequence)) }
        let copy = try copyAsAfterAProcessCrash(temporary.path)
        defer { try? FileManager.default.removeItem(atPath: copy) }

        let reopened = try LogStore(path: copy, options: LogStoreOptions(durability: .none))
        defer { reopened.close() }
        let recovered = try reopened.partition(topic: "conversations", index: 0)
        #expect(recovered.logEndOffset == 24)
        #expect(reopened.recoveryNotes.contains { $0.contains("recorded 10 batches") }, "\(reopened.recoveryNotes)")
        #expect(try recovered.verify(checkIndex: true).isEmpty)
        #expect(try messages(recovered, "y").map(\.0) == Array(1...12))
        #expect(recovered.summary.sizeBytes == Int64(try recovered.read(from: 0, bytesMax: Int.max).bytesCount))
        #expect(recovered.summary.batchCount == 12)
        // The producer's sequences were rebuilt too: a retry is recognised.
        let retry = try await recovered.append(producerBatch(22))
        #expect(retry.isDuplicate && retry.baseOffset == 22)
        // The live store reads them all through its waiting entries.
        #expect(try partition.read(from: 0, bytesMax: Int.max).batches.count == 12)
        #expect(try messages(partition, "x").count == 12)
    }

    @Test func atMostALimitOfAppendsWaitsForItsEntriesAndAReadWritesThem() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("plain", configuration: TopicConfiguration(partitionCount: 1))
        let partition = try temporary.store.partition(topic: "plain", index: 0)
        func locationsInRocksDB() -> Int? { temporary.store.logProperty("rocksdb.num-entries-active-mem-table").flatMap { Int($0) } }
        let limit = Limits.pendingAppendEntriesMax
        for _ in 0..<(limit * 2 + 5) { _ = try await partition.append(makeBatch()) }
        #expect(locationsInRocksDB() == limit * 2, "the last five wait")
        #expect(try partition.read(from: 0, bytesMax: Int.max).batches.count == limit * 2 + 5)
        #expect(locationsInRocksDB() == limit * 2 + 5)
    }

    @Test func aReadAmongTheWaitingAppendsLeavesThemWaitingAndGivesWhatRocksDBWould() async throws {
        let temporary = try TemporaryStore(durability: .none)
        try temporary.store.createTopic("plain", configuration: TopicConfiguration(partitionCount: 1))
        let partition = try temporary.store.partition(topic: "plain", index: 0)
        func entriesInRocksDB() -> Int? { temporary.store.logProperty("rocksdb.num-entries-active-mem-table").flatMap { Int($0) } }
        // Four appends whose entries are written, then ten of one to three
        // records and of different sizes that wait.
        for _ in 0..<4 { _ = try await partition.append(makeBatch()) }
        _ = try partition.offset(forTimestamp: 0)
        for index in 0..<10 { _ = try await partition.append(makeBatch(count: 1 + index % 3, valueBytes: 100 * (index % 4))) }
        let written = entriesInRocksDB()
        let end = partition.logEndOffset
        let batchBytes = try partition.read(from: 4, bytesMax: 1).bytesCount
        var asks: [(offset: Int64, bytesMax: Int, maxOffset: Int64?)] = []
        for offset in 0...end {
            for bytesMax in [1, batchBytes, 3 * batchBytes, Int.max] {
                for maxOffset in [nil, end - 1, offset + 2] { asks.append((offset, bytesMax, maxOffset)) }
            }
        }
        func read(_ asks: [(offset: Int64, bytesMax: Int, maxOffset: Int64?)]) throws -> [[[UInt8]]] {
            try asks.map { try partition.read(from: $0.offset, bytesMax: $0.bytesMax, maxOffset: $0.maxOffset).batches }
        }
        let amongThem = asks.filter { $0.offset >= 4 }
        let fromTheWaiting = try read(amongThem)
        #expect(entriesInRocksDB() == written, "reads from among the waiting appends wrote nothing")
        #expect(fromTheWaiting.contains { $0.count > 1 })
        // A read from before them writes them; then every ask goes to RocksDB.
        #expect(try partition.read(from: 0, bytesMax: 1).batches.count == 1)
        #expect(entriesInRocksDB() ?? 0 > written ?? 0)
        #expect(try read(amongThem) == fromTheWaiting)
    }

    @Test func aCleanlyClosedStoreMissingASegmentFileOpensReportsItAndAppendsAfterTheRest() async throws {
        let path = NSTemporaryDirectory() + "postduif-missing-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var options = LogStoreOptions()
        options.segmentBytes = 4096
        var store = try LogStore(path: path, options: options)
        try store.createTopic("t", configuration: TopicConfiguration())
        var partition = try store.partition(topic: "t", index: 0)
        for round in 0..<6 {
            _ = try await partition.append(makeBatch(count: 1, valuePrefix: "b\(round)-", valueBytes: 1000))
        }
        let segments = partition.segmentPaths
        #expect(segments.count >= 2)
        store.close()
        // A lost file: the newest segment, and with it the newest locations' batches.
        try FileManager.default.removeItem(atPath: try #require(segments.last))
        let remaining = try size(segments[segments.count - 2])

        store = try LogStore(path: path, options: options)
        defer { store.close() }
        partition = try store.partition(topic: "t", index: 0)
        #expect(try !partition.verify().isEmpty, "the lost batches are reported as damage")
        _ = try await partition.append(makeBatch(count: 1, valuePrefix: "after-"))
        // Nothing the remaining segment held was written over.
        #expect(try size(segments[segments.count - 2]) >= remaining)
        #expect(try partition.read(from: 0, bytesMax: Int.max).parsed.first?.baseOffset == 0)
    }

    @Test func segmentsRollAndRetentionRemovesWholeSegments() async throws {
        let path = NSTemporaryDirectory() + "postduif-segments-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var options = LogStoreOptions()
        options.segmentBytes = 4096
        var store = try LogStore(path: path, options: options)
        try store.createTopic("t", configuration: TopicConfiguration(retentionBytes: 6000))
        var partition = try store.partition(topic: "t", index: 0)
        for round in 0..<12 {
            _ = try await partition.append(makeBatch(count: 1, valuePrefix: "b\(round)-", valueBytes: 1000))
        }
        #expect(partition.segmentPaths.count >= 4, "segments of 4 KiB hold three 1 KiB batches each")
        let all = try partition.read(from: 0, bytesMax: Int.max).parsed
        #expect(all.map(\.baseOffset) == Array(0..<12))
        store.close()
        store = try LogStore(path: path, options: options)
        defer { store.close() }
        partition = try store.partition(topic: "t", index: 0)
        #expect(try partition.read(from: 0, bytesMax: Int.max).parsed.map(\.baseOffset) == Array(0..<12))
        let segmentsBefore = partition.segmentPaths
        try partition.advanceHighWatermark(to: 12)
        #expect(try partition.enforceRetention(nowMilliseconds: 0).batches > 0)
        #expect(partition.segmentPaths.count < segmentsBefore.count)
        for removed in Set(segmentsBefore).subtracting(partition.segmentPaths) {
            #expect(!FileManager.default.fileExists(atPath: removed))
        }
        let kept = try partition.read(from: partition.logStartOffset, bytesMax: Int.max).parsed
        #expect(kept.first?.baseOffset == partition.logStartOffset && kept.last?.baseOffset == 11)
        #expect(try partition.verify().isEmpty)
        // A follower's truncation into an earlier segment removes the later ones.
        #expect(try partition.truncate(to: 7) == 7)
        #expect(try partition.verify().isEmpty)
        #expect(try await partition.append(makeBatch(count: 1)).baseOffset == 7)
        #expect(try partition.read(from: partition.logStartOffset, bytesMax: Int.max).parsed.last?.baseOffset == 7)
    }
}
