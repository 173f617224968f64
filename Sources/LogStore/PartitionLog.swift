import Core
import Foundation
import KafkaWire
import RocksDB
import Synchronization

/// The outcome of an append.
/// A batch written to the store but not yet known durable.
public struct PendingAppend: Sendable {
    let result: AppendResult
    let ticket: UInt64
    /// Nil when the durability mode acknowledges on write.
    let groupCommit: GroupCommit?

    /// Returns the append's result once it is durable under the store's
    /// durability mode; throws when the sync failed.
    public func durable() async throws -> AppendResult {
        if let groupCommit {
            try await groupCommit.waitDurable(ticket)
        }
        return result
    }

    /// Calls `done` with the append's result once it is durable (at once
    /// when the mode acknowledges on write, else from the group-commit
    /// thread), or with the sync's failure.
    public func whenDurable(_ done: @escaping @Sendable (Result<AppendResult, LogStoreError>) -> Void) {
        guard let groupCommit else { return done(.success(result)) }
        groupCommit.whenDurable(ticket) { [result] failure in
            done(failure.map { .failure($0) } ?? .success(result))
        }
    }
}

public struct AppendResult: Sendable, Equatable {
    /// The offset the batch's first record got (or, for a retry, had).
    public var baseOffset: Int64
    public var lastOffset: Int64
    /// True when the batch was a producer's retry of a stored batch and nothing was written.
    public var isDuplicate: Bool
    public var logStartOffset: Int64

    public init(baseOffset: Int64, lastOffset: Int64, isDuplicate: Bool, logStartOffset: Int64) {
        self.baseOffset = baseOffset
        self.lastOffset = lastOffset
        self.isDuplicate = isDuplicate
        self.logStartOffset = logStartOffset
    }
}

/// Whole batches read from a partition, with the offsets a Fetch answer needs.
public struct LogRead: Sendable {
    /// Stored batches, each exactly as validated and stamped.
    public var batches: [[UInt8]]
    public var highWatermark: Int64
    public var logStartOffset: Int64
    public var logEndOffset: Int64

    public var bytesCount: Int { batches.reduce(0) { $0 + $1.count } }
}

/// Where a history page starts.
public enum HistoryPosition: Sendable, Equatable {
    /// The newest messages.
    case latest
    /// Messages with a sequence below this one, newest first in the page's range.
    case before(sequence: UInt64)
    /// Messages with a sequence above this one.
    case after(sequence: UInt64)
}

/// One record of a conversation, found through the conversation index:
/// its sequence in the conversation (ADR 0004), where it is, and the record.
public struct ConversationMessage: Sendable, Equatable {
    /// The record's position in its conversation, from 1.
    public var sequence: UInt64
    public var offset: Int64
    public var timestamp: Int64
    public var key: [UInt8]
    public var value: [UInt8]?
    public var headers: [RecordHeader]

    public init(sequence: UInt64, offset: Int64, timestamp: Int64, key: [UInt8], value: [UInt8]?, headers: [RecordHeader]) {
        self.sequence = sequence
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers
    }
}

/// A leader epoch and the offset its first batch got.
public struct EpochEntry: Sendable, Equatable {
    public var epoch: Int32
    public var startOffset: Int64

    public init(epoch: Int32, startOffset: Int64) {
        self.epoch = epoch
        self.startOffset = startOffset
    }
}

/// A problem `verify()` found, with where it is.
public struct Damage: Sendable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32
    /// The base offset of the batch's key, or the index entry's offset.
    public var offset: Int64
    public var problem: String

    public var description: String { "\(topic)/\(partition) at offset \(offset): \(problem)" }
}

/// A partition's counters, for operators.
public struct PartitionSummary: Sendable {
    public var topic: String
    public var partition: Int32
    public var logStartOffset: Int64
    public var logEndOffset: Int64
    public var highWatermark: Int64
    public var sizeBytes: Int64
    public var batchCount: Int64
    public var leaderEpoch: Int32?
    public var producerCount: Int
}

