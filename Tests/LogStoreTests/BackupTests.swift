import Core
import Foundation
import KafkaWire
import LogStore
import Synchronization
import Testing

/// `LogStore.backup` on a store that appends while it copies, and what
/// later cutting, compacting and deleting in the live store do to the copy
/// (nothing: closed segments are hard links, the rest copies).
@Suite struct BackupTests {
    static func store(_ path: String) throws -> LogStore {
        var options = LogStoreOptions(durability: .fsync)
        options.segmentBytes = 8192
        return try LogStore(path: path, options: options)
    }

    @Test func aBackupTakenWhileAppendsGoOnOpensToAPrefixOfTheLiveLog() async throws {
        let root = NSTemporaryDirectory() + "postduif-backup-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let live = try Self.store(root + "/live")
        defer { live.close() }
        try live.createTopic("rooms", configuration: TopicConfiguration(partitionCount: 2, conversationIndex: true))
        try live.createTopic("state", configuration: TopicConfiguration(partitionCount: 1, cleanupPolicy: .compact))
        let rooms = try (0..<2).map { try live.partition(topic: "rooms", index: $0) }
        let state = try live.partition(topic: "state", index: 0)
        for round in 0..<60 {
            for partition in rooms { _ = try await partition.append(makeBatch(count: 4, conversations: ["a", "b", "c"], valuePrefix: "r\(round)-", valueBytes: 100)) }
            _ = try await state.append(makeBatch(count: 4, conversations: ["k1", "k2"], valuePrefix: "s\(round)-", valueBytes: 100))
        }
        let before = rooms.map { $0.logEndOffset }
        #expect(rooms[0].segmentPaths.count >= 3, "several closed segments and an active one")

        // Appends on another thread for as long as the backup takes.
        let stop = Mutex(false)
        let appended = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var round = 0
            while !stop.withLock({ $0 }) && round < 5_000 {
                for partition in rooms {
                    let pending = try? partition.write(makeBatch(count: 2, conversations: ["a", "d"], valuePrefix: "during\(round)-", valueBytes: 100))
                    _ = pending
                }
                round += 1
            }
            appended.signal()
        }
        let summary = try live.backup(to: root + "/copy")
        stop.withLock { $0 = true }
        appended.wait()
        #expect(summary.partitions == 3)
        #expect(summary.segmentsLinked >= 4 && summary.segmentsCopied == 3)

        // A second backup to the same folder is refused, and leaves it alone.
        #expect(throws: LogStoreError.self) { try live.backup(to: root + "/copy") }

        // The live store goes on changing its files: compaction, truncation
        // of a partition's tail, a topic deleted. The copy keeps its own.
        let liveRooms = try rooms.map { try $0.storedBatches() }
        _ = try state.compact(nowMilliseconds: 1_900_000_000_000)
        try rooms[1].truncate(to: 10)
        try live.deleteTopic("state")

        let copy = try LogStore(path: root + "/copy", options: LogStoreOptions(durability: .fsync))
        defer { copy.close() }
        for index in 0..<2 {
            let partition = try copy.partition(topic: "rooms", index: Int32(index))
            let damage = try partition.verify()
            #expect(damage.isEmpty, "\(damage)")
            #expect(partition.logEndOffset >= before[index], "everything appended before the backup is in it")
            let copied = try partition.storedBatches()
            // Partition 1 too, though the live store cut it back to offset 10 after the backup.
            #expect(copied == Array(liveRooms[index].prefix(copied.count)), "the copy is a prefix of the live log, byte for byte")
        }
        let copiedState = try copy.partition(topic: "state", index: 0)
        #expect(try copiedState.verify().isEmpty)
        #expect(copiedState.logEndOffset == 240, "the copy still has the topic the live store deleted, whole")
        // And the copy is a store: it takes appends at its next offset.
        let next = try copy.partition(topic: "rooms", index: 0).logEndOffset
        #expect(try await copy.partition(topic: "rooms", index: 0).append(makeBatch()).baseOffset == next)
    }
}
