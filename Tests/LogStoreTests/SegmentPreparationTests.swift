import Core
import Foundation
import KafkaWire
import RocksDB
import Testing

@testable import LogStore

/// Segments written out ahead in `fsync` mode (`SegmentFile.prepare`,
/// Docs/adr/0034): appends land in blocks the file already has, and the
/// zeros beyond the last batch never reach a reader, a backup or a
/// reopened store as data, nor make a crash look like a torn write.
@Suite struct SegmentPreparationTests {
    static let valueBytes = 1000

    static func size(_ path: String) throws -> Int64 {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? -1
    }

    static func store(_ path: String, segmentBytes: Int64 = 128 << 20) throws -> LogStore {
        var options = LogStoreOptions(durability: .fsync)
        options.segmentBytes = segmentBytes
        return try LogStore(path: path, options: options)
    }

    /// Appends `count` batches of about 1 KiB; returns the bytes they take.
    static func fill(_ partition: PartitionLog, count: Int, from round: Int = 0) async throws -> Int64 {
        var bytes: Int64 = 0
        for position in round..<(round + count) {
            let batch = makeBatch(count: 1, conversations: ["c\(position % 7)"], valuePrefix: "v\(position)-", valueBytes: valueBytes)
            _ = try await partition.append(batch)
            bytes += Int64(batch.count)
        }
        return bytes
    }

    /// A run of large batches (a file's chunks) asks for no zeros: the
    /// segment grows by exactly what is appended.
    @Test func largeBatchesAreNotWrittenOutAhead() async throws {
        let root = NSTemporaryDirectory() + "postduif-prepare-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try Self.store(root)
        defer { store.close() }
        try store.createTopic("files", configuration: TopicConfiguration(partitionCount: 1))
        let partition = try store.partition(topic: "files", index: 0)
        var stored: Int64 = 0
        for position in 0..<6 {
            let batch = makeBatch(count: 1, conversations: ["f"], valuePrefix: "chunk\(position)-", valueBytes: Limits.segmentPreparedBatchBytesMax)
            #expect(batch.count >= Limits.segmentPreparedBatchBytesMax)
            _ = try await partition.append(batch)
            stored += Int64(batch.count)
            store.context.groupCommit.waitForPreparations()
            #expect(try Self.size(try #require(partition.segmentPaths.last)) == stored)
        }
        // One small batch after them asks again.
        stored += try await Self.fill(partition, count: 1)
        store.context.groupCommit.waitForPreparations()
        #expect(try Self.size(try #require(partition.segmentPaths.last)) > stored)
    }

    @Test func anActiveSegmentIsWrittenOutAheadAndEndsWithItsBatchesAtAcleanClose() async throws {
        let root = NSTemporaryDirectory() + "postduif-prepare-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        var store = try Self.store(root)
        try store.createTopic("rooms", configuration: TopicConfiguration(partitionCount: 1))
        var partition = try store.partition(topic: "rooms", index: 0)

        // Below the minimum nothing is written out ahead.
        var stored = try await Self.fill(partition, count: 20)
        store.context.groupCommit.waitForPreparations()
        let segment = try #require(partition.segmentPaths.last)
        #expect(try Self.size(segment) == stored)

        // Past it, the file is longer than its batches, and the next
        // append lands inside it.
        stored += try await Self.fill(partition, count: 60, from: 20)
        store.context.groupCommit.waitForPreparations()
        let prepared = try Self.size(segment)
        #expect(prepared > stored + 16 << 10, "written out ahead: \(prepared) bytes for \(stored)")
        #expect(prepared <= stored + Limits.segmentPreparedBytesMax)
        stored += try await Self.fill(partition, count: 1, from: 80)
        #expect(try Self.size(segment) == prepared, "an append inside the written-out space does not grow the file")
        let written = try partition.storedBatches()
        #expect(written.count == 81)
        #expect(try partition.verify().isEmpty)

        // A clean close cuts the zeros: the file ends with its last batch.
        store.close()
        #expect(try Self.size(segment) == stored)
        store = try Self.store(root)
        defer { store.close() }
        #expect(store.recoveryNotes.isEmpty, "\(store.recoveryNotes)")
        partition = try store.partition(topic: "rooms", index: 0)
        #expect(partition.logEndOffset == 81)
        #expect(try partition.storedBatches() == written)
        #expect(try await partition.append(makeBatch(valuePrefix: "after")).baseOffset == 81)
    }