/// One partition's log: its batches in segment files, and in the store's
/// RocksDB their locations keyed by base offset, its conversation index,
/// leader-epoch cache and producer state (Docs/adr/0013).
///
/// Appends to one partition are serialised by a mutex (offsets must be
/// handed out in order, and the conversation sequences with them); reads
/// take the mutex only to copy the offsets and the segment list, then read
/// RocksDB and the segments directly.
public final class PartitionLog: Sendable {
    public let topicName: String
    public let topicID: UInt32
    public let index: Int32
    /// The topic's settings; the broker changes them while the log runs
    /// (AlterConfigs), except the partition count and the conversation index.
    let settings: Mutex<TopicConfiguration>
    public var configuration: TopicConfiguration { settings.withLock { $0 } }
    /// Fixed for the log's life (copied out of `settings` for the append path).
    let conversationIndex: Bool
    let prefix: [UInt8]
    let context: StoreContext
    let state: Mutex<State>
    /// This partition's folder of segment files.
    let directory: String
    let notes = Mutex<[String]>([])

    /// What opening the store repaired in this partition after a crash, for the log.
    public var recoveryNotes: [String] { notes.withLock { $0 } }

    /// A producer's batch the store could not write, and why.
    struct UnwrittenBatch {
        var epoch: Int16
        var firstSequence: Int32
        var code: LogStoreError.Code
    }

    struct State {
        var logStartOffset: Int64 = 0
        var logEndOffset: Int64 = 0
        var highWatermark: Int64 = 0
        var sizeBytes: Int64 = 0
        var batchCount: Int64 = 0
        var epochs: [EpochEntry] = []
        var producers: [Int64: ProducerEntry] = [:]
        /// Per producer, the batch this store last failed to write (a full
        /// disk): see `appendLocked`.
        var unwritten: [Int64: UnwrittenBatch] = [:]
        /// Next sequence per conversation; a bounded cache over the index.
        var nextSequences = RecencyCache<[UInt8], UInt64>(countMax: Limits.conversationSequenceCacheCountMax)
        var isDeleted = false
        /// Bumped when the log's role changes; a follower's copy made under
        /// an older value is refused (`fenceReplicas`).
        var replicaFence: UInt64 = 0
        /// The partition's segment files, oldest first; appends go to the last.
        var segments: [SegmentFile] = []
        /// Where the next batch goes in the last segment.
        var activeSize: Int64 = 0
        /// Bumped by every truncation: a compaction that began before one
        /// does not swap its work in.
        var truncations: UInt64 = 0
        /// The active segment takes no more batches: the next one begins a
        /// new segment (`closeActiveSegment`, for `segment.ms`).
        var activeClosed = false
        /// The newest timestamp of the active segment's first batch (Kafka
        /// rolls a segment by it); nil while the segment is empty.
        var activeFirstTimestamp: Int64? = nil
        /// Bytes appended since this partition last asked for writeback
        /// (modes that do not sync: `GroupCommit.requestWriteback`).
        var bytesSinceWriteback: Int64 = 0
        /// The high watermark `checkpointHighWatermark` last wrote (appends'
        /// state records carry it too, without moving this).
        var checkpointedHighWatermark: Int64 = 0
        /// Appends' RocksDB entries not yet written (`writePendingEntries`).
        var pending = PendingEntries()

        func encoded() -> [UInt8] {
            var writer = ByteWriter(capacity: 33)
            writer.writeInt8(1)  // format version
            writer.writeInt64(logStartOffset)
            writer.writeInt64(highWatermark)
            writer.writeInt64(sizeBytes)
            writer.writeInt64(batchCount)
            return writer.bytes
        }
    }

