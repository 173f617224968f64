import Foundation
import KafkaWire
import LogStore
import Synchronization

/// Committed offsets of consumer groups in a cluster, kept where Kafka
/// keeps them: as records in the replicated `__consumer_offsets` topic.
/// A group belongs to one partition of it (by Java's `String.hashCode`, as
/// Kafka maps groups, so every broker agrees without asking), and the
/// leader of that partition is the group's coordinator. A commit is an
/// append that waits for the in-sync replicas, so it survives the loss of
/// its coordinator like any acknowledged write; the new leader rebuilds
/// its view by reading the partition once.
///
/// Records carry JSON, readable with any consumer: key
/// `{"group","topic","partition"}`, value `{"offset","leaderEpoch","metadata"}`.
final class OffsetsTopic: Sendable {
    static let name = "__consumer_offsets"

    struct Key: Codable, Hashable {
        var group: String
        var topic: String
        var partition: Int32
    }

    struct Value: Codable {
        var offset: Int64
        var leaderEpoch: Int32
        var metadata: String?
    }

    /// One partition's view, valid for the leader epoch it was loaded at.
    struct View {
        var epoch: Int32
        /// Each key's committed value and the log offset it came from: a
        /// later record wins, whatever order commits finish in.
        var entries: [Key: (value: Value, logOffset: Int64)] = [:]
    }

    let partitionCount: Int32
    private let views = Mutex<[Int32: View]>([:])

    init(partitionCount: Int32) {
        self.partitionCount = max(partitionCount, 1)
    }

    /// The partition that holds a group: Kafka's `abs(groupId.hashCode) % n`.
    static func partition(for group: String, count: Int32) -> Int32 {
        var hash: Int32 = 0
        for unit in group.utf16 { hash = hash &* 31 &+ Int32(unit) }
        return (hash & 0x7fff_ffff) % count
    }

    func partition(for group: String) -> Int32 {
        Self.partition(for: group, count: partitionCount)
    }

    /// The records of one commit, as one uncompressed batch.
    static func batch(group: String, _ entries: [GroupOffsetEntry], timestamp: Int64) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var builder = RecordBatchBuilder()
        for entry in entries {
            let key = Key(group: group, topic: entry.topic, partition: entry.partition)
            let value = Value(offset: entry.committed.offset, leaderEpoch: entry.committed.leaderEpoch, metadata: entry.committed.metadata)
            builder.append(key: Array(try encoder.encode(key)), value: Array(try encoder.encode(value)), timestamp: timestamp)
        }
        return builder.build()
    }

    /// Tombstones for a group's offsets of some partitions, as one batch.
    static func tombstones(group: String, _ partitions: [(topic: String, partition: Int32)], timestamp: Int64) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var builder = RecordBatchBuilder()
        for (topic, partition) in partitions {
            builder.append(key: Array(try encoder.encode(Key(group: group, topic: topic, partition: partition))), value: nil, timestamp: timestamp)
        }
        return builder.build()
    }

    /// Tombstones appended at log offsets `baseOffset...`: the offsets go from the view.
    func remove(partition: Int32, epoch: Int32, group: String, _ partitions: [(topic: String, partition: Int32)], baseOffset: Int64) {
        views.withLock { views in
            guard views[partition]?.epoch == epoch else { return }
            for (position, entry) in partitions.enumerated() {
                let key = Key(group: group, topic: entry.topic, partition: entry.partition)
                if let current = views[partition]!.entries[key], current.logOffset > baseOffset + Int64(position) { continue }
                views[partition]!.entries[key] = nil
            }
        }
    }

    /// Makes sure the view of `partition` matches leader epoch `epoch`,
    /// reading the whole partition when it does not (this broker has just
    /// become its leader). Reads under the lock, so no commit applied
    /// meanwhile is overwritten by an older load.
    func load(partition: Int32, epoch: Int32, log: PartitionLog) throws {
        try views.withLock { views in
            if views[partition]?.epoch == epoch { return }
            var view = View(epoch: epoch)
            let decoder = JSONDecoder()
            var offset = log.logStartOffset
            let end = log.logEndOffset
            while offset < end {
                let read = try log.read(from: offset, bytesMax: 1 << 20)
                guard !read.batches.isEmpty else { break }
                for bytes in read.batches {
                    let batch = try RecordBatch(storedBytes: bytes)
                    for record in try batch.records() {
                        let position = batch.baseOffset + Int64(record.offsetDelta)
                        guard let keyBytes = record.key, let key = try? decoder.decode(Key.self, from: Data(keyBytes)) else { continue }
                        if let valueBytes = record.value, let value = try? decoder.decode(Value.self, from: Data(valueBytes)) {
                            view.entries[key] = (value, position)
                        } else {
                            view.entries[key] = nil
                        }
                    }
                    offset = batch.nextOffset
                }
            }
            views[partition] = view
        }
    }

    /// A committed batch of one group's offsets, at log offsets
    /// `baseOffset...`, in the order `batch` wrote them.
    func apply(partition: Int32, epoch: Int32, group: String, _ entries: [GroupOffsetEntry], baseOffset: Int64) {
        views.withLock { views in
            guard views[partition]?.epoch == epoch else { return }
            for (position, entry) in entries.enumerated() {
                let key = Key(group: group, topic: entry.topic, partition: entry.partition)
                let logOffset = baseOffset + Int64(position)
                if let current = views[partition]!.entries[key], current.logOffset > logOffset { continue }
                views[partition]!.entries[key] = (Value(offset: entry.committed.offset, leaderEpoch: entry.committed.leaderEpoch, metadata: entry.committed.metadata), logOffset)
            }
        }
    }

    /// A group's committed offsets, from a loaded view.
    func committed(group: String) -> [GroupOffsetEntry] {
        let partition = partition(for: group)
        return views.withLock { views in
            (views[partition]?.entries ?? [:]).compactMap { key, entry in
                guard key.group == group else { return nil }
                return GroupOffsetEntry(topic: key.topic, partition: key.partition,
                                        committed: CommittedOffset(offset: entry.value.offset, leaderEpoch: entry.value.leaderEpoch, metadata: entry.value.metadata))
            }
        }
    }

    /// This broker no longer leads `partition`: forget its view, so a later
    /// leadership reads the log again.
    func forget(partition: Int32) {
        _ = views.withLock { $0.removeValue(forKey: partition) }
    }
}