    @Test func aStoreThatDiedWithZerosAheadCutsThemAsSpaceNotAsATornWrite() async throws {
        let root = NSTemporaryDirectory() + "postduif-prepare-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let live = try Self.store(root + "/live")
        defer { live.close() }
        try live.createTopic("rooms", configuration: TopicConfiguration(partitionCount: 1, conversationIndex: true))
        let partition = try live.partition(topic: "rooms", index: 0)
        let stored = try await Self.fill(partition, count: 90)
        live.context.groupCommit.waitForPreparations()
        let segment = try #require(partition.segmentPaths.last)
        #expect(try Self.size(segment) > stored)
        let written = try partition.storedBatches()

        // A copy of the files while the store runs is what a SIGKILL
        // leaves: the zeros, and RocksDB without its buffered entries.
        try FileManager.default.copyItem(atPath: root + "/live", toPath: root + "/killed")
        let killed = try Self.store(root + "/killed")
        defer { killed.close() }
        #expect(!killed.recoveryNotes.contains { $0.contains("incomplete write") }, "\(killed.recoveryNotes)")
        let reopened = try killed.partition(topic: "rooms", index: 0)
        #expect(reopened.logEndOffset == 90)
        #expect(try Self.size(try #require(reopened.segmentPaths.last)) == stored)
        #expect(try reopened.verify(checkIndex: true).isEmpty)
        #expect(try reopened.storedBatches() == written)
        #expect(try await reopened.append(makeBatch(conversations: ["c1"], valuePrefix: "after")).baseOffset == 90)
    }

    /// A machine crash can lose the cut of an earlier segment's zeros (made
    /// as the next segment began) and RocksDB's entries for the batches
    /// after it: opening the store then replays through those zeros into
    /// the next segment, rather than ending the log there and removing it.
    @Test func zerosLeftAtTheEndOfAnEarlierSegmentDoNotEndTheLog() async throws {
        let root = NSTemporaryDirectory() + "postduif-prepare-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let live = try Self.store(root + "/live", segmentBytes: 128 << 10)
        try live.createTopic("rooms", configuration: TopicConfiguration(partitionCount: 1, conversationIndex: true))
        let partition = try live.partition(topic: "rooms", index: 0)
        _ = try await Self.fill(partition, count: 80)
        live.context.groupCommit.waitForPreparations()
        let first = try #require(partition.segmentPaths.first)
        #expect(try Self.size(first) <= 128 << 10, "never written out past the segment's size")
        // RocksDB as it was here, with the first segment still active.
        _ = try live.backup(to: root + "/crashed")

        _ = try await Self.fill(partition, count: 100, from: 80)
        #expect(partition.segmentPaths.count >= 2)
        let firstBytes = try Self.size(first)
        let written = try partition.storedBatches()
        let liveSegments = partition.segmentPaths
        live.close()

        // The crashed store: RocksDB from before the roll, the segments
        // from after it, and the first segment's zeros never cut.
        let folder = root + "/crashed/segments/" + URL(fileURLWithPath: first).deletingLastPathComponent().lastPathComponent
        for path in try FileManager.default.contentsOfDirectory(atPath: folder) {
            try FileManager.default.removeItem(atPath: folder + "/" + path)
        }
        for path in liveSegments {
            try FileManager.default.copyItem(atPath: path, toPath: folder + "/" + URL(fileURLWithPath: path).lastPathComponent)
        }
        let handle = try #require(FileHandle(forWritingAtPath: folder + "/" + URL(fileURLWithPath: first).lastPathComponent))
        try handle.seekToEnd()
        try handle.write(contentsOf: [UInt8](repeating: 0, count: 12_288))
        try handle.close()

        let crashed = try Self.store(root + "/crashed", segmentBytes: 128 << 10)
        defer { crashed.close() }
        #expect(!crashed.recoveryNotes.contains { $0.contains("after a gap") || $0.contains("incomplete write") }, "\(crashed.recoveryNotes)")
        let reopened = try crashed.partition(topic: "rooms", index: 0)
        #expect(reopened.logEndOffset == 180)
        #expect(try reopened.storedBatches() == written)
        #expect(try reopened.verify(checkIndex: true).isEmpty)
        #expect(try Self.size(try #require(reopened.segmentPaths.first)) == firstBytes)
        #expect(try await reopened.append(makeBatch(conversations: ["c1"], valuePrefix: "after")).baseOffset == 180)
    }