    /// The RocksDB entries of appends made since the partition's last
    /// RocksDB write (ADR 0013, amended): their locations, index entries and
    /// epochs in one WriteBatch, and which producers they changed. Written
    /// as one, with one record of the partition state and of each producer
    /// however many appends changed them, before anything reads or writes
    /// the partition's keys, and once `Limits.pendingAppendEntriesMax`
    /// appends wait. Until then they exist only here: the segment is the
    /// truth, and opening the store after a crash rebuilds them from it, as
    /// it rebuilds a lost WAL buffer.
    ///
    /// The waiting appends' locations are kept beside them, in offset
    /// order: they are the log's newest batches, so a read from among them
    /// (a fan-out worker or a consumer at the log's end, the usual reader)
    /// finds its batches here without writing the entries or asking
    /// RocksDB.
    struct PendingEntries {
        var write = WriteBatch()
        var producers = Set<Int64>()
        var locations: [(baseOffset: Int64, location: BatchLocation)] = []
        /// Appends waiting: one location each.
        var appends: Int { locations.count }
    }

    init(topic: TopicDescriptor, index: Int32, context: StoreContext, recover: Bool) throws(LogStoreError) {
        topicName = topic.name
        topicID = topic.id
        self.index = index
        settings = Mutex(topic.configuration)
        conversationIndex = topic.configuration.conversationIndex
        prefix = Keys.partitionPrefix(topicID: topic.id, partition: index)
        self.context = context
        directory = context.segmentsPath + "/\(topic.id)-\(index)"
        var initial = State()
        if recover {
            initial = try PartitionLog.recoverState(prefix: prefix, context: context)
        }
        state = Mutex(initial)
        if recover {
            try recoverSegments()
        }
    }

    /// Rebuilds the in-memory state from what RocksDB holds. Everything was
    /// written in the same WriteBatch as the batch's location, so the parts
    /// agree; the log end offset comes from the last location. Whether the
    /// segments agree is `recoverSegments`'s question.
    static func recoverState(prefix: [UInt8], context: StoreContext) throws(LogStoreError) -> State {
        var state = State()
        let database = context.database
        do {
            if let record = try database.get(prefix, in: context.families.partitionState) {
                var reader = ByteReader(record)
                guard try reader.readInt8() == 1 else { throw LogStoreError(.corrupt, "unknown partition state version") }
                state.logStartOffset = try reader.readInt64()
                state.highWatermark = try reader.readInt64()
                state.sizeBytes = try reader.readInt64()
                state.batchCount = try reader.readInt64()
            }
            let logIterator = database.makeIterator(in: context.families.log, lowerBound: prefix, upperBound: Keys.end(of: prefix))
            logIterator.seekToLast()
            if logIterator.isValid {
                guard let location = BatchLocation(logIterator.valueView) else {
                    throw LogStoreError(.corrupt, "a batch location of partition \(prefix) is unreadable")
                }
                state.logEndOffset = location.lastOffset + 1
            } else {
                state.logEndOffset = state.logStartOffset
            }
            try logIterator.checkError()
            state.highWatermark = min(state.highWatermark, state.logEndOffset)
            state.checkpointedHighWatermark = state.highWatermark

            let epochIterator = database.makeIterator(in: context.families.epochs, lowerBound: prefix, upperBound: Keys.end(of: prefix))
            epochIterator.seekToFirst()
            while epochIterator.isValid {
                let epoch = Int32(bitPattern: Keys.readUInt32(epochIterator.keyView, at: prefix.count))
                let start = Int64(bitPattern: Keys.readUInt64(epochIterator.valueView, at: 0))
                state.epochs.append(EpochEntry(epoch: epoch, startOffset: start))
                epochIterator.next()
            }
            try epochIterator.checkError()

            let producerIterator = database.makeIterator(in: context.families.producers, lowerBound: prefix, upperBound: Keys.end(of: prefix))
            producerIterator.seekToFirst()
            while producerIterator.isValid {
                let producerID = Int64(bitPattern: Keys.readUInt64(producerIterator.keyView, at: prefix.count))
                state.producers[producerID] = try ProducerEntry(decoding: producerIterator.value)
                producerIterator.next()
            }
            try producerIterator.checkError()
        } catch let error as LogStoreError {
            throw error
        } catch let error as RocksDBError {
            throw .storage(error)
        } catch {
            throw LogStoreError(.corrupt, "partition state of \(prefix) unreadable: \(error)")
        }
        return state
    }