    @Test func everySegmentEndsWithItsLastBatchOnceTheNextBegins() async throws {
        let root = NSTemporaryDirectory() + "postduif-prepare-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try Self.store(root, segmentBytes: 128 << 10)
        try store.createTopic("rooms", configuration: TopicConfiguration(partitionCount: 1))
        let partition = try store.partition(topic: "rooms", index: 0)
        let stored = try await Self.fill(partition, count: 600)
        let paths = partition.segmentPaths
        #expect(paths.count >= 4)
        // While the store runs, the closed segments hold their batches and
        // nothing more, zeros being written as one stopped being active
        // included; only the active one may be longer than its batches.
        let inClosed = try paths.dropLast().reduce(Int64(0)) { $0 + (try Self.size($1)) }
        store.context.groupCommit.waitForPreparations()
        let last = try #require(paths.last)
        #expect(inClosed + (try Self.size(last)) >= stored)
        store.close()
        #expect(inClosed + (try Self.size(last)) == stored)
    }

    @Test func aBackupCopiesTheActiveSegmentWithoutItsZeros() async throws {
        let root = NSTemporaryDirectory() + "postduif-prepare-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let live = try Self.store(root + "/live")
        defer { live.close() }
        try live.createTopic("rooms", configuration: TopicConfiguration(partitionCount: 1))
        let partition = try live.partition(topic: "rooms", index: 0)
        let stored = try await Self.fill(partition, count: 90)
        live.context.groupCommit.waitForPreparations()
        let segment = try #require(partition.segmentPaths.last)
        #expect(try Self.size(segment) > stored)
        let summary = try live.backup(to: root + "/copy")
        #expect(summary.bytesCopied == stored)
    }

    /// A round syncs a segment's data alone, flushing the disk's cache
    /// once for all of them (Docs/adr/0039), only where nothing but data
    /// changed: writes inside blocks written out ahead, on a file system
    /// that writes over them in place, since the file's size was last
    /// synced. Growing the file, cutting it or opening it asks for its
    /// metadata too.
    @Test func aRoundSyncsDataAloneOnlyWhereNothingButDataChanged() throws {
        let root = NSTemporaryDirectory() + "postduif-prepare-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let segment = try SegmentFile(directory: root, baseOffset: 0, create: true)
        // Where the file system moves written blocks (copy on write), a
        // write over them changes the file's extents: never data alone.
        let dataAlone: SegmentFile.SyncNeed = segment.overwritesInPlace ? .data : .dataAndMetadata
        let batch = [UInt8](repeating: 7, count: 4096)

        #expect(segment.syncNeed() == .dataAndMetadata, "opened by this process")
        #expect(segment.syncNeed() == dataAlone, "nothing written since")
        try segment.write(head: [], rest: batch, at: 0)
        #expect(segment.syncNeed() == .dataAndMetadata, "grew")

        guard case .written = segment.prepare(ahead: 64 << 10, limit: 1 << 20) else {
            Issue.record("zeros were not written out ahead")
            return
        }
        try segment.write(head: [], rest: batch, at: 4096)
        try segment.write(head: [], rest: batch, at: 8192)
        #expect(segment.syncNeed() == dataAlone, "written over zeros synced ahead")
        #expect(GroupCommit.sync([segment]) == nil)

        try segment.write(head: [], rest: batch, at: 68 << 10)
        #expect(segment.syncNeed() == .dataAndMetadata, "past the zeros")
        try segment.truncate(to: 8192)
        #expect(segment.syncNeed() == .dataAndMetadata, "cut")
        #expect(segment.syncNeed() == dataAlone, "its size synced by the round that asked")

        // A round over several segments, some needing metadata and some
        // not, leaves every byte in place.
        let other = try SegmentFile(directory: root, baseOffset: 100, create: true)
        try other.write(head: [], rest: batch, at: 0)
        try segment.write(head: [], rest: [UInt8](repeating: 9, count: 100), at: 8192)
        #expect(GroupCommit.sync([segment, other]) == nil)
        #expect(try segment.read(at: 8192, count: 100) == [UInt8](repeating: 9, count: 100))
        #expect(try other.read(at: 0, count: 4096) == batch)

    }
}