    /// How many bytes a partition appends, in modes that do not sync,
    /// before it asks for its segment's writeback to start.
    static let writebackBytes: Int64 = 4 << 20

    public var logStartOffset: Int64 { state.withLock { $0.logStartOffset } }
    public var logEndOffset: Int64 { state.withLock { $0.logEndOffset } }
    public var highWatermark: Int64 { state.withLock { $0.highWatermark } }
    public var sizeBytes: Int64 { state.withLock { $0.sizeBytes } }
    public var epochEntries: [EpochEntry] { state.withLock { $0.epochs } }

    public var summary: PartitionSummary {
        state.withLock { state in
            PartitionSummary(
                topic: topicName, partition: index, logStartOffset: state.logStartOffset,
                logEndOffset: state.logEndOffset, highWatermark: state.highWatermark, sizeBytes: state.sizeBytes,
                batchCount: state.batchCount, leaderEpoch: state.epochs.last?.epoch, producerCount: state.producers.count)
        }
    }

    /// Moves the high watermark forward (never back, never past the log end)
    /// and, with `persist`, writes it. The owner decides when: after a sync on
    /// a single node, when the in-sync replicas have the data in a cluster;
    /// and whether it is written: a partition without replicas takes its
    /// mark from its log at start, so it only carries it in its next state record.
    public func advanceHighWatermark(to offset: Int64, persist: Bool = true) throws(LogStoreError) {
        try state.withLock { state throws(LogStoreError) in
            let target = min(offset, state.logEndOffset)
            guard target > state.highWatermark else { return }
            state.highWatermark = target
            guard persist, !state.isDeleted else { return }
            // Under the lock, after the appends' entries: the partition's
            // keys in RocksDB stay a prefix of its writes.
            try writePendingEntries(&state)
            try storage { try context.database.put(prefix, state.encoded(), in: context.families.partitionState) }
        }
    }

    /// Writes the high watermark if it moved since the last checkpoint. A
    /// replicated partition's mark moves on every follower fetch, and
    /// writing it each time was a second RocksDB write (a WAL `write(2)`)
    /// per Produce on the leader and per copy on each follower; Kafka too
    /// checkpoints it every few seconds. A mark read back older than it was
    /// is safe: it only bounds what readers see until the leader's next
    /// word (a follower) or its followers' next fetches (a leader), and
    /// truncation after a restart follows the leader's epochs, not the mark.
    /// Under the partition's lock, so it is ordered with the appends' own
    /// state records.
    public func checkpointHighWatermark() throws(LogStoreError) {
        try state.withLock { state throws(LogStoreError) in
            guard !state.isDeleted, state.highWatermark != state.checkpointedHighWatermark else { return }
            try writePendingEntries(&state)
            do throws(RocksDBError) {
                try context.database.put(prefix, state.encoded(), in: context.families.partitionState)
            } catch {
                throw .storage(error)
            }
            state.checkpointedHighWatermark = state.highWatermark
        }
    }

    /// The newest leader epoch recorded, or nil before the first append.
    public var currentLeaderEpoch: Int32? { state.withLock { $0.epochs.last?.epoch } }

    /// The idempotent producers this partition remembers: id, epoch and the
    /// last sequence written (DescribeProducers).
    public var producers: [(producerID: Int64, epoch: Int16, lastSequence: Int32)] {
        state.withLock { state in
            state.producers.sorted { $0.key < $1.key }.map { ($0.key, $0.value.epoch, $0.value.batches.last?.lastSequence ?? -1) }
        }
    }

    /// The epoch of the batch holding `offset` (the last epoch that started at or before it).
    public func leaderEpoch(containing offset: Int64) -> Int32? {
        state.withLock { state in state.epochs.last(where: { $0.startOffset <= offset })?.epoch }
    }

    /// KIP-279's answer to OffsetForLeaderEpoch: for the current epoch the log
    /// end offset; for an older one, the largest epoch at or below it and the
    /// start offset of the epoch after it; below the first epoch, that
    /// epoch's start. Nil when no epoch is recorded at or after `epoch`.
    public func endOffset(forLeaderEpoch epoch: Int32) -> (epoch: Int32, endOffset: Int64)? {
        state.withLock { state in
            guard let first = state.epochs.first else { return nil }
            if epoch < first.epoch { return (epoch, first.startOffset) }
            guard let position = state.epochs.lastIndex(where: { $0.epoch <= epoch }) else { return nil }
            let found = state.epochs[position]
            if position == state.epochs.count - 1 { return (found.epoch, state.logEndOffset) }
            return (found.epoch, state.epochs[position + 1].startOffset)
        }
    }

    /// Marks the partition deleted and removes its segment files (readers
    /// that hold one keep reading it until they let go).
    /// The caller holds the store's layout lock.
    func markDeleted() {
        state.withLock { state in
            state.isDeleted = true
            state.segments.removeAll()
            // The topic's keys are deleted: its waiting entries must never follow.
            state.pending = PendingEntries()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Syncs every segment (a clean close, whatever the durability mode).
    /// Cuts the zeros written out ahead of the active segment's last batch,
    /// at a clean close, so the files end where their batches do.
    func retireActiveSegment() throws(LogStoreError) {
        try state.withLock { state throws(LogStoreError) in
            try state.segments.last?.retire(at: state.activeSize)
        }
    }

    func syncSegments() throws(LogStoreError) {
        let segments = state.withLock { $0.segments }
        for segment in segments { try segment.sync() }
    }

    /// Writes the appends' waiting RocksDB entries (`PendingEntries`), with
    /// the partition state and the producers they changed, buffered in the
    /// process as an append's own write was. Callers hold the state's lock;
    /// anything that reads or writes this partition's RocksDB keys calls it
    /// first. On failure the entries stay and the next call tries again.
    func writePendingEntries(_ state: inout State) throws(LogStoreError) {
        guard state.pending.appends > 0, !state.isDeleted else { return }
        let write = state.pending.write
        let families = context.families
        write.put(prefix, state.encoded(), in: families.partitionState)
        for producerID in state.pending.producers {
            guard let entry = state.producers[producerID] else { continue }
            write.put(Keys.producer(prefix: prefix, producerID: producerID), entry.encoded(), in: families.producers)
        }
        try storage { try context.database.write(write, sync: false, buffered: true) }
        write.clear()
        state.pending.producers.removeAll(keepingCapacity: true)
        state.pending.locations.removeAll(keepingCapacity: true)
    }

    /// `body` under the state's lock, once the appends' waiting entries are
    /// in RocksDB: how a reader of this partition's keys begins.
    func withEntriesWritten<T: Sendable>(_ body: (inout State) throws(LogStoreError) -> T) throws(LogStoreError) -> T {
        try state.withLock { state throws(LogStoreError) -> T in
            try writePendingEntries(&state)
            return try body(&state)
        }
    }

    /// Writes this partition's waiting entries (a clean close, a backup).
    func writePendingEntries() throws(LogStoreError) {
        try state.withLock { state throws(LogStoreError) in try writePendingEntries(&state) }
    }

    /// The paths of the partition's segment files, oldest first (for operators and tests).
    public var segmentPaths: [String] { state.withLock { $0.segments.map(\.path) } }
}
