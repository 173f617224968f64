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

/// One message of a conversation, found through the conversation index:
/// the record the extension APIs carry as is.
public typealias ConversationMessage = ConversationRecord

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
    public let configuration: TopicConfiguration
    let prefix: [UInt8]
    private let context: StoreContext
    private let state: Mutex<State>
    /// This partition's folder of segment files.
    let directory: String
    private let notes = Mutex<[String]>([])

    /// What opening the store repaired in this partition after a crash, for the log.
    public var recoveryNotes: [String] { notes.withLock { $0 } }

    struct State {
        var logStartOffset: Int64 = 0
        var logEndOffset: Int64 = 0
        var highWatermark: Int64 = 0
        var sizeBytes: Int64 = 0
        var batchCount: Int64 = 0
        var epochs: [EpochEntry] = []
        var producers: [Int64: ProducerEntry] = [:]
        /// Next sequence per conversation; a bounded cache over the index.
        var nextSequences: [[UInt8]: UInt64] = [:]
        var isDeleted = false
        /// Bumped when the log's role changes; a follower's copy made under
        /// an older value is refused (`fenceReplicas`).
        var replicaFence: UInt64 = 0
        /// The partition's segment files, oldest first; appends go to the last.
        var segments: [SegmentFile] = []
        /// Where the next batch goes in the last segment.
        var activeSize: Int64 = 0
        /// Bytes appended since this partition last asked for writeback
        /// (modes that do not sync: `GroupCommit.requestWriteback`).
        var bytesSinceWriteback: Int64 = 0

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

    init(topic: TopicDescriptor, index: Int32, context: StoreContext, recover: Bool) throws(LogStoreError) {
        topicName = topic.name
        topicID = topic.id
        self.index = index
        configuration = topic.configuration
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
    private static func recoverState(prefix: [UInt8], context: StoreContext) throws(LogStoreError) -> State {
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

    // MARK: Recovery

    /// Makes RocksDB and the segments agree after opening. Appends write the
    /// segment first and RocksDB second, neither synced except the segment
    /// in `fsync` mode, so after a machine crash either may hold more than
    /// the other:
    ///
    /// - RocksDB ahead (its WAL reached the disk, the segment's tail did
    ///   not): the newest locations are checked against their segments, and
    ///   everything from the first one that fails is truncated away. Nothing
    ///   acknowledged is lost: in `fsync` mode an acknowledgement waited for
    ///   the segment's sync.
    /// - The segment ahead (the usual case after a crash in `fsync` mode):
    ///   the batches after the last location are read, checked (CRC-32C,
    ///   consecutive offsets) and recorded as their appends would have
    ///   recorded them. The first that fails ends the log: a torn write is
    ///   cut off, and later segments removed.
    func recoverSegments() throws(LogStoreError) {
        let names: [String]
        do {
            names = FileManager.default.fileExists(atPath: directory) ? try FileManager.default.contentsOfDirectory(atPath: directory) : []
        } catch {
            throw LogStoreError(.io(EIO), "cannot list \(directory): \(error)")
        }
        let bases = names.compactMap(SegmentFile.baseOffset(ofName:)).sorted()
        var segments: [SegmentFile] = []
        for base in bases {
            segments.append(try SegmentFile(directory: directory, baseOffset: base, create: false))
        }
        var repairs: [String] = []
        defer {
            let found = repairs.map { "\(topicName)/\(index): \($0)" }
            notes.withLock { $0 = found }
        }
        try state.withLock { state throws(LogStoreError) in
            state.segments = segments
            let families = context.families

            // The newest location whose batch its segment really holds.
            let iterator = context.database.makeIterator(in: families.log, lowerBound: prefix, upperBound: Keys.end(of: prefix))
            iterator.seekToLast()
            var lastGood: BatchLocation? = nil
            var cut: Int64? = nil
            while iterator.isValid {
                let base = Int64(bitPattern: Keys.readUInt64(iterator.keyView, at: prefix.count))
                let location = BatchLocation(iterator.valueView)
                // After a clean close nothing was being written: the last
                // location stands unread, and a batch failing its check is
                // damage, which `verify` reports, never a torn write to cut.
                if let location, context.closedCleanly {
                    lastGood = location
                    break
                }
                if let location, let stored = try readBatch(at: location, segments: segments),
                   let batch = try? RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax), batch.baseOffset == base
                {
                    lastGood = location
                    break
                }
                cut = base
                iterator.previous()
            }
            try storage { try iterator.checkError() }
            _ = consume iterator
            if let cut {
                try applyTruncation(cut: cut, conversations: nil, state: &state)
                repairs.append("batches from offset \(cut) on were not whole in their segment after a crash and were dropped")
            }

            // Replay what the segments hold after it.
            var segmentIndex: Int
            var position: Int64
            if let lastGood {
                // Missing only when a cleanly closed store lost a segment
                // file (damage, for `verify`): nothing is scanned or cut then.
                segmentIndex = segments.firstIndex { $0.baseOffset == lastGood.segmentBase } ?? segments.count
                position = lastGood.end
            } else {
                // No location: the log is empty (or emptied by retention) in
                // RocksDB; start in the segment that holds its end.
                segmentIndex = max(0, (segments.lastIndex { $0.baseOffset <= state.logEndOffset }) ?? 0)
                position = 0
            }
            var replayed = 0
            scan: while segmentIndex < segments.count {
                let segment = segments[segmentIndex]
                let size = try segment.size()
                while position < size {
                    guard let batch = try PartitionLog.batch(in: segment, at: position, size: size) else { break scan }
                    if batch.nextOffset <= state.logEndOffset {
                        // Dropped by retention below the log start: skip it.
                        position += Int64(batch.sizeBytes)
                        continue
                    }
                    guard batch.baseOffset == state.logEndOffset else { break scan }
                    let conversations: [[UInt8]]
                    do {
                        conversations = configuration.conversationIndex ? try PartitionLog.conversationKeys(of: batch) : []
                    } catch {
                        break scan
                    }
                    let location = BatchLocation(
                        segmentBase: segment.baseOffset, position: position, sizeBytes: batch.sizeBytes,
                        lastOffset: batch.lastOffset, maxTimestamp: batch.maxTimestamp)
                    let write = WriteBatch()
                    try record(
                        batch, location: location, leaderEpoch: batch.partitionLeaderEpoch, conversations: conversations,
                        producerEntry: batch.producerID >= 0 ? state.producers[batch.producerID] : nil, state: &state, into: write)
                    try storage { try context.database.write(write, sync: false) }
                    replayed += 1
                    position = location.end
                }
                guard segmentIndex + 1 < segments.count, segments[segmentIndex + 1].baseOffset == state.logEndOffset else { break }
                segmentIndex += 1
                position = 0
            }

            // Whatever follows the last good batch is a torn write or garbage.
            if segmentIndex < segments.count {
                let segment = segments[segmentIndex]
                let size = try segment.size()
                if size > position {
                    try segment.truncate(to: position)
                    try segment.sync()
                    repairs.append("cut \(size - position) bytes of an incomplete write from the end of \(segment.path)")
                }
                let later = segments[(segmentIndex + 1)...]
                if !later.isEmpty {
                    later.forEach { $0.unlink() }
                    try SegmentFile.syncDirectory(directory)
                    state.segments.removeSubrange((segmentIndex + 1)...)
                    repairs.append("removed \(later.count) segment files after a gap")
                }
                state.activeSize = position
            } else if let last = segments.last {
                // Appends go after whatever the last segment holds, never over it.
                state.activeSize = try last.size()
            }
            if replayed > 0 {
                try storage { try context.database.flushWAL(sync: true) }
                repairs.append("recorded \(replayed) batches the segments held beyond RocksDB's entries")
            }
        }
    }

    /// The batch stored at `position` of a segment of `size` bytes, if a
    /// whole one that passes its checks is there.
    private static func batch(in segment: SegmentFile, at position: Int64, size: Int64) throws(LogStoreError) -> RecordBatch? {
        guard size - position >= Int64(RecordBatch.headerBytesCount) else { return nil }
        let head = try segment.read(at: position, count: 12)
        guard head.count == 12 else { return nil }
        let length = Int64(Int32(bitPattern: head.withUnsafeBytes { Keys.readUInt32($0, at: 8) }))
        let total = 12 + length
        guard total >= Int64(RecordBatch.headerBytesCount), total <= Int64(Limits.batchBytesConfigurableMax), position + total <= size else { return nil }
        let bytes = try segment.read(at: position, count: Int(total))
        return try? RecordBatch(validating: bytes, bytesMax: Limits.batchBytesConfigurableMax)
    }

    // MARK: Offsets

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
    /// and persists it. The owner decides when: after a sync on a single node,
    /// when the in-sync replicas have the data in a cluster.
    public func advanceHighWatermark(to offset: Int64) throws(LogStoreError) {
        let record: [UInt8]? = state.withLock { state in
            let target = min(offset, state.logEndOffset)
            guard target > state.highWatermark else { return nil }
            state.highWatermark = target
            return state.encoded()
        }
        guard let record else { return }
        do {
            try context.database.put(prefix, record, in: context.families.partitionState)
        } catch {
            throw .storage(error)
        }
    }

    // MARK: Append

    /// Appends a batch a producer sent: validates it, gives it the next
    /// offsets, stamps the leader epoch, writes it to the active segment, and
    /// records its location, its conversations' index entries and the
    /// producer's sequence in one RocksDB write. Returns once the
    /// write is durable under the store's durability mode.
    ///
    /// A retry of one of an idempotent producer's last five batches writes
    /// nothing and returns the stored offsets.
    public func append(_ bytes: [UInt8], leaderEpoch: Int32 = 0) async throws -> AppendResult {
        try await write(bytes, leaderEpoch: leaderEpoch).durable()
    }

    /// The first half of `append`: validates and writes the batch, without
    /// waiting for durability. The caller awaits `durable()` on the result
    /// before acknowledging it. Splitting the two lets one connection write
    /// its next request while the previous one waits for its sync, so
    /// consecutive requests share syncs and keep their order.
    public func write(_ bytes: [UInt8], leaderEpoch: Int32 = 0) throws -> PendingAppend {
        let batch: RecordBatch
        var conversations: [[UInt8]] = []
        do {
            batch = try RecordBatch(validating: bytes, bytesMax: configuration.batchBytesMax)
            try batch.validateForProduce()
            if configuration.conversationIndex {
                conversations = try PartitionLog.conversationKeys(of: batch)
            }
        } catch {
            throw LogStoreError(.batchRefused(error), "batch refused for \(topicName)/\(index): \(error)")
        }
        precondition(leaderEpoch >= 0, "negative leader epoch \(leaderEpoch)")
        let (result, ticket) = try appendLocked(batch, conversations: conversations, leaderEpoch: leaderEpoch)
        return PendingAppend(result: result, ticket: ticket, groupCommit: context.durability == .fsync ? context.groupCommit : nil)
    }

    /// A follower's append: a batch as the leader stored it, offsets and
    /// leader epoch already assigned, kept byte for byte. Its base offset
    /// must be this log's end offset (a follower truncates to the leader's
    /// history before it fetches). Producer sequences and the conversation
    /// index are recorded as on the leader, so the follower can lead next.
    ///
    /// `fence`, from `fenceReplicas`, refuses the append (`.replicaFenced`)
    /// once the log's role has changed since: a fetch answered by a former
    /// leader can arrive long after its request (TCP retransmits across a
    /// healed network cut) and must not land in a log that leads now.
    /// Starts a new role for this log (following a leader, or leading):
    /// copies fenced by an earlier value are refused from now on. Returns
    /// the fence for the new follower's copies.
    public func fenceReplicas() -> UInt64 {
        state.withLock { state in
            state.replicaFence &+= 1
            return state.replicaFence
        }
    }

    public func appendReplica(_ bytes: [UInt8], fence: UInt64? = nil) async throws -> AppendResult {
        try await writeReplica(bytes, fence: fence).durable()
    }

    /// `appendReplica` without waiting for durability: a follower writes
    /// every batch of a fetch answer and then waits once, for the last, so
    /// catching up costs a sync per fetch rather than per batch.
    public func writeReplica(_ bytes: [UInt8], fence: UInt64? = nil) throws -> PendingAppend {
        let batch: RecordBatch
        var conversations: [[UInt8]] = []
        do {
            batch = try RecordBatch(validating: bytes, bytesMax: configuration.batchBytesMax)
            if configuration.conversationIndex {
                conversations = try PartitionLog.conversationKeys(of: batch)
            }
        } catch {
            throw LogStoreError(.batchRefused(error), "replicated batch refused for \(topicName)/\(index): \(error)")
        }
        let (result, ticket) = try appendLocked(batch, conversations: conversations, leaderEpoch: batch.partitionLeaderEpoch, replica: true, fence: fence)
        return PendingAppend(result: result, ticket: ticket, groupCommit: context.durability == .fsync ? context.groupCommit : nil)
    }

    static func conversationKeys(of batch: RecordBatch) throws(RecordBatchError) -> [[UInt8]] {
        try batch.recordKeys().enumerated().map { (position, key) throws(RecordBatchError) -> [UInt8] in
            guard let key, !key.isEmpty else {
                throw .invalidRecord("record \(position) has no key; a conversation topic's key is the conversation id")
            }
            guard key.count <= Limits.conversationIDBytesMax else {
                throw .invalidRecord("record \(position)'s conversation id is \(key.count) bytes, over \(Limits.conversationIDBytesMax)")
            }
            return key
        }
    }

    /// `replica`: the batch comes from the leader with its offsets and epoch
    /// set; it is stored unchanged and its producer sequences are recorded
    /// without being judged (the leader judged them).
    private func appendLocked(_ incoming: RecordBatch, conversations: [[UInt8]], leaderEpoch: Int32, replica: Bool = false, fence: UInt64? = nil) throws(LogStoreError) -> (AppendResult, UInt64) {
        try state.withLock { state throws(LogStoreError) -> (AppendResult, UInt64) in
            guard !state.isDeleted else { throw LogStoreError(.unknownTopic, "topic \(topicName) was deleted") }
            if let fence, fence != state.replicaFence {
                throw LogStoreError(.replicaFenced, "\(topicName)/\(index) no longer follows the leader this batch came from")
            }
            if let failure = context.groupCommit.failed {
                throw LogStoreError(.storageFailed, "the store refuses appends after a failed segment sync: \(failure)")
            }
            if let last = state.epochs.last, leaderEpoch < last.epoch {
                throw LogStoreError(.staleLeaderEpoch, "leader epoch \(leaderEpoch) is older than \(last.epoch)")
            }
            if replica && incoming.baseOffset != state.logEndOffset {
                throw LogStoreError(.offsetOutOfRange, "replicated batch at offset \(incoming.baseOffset) does not follow the log end offset \(state.logEndOffset) of \(topicName)/\(index)")
            }
            var producerEntry: ProducerEntry? = nil
            if incoming.producerID >= 0 && replica {
                producerEntry = state.producers[incoming.producerID]
            } else if incoming.producerID >= 0 {
                producerEntry = state.producers[incoming.producerID]
                let verdict = try ProducerEntry.verdict(
                    for: producerEntry, epoch: incoming.producerEpoch,
                    firstSequence: incoming.baseSequence, lastSequence: incoming.lastSequence)
                if case .duplicate(let base, let last) = verdict {
                    // The original may still be waiting for its sync: the retry
                    // is answered only once a sync covers everything written.
                    let result = AppendResult(baseOffset: base, lastOffset: last, isDuplicate: true, logStartOffset: state.logStartOffset)
                    return (result, context.groupCommit.noteWrite(nil))
                }
            }

            let batch = incoming
            let baseOffset = state.logEndOffset
            // The stamp changes only the first 16 bytes (outside the CRC): the
            // segment gets them and the untouched rest in one pwritev, with no
            // stamped copy of the batch. A replica's batch already carries them.
            let stamped = batch.stampedPrefix(baseOffset: baseOffset, partitionLeaderEpoch: leaderEpoch)
            let (segment, position) = try segmentForAppend(at: baseOffset, sizeBytes: batch.sizeBytes, state: &state)
            try segment.write(head: stamped, rest: batch.bytes, at: position)
            let location = BatchLocation(
                segmentBase: segment.baseOffset, position: position, sizeBytes: batch.sizeBytes,
                lastOffset: baseOffset + Int64(batch.lastOffsetDelta), maxTimestamp: batch.maxTimestamp)
            let write = WriteBatch()
            var next = state
            do throws(LogStoreError) {
                try record(batch, location: location, leaderEpoch: leaderEpoch, conversations: conversations, producerEntry: producerEntry, state: &next, into: write)
                // Unsynced: after a machine crash, opening the store rebuilds
                // these entries from the segment (recoverSegments).
                try storage { try context.database.write(write, sync: false) }
            } catch {
                // Nothing changed in memory and RocksDB applied nothing; the
                // segment is cut back so the next batch takes this place.
                try? segment.truncate(to: position)
                throw error
            }
            if context.durability != .fsync {
                next.bytesSinceWriteback += Int64(batch.sizeBytes)
                if next.bytesSinceWriteback >= PartitionLog.writebackBytes {
                    next.bytesSinceWriteback = 0
                    context.groupCommit.requestWriteback(segment)
                }
            }
            state = next
            let result = AppendResult(baseOffset: baseOffset, lastOffset: location.lastOffset, isDuplicate: false, logStartOffset: state.logStartOffset)
            return (result, context.groupCommit.noteWrite(context.durability == .fsync ? segment : nil))
        }
    }

    /// The segment and position for a batch of `sizeBytes` starting at
    /// `baseOffset`: the end of the active segment, or a new segment once the
    /// active one is full (a batch never spans two segments).
    private func segmentForAppend(at baseOffset: Int64, sizeBytes: Int, state: inout State) throws(LogStoreError) -> (SegmentFile, Int64) {
        if let active = state.segments.last, state.activeSize == 0 || state.activeSize + Int64(sizeBytes) <= context.segmentBytes {
            return (active, state.activeSize)
        }
        if state.segments.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw LogStoreError(.io(EIO), "cannot create \(directory): \(error)")
            }
            if context.durability == .fsync { try SegmentFile.syncDirectory(context.segmentsPath) }
        }
        let segment = try SegmentFile(directory: directory, baseOffset: baseOffset, create: true)
        // The new file's name must survive a machine crash as its batches do.
        if context.durability == .fsync { try SegmentFile.syncDirectory(directory) }
        state.segments.append(segment)
        state.activeSize = 0
        return (segment, 0)
    }

    /// Records a batch stored at `location` in RocksDB (its location, its
    /// conversations' index entries with their sequences, the partition
    /// state, a new leader epoch, the producer's sequences) and in `state`.
    /// Appends and recovery's replay of a segment share it, so a replayed
    /// batch gets exactly the entries its append gave it.
    private func record(
        _ batch: RecordBatch, location: BatchLocation, leaderEpoch: Int32, conversations: [[UInt8]],
        producerEntry: ProducerEntry?, state: inout State, into write: WriteBatch
    ) throws(LogStoreError) {
        let families = context.families
        let baseOffset = location.lastOffset - Int64(batch.lastOffsetDelta)
        write.put(Keys.batch(prefix: prefix, baseOffset: baseOffset), location.encoded(), in: families.log)

        var assigned: [[UInt8]: UInt64] = [:]
        for (position, conversation) in conversations.enumerated() {
            let sequence: UInt64
            if let next = assigned[conversation] {
                sequence = next
            } else {
                sequence = try nextSequence(for: conversation, state: &state)
            }
            assigned[conversation] = sequence + 1
            var value = [UInt8]()
            Keys.append(&value, baseOffset + Int64(position))
            Keys.append(&value, baseOffset)
            let conversationPrefix = Keys.conversation(prefix: prefix, conversation: conversation)
            write.put(Keys.conversationEntry(conversationPrefix: conversationPrefix, sequence: sequence), value, in: families.conversationIndex)
        }

        state.logEndOffset = location.lastOffset + 1
        state.sizeBytes += Int64(location.sizeBytes)
        state.batchCount += 1
        state.activeSize = location.end
        write.put(prefix, state.encoded(), in: families.partitionState)
        if state.epochs.last?.epoch != leaderEpoch {
            state.epochs.append(EpochEntry(epoch: leaderEpoch, startOffset: baseOffset))
            var value = [UInt8]()
            Keys.append(&value, baseOffset)
            write.put(Keys.epoch(prefix: prefix, epoch: leaderEpoch), value, in: families.epochs)
        }
        if batch.producerID >= 0 {
            let entry = ProducerEntry.recording(
                producerEntry, epoch: batch.producerEpoch,
                batch: .init(firstSequence: batch.baseSequence, lastSequence: batch.lastSequence, baseOffset: baseOffset, lastOffset: location.lastOffset))
            state.producers[batch.producerID] = entry
            write.put(Keys.producer(prefix: prefix, producerID: batch.producerID), entry.encoded(), in: families.producers)
        }
        if state.nextSequences.count + assigned.count > Limits.conversationSequenceCacheCountMax {
            state.nextSequences.removeAll(keepingCapacity: true)
        }
        state.nextSequences.merge(assigned) { _, new in new }
    }

    /// The next sequence of a conversation: from the cache, or one past the
    /// last index entry.
    private func nextSequence(for conversation: [UInt8], state: inout State) throws(LogStoreError) -> UInt64 {
        if let cached = state.nextSequences[conversation] { return cached }
        let conversationPrefix = Keys.conversation(prefix: prefix, conversation: conversation)
        let iterator = context.database.makeIterator(
            in: context.families.conversationIndex, lowerBound: conversationPrefix, upperBound: Keys.end(of: conversationPrefix))
        iterator.seekToLast()
        let next = iterator.isValid ? Keys.readUInt64(iterator.keyView, at: conversationPrefix.count) + 1 : 1
        try storage { try iterator.checkError() }
        return next
    }

    // MARK: Read

    /// Whole batches from `offset` on: the batch holding `offset` first (even
    /// when it starts earlier, and even when it alone exceeds `bytesMax`, as
    /// KIP-74 asks), then following batches while they fit in `bytesMax`.
    /// Stops before `maxOffset` (a consumer passes the high watermark; the
    /// default is the log end offset).
    public func read(from offset: Int64, bytesMax: Int, maxOffset: Int64? = nil) throws(LogStoreError) -> LogRead {
        let (start, end, highWatermark, segments) = state.withLock { ($0.logStartOffset, $0.logEndOffset, $0.highWatermark, $0.segments) }
        guard offset >= start && offset <= end else {
            throw LogStoreError(.offsetOutOfRange, "offset \(offset) is outside \(topicName)/\(index)'s log [\(start), \(end)]")
        }
        var result = LogRead(batches: [], highWatermark: highWatermark, logStartOffset: start, logEndOffset: end)
        let limit = min(maxOffset ?? end, end)
        guard offset < limit else { return result }
        let iterator = context.database.makeIterator(
            in: context.families.log, lowerBound: prefix, upperBound: Keys.batch(prefix: prefix, baseOffset: limit))
        iterator.seekForPrevious(Keys.batch(prefix: prefix, baseOffset: offset))
        if !iterator.isValid || (BatchLocation(iterator.valueView)?.lastOffset ?? -1) < offset {
            iterator.seek(Keys.batch(prefix: prefix, baseOffset: offset))
        }
        var locations: [BatchLocation] = []
        var bytesCount = 0
        while iterator.isValid {
            guard let location = BatchLocation(iterator.valueView) else {
                throw LogStoreError(.corrupt, "a batch location of \(topicName)/\(index) is unreadable")
            }
            if !locations.isEmpty && bytesCount + location.sizeBytes > bytesMax { break }
            locations.append(location)
            bytesCount += location.sizeBytes
            if bytesCount >= bytesMax { break }
            iterator.next()
        }
        try storage { try iterator.checkError() }
        result.batches = try readBatches(at: locations, segments: segments)
        return result
    }

    /// The segment of a base offset: from a snapshot of the segment list,
    /// or, when the snapshot predates the segment and the caller does not
    /// hold the lock, from the current list.
    private func segment(base: Int64, in segments: [SegmentFile], refreshable: Bool) -> SegmentFile? {
        if let found = segments.segment(base: base) { return found }
        guard refreshable else { return nil }
        return state.withLock { $0.segments.segment(base: base) }
    }

    /// Reads batches from their segments (the caller does not hold the
    /// state's lock): neighbours in one segment (the
    /// usual case: consecutive batches are written back to back) in one
    /// `pread`. Stops early, returning what it has, when a segment is gone
    /// or shorter than a location says: truncation or retention removed it
    /// after the locations were read, and the reader asks again.
    private func readBatches(at locations: [BatchLocation], segments: [SegmentFile]) throws(LogStoreError) -> [[UInt8]] {
        var batches: [[UInt8]] = []
        batches.reserveCapacity(locations.count)
        var runStart = locations.startIndex
        while runStart < locations.endIndex {
            var runEnd = runStart + 1
            while runEnd < locations.endIndex && locations[runEnd].segmentBase == locations[runStart].segmentBase
                && locations[runEnd].position == locations[runEnd - 1].end
            {
                runEnd += 1
            }
            let first = locations[runStart]
            guard let segment = segment(base: first.segmentBase, in: segments, refreshable: true) else { break }
            let length = Int(locations[runEnd - 1].end - first.position)
            let bytes = try segment.read(at: first.position, count: length)
            var cursor = 0
            for location in locations[runStart..<runEnd] {
                guard cursor + location.sizeBytes <= bytes.count else { return batches }
                let batch = runEnd - runStart == 1 ? bytes : Array(bytes[cursor..<(cursor + location.sizeBytes)])
                // A follower's truncation may have cut and rewritten this
                // place since the location was read: hand out only the
                // batch the location speaks of.
                guard PartitionLog.lastOffset(of: batch) == location.lastOffset else { return batches }
                batches.append(batch)
                cursor += location.sizeBytes
            }
            runStart = runEnd
        }
        return batches
    }

    /// One stored batch, read from its segment; nil when the segment is gone
    /// or too short (see `readBatches`).
    /// `refreshable`: the caller does not hold the state's lock, and a
    /// segment missing from its snapshot (rolled since) is looked up again.
    /// `checked`: only the batch the location speaks of (its header names
    /// the location's last offset); `verify` reads unchecked, to report
    /// what is wrong with the bytes there.
    private func readBatch(at location: BatchLocation, segments: [SegmentFile], refreshable: Bool = false, checked: Bool = true) throws(LogStoreError) -> [UInt8]? {
        guard let segment = segment(base: location.segmentBase, in: segments, refreshable: refreshable) else { return nil }
        let bytes = try segment.read(at: location.position, count: location.sizeBytes)
        guard bytes.count == location.sizeBytes else { return nil }
        return !checked || PartitionLog.lastOffset(of: bytes) == location.lastOffset ? bytes : nil
    }

    /// The last offset a stored batch's header names (base offset plus
    /// last offset delta), or nil when the bytes are too short for a header.
    static func lastOffset(of batch: [UInt8]) -> Int64? {
        guard batch.count >= RecordBatch.headerBytesCount else { return nil }
        return batch.withUnsafeBytes { bytes in
            Int64(bitPattern: Keys.readUInt64(bytes, at: 0)) + Int64(Int32(bitPattern: Keys.readUInt32(bytes, at: 23)))
        }
    }

    // MARK: Conversation history

    /// A page of one conversation's messages, oldest first, read through the
    /// conversation index without scanning the partition. Only messages
    /// below `maxOffset` are returned (a reader passes the high watermark).
    public func history(conversation: [UInt8], from position: HistoryPosition = .latest, limit: Int, maxOffset: Int64? = nil) throws(LogStoreError) -> [ConversationMessage] {
        guard configuration.conversationIndex else {
            throw LogStoreError(.invalidConfiguration, "topic \(topicName) keeps no conversation index")
        }
        guard !conversation.isEmpty && conversation.count <= Limits.conversationIDBytesMax else { return [] }
        let limit = max(0, min(limit, Limits.historyMessagesMax))
        let (start, end, segments) = state.withLock { ($0.logStartOffset, $0.logEndOffset, $0.segments) }
        let offsetLimit = min(maxOffset ?? end, end)
        let conversationPrefix = Keys.conversation(prefix: prefix, conversation: conversation)
        var lower = conversationPrefix
        var upper = Keys.end(of: conversationPrefix)
        var forward = false
        switch position {
        case .latest:
            break
        case .before(let sequence):
            upper = Keys.conversationEntry(conversationPrefix: conversationPrefix, sequence: sequence)
        case .after(let sequence):
            guard sequence < UInt64.max else { return [] }
            lower = Keys.conversationEntry(conversationPrefix: conversationPrefix, sequence: sequence + 1)
            forward = true
        }
        let iterator = context.database.makeIterator(in: context.families.conversationIndex, lowerBound: lower, upperBound: upper)
        var entries: [(sequence: UInt64, offset: Int64, batchBase: Int64)] = []
        if forward { iterator.seekToFirst() } else { iterator.seekToLast() }
        while iterator.isValid && entries.count < limit {
            let sequence = Keys.readUInt64(iterator.keyView, at: conversationPrefix.count)
            let offset = Int64(bitPattern: Keys.readUInt64(iterator.valueView, at: 0))
            let batchBase = Int64(bitPattern: Keys.readUInt64(iterator.valueView, at: 8))
            if offset >= offsetLimit {
                // Not yet committed: in a forward walk nothing later is either.
                if forward { break }
            } else if offset >= start {
                entries.append((sequence, offset, batchBase))
            }
            if forward { iterator.next() } else { iterator.previous() }
        }
        try storage { try iterator.checkError() }
        if !forward { entries.reverse() }

        // Group the entries by batch so each batch is read and walked once,
        // decoding only this conversation's records.
        var messages: [ConversationMessage] = []
        messages.reserveCapacity(entries.count)
        var groupStart = entries.startIndex
        while groupStart < entries.endIndex {
            let batchBase = entries[groupStart].batchBase
            var groupEnd = groupStart + 1
            while groupEnd < entries.endIndex && entries[groupEnd].batchBase == batchBase { groupEnd += 1 }
            let group = entries[groupStart..<groupEnd]
            groupStart = groupEnd
            let key = Keys.batch(prefix: prefix, baseOffset: batchBase)
            // Retention may have dropped the batch since the index was read.
            // The batch's own CRC-32C (hardware) is its check.
            guard let locationBytes = try storage({ try context.database.get(key, in: context.families.log) }) else { continue }
            guard let location = locationBytes.withUnsafeBytes({ BatchLocation($0) }) else {
                throw LogStoreError(.corrupt, "the location of \(topicName)/\(index)@\(batchBase) is unreadable")
            }
            guard let stored = try readBatch(at: location, segments: segments, refreshable: true) else { continue }
            let batch: RecordBatch
            let records: [Record]
            do {
                batch = try RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax)
                records = try batch.records(at: group.map { Int($0.offset - batchBase) })
            } catch {
                throw LogStoreError(.corrupt, "stored batch \(topicName)/\(index)@\(batchBase) fails its checks: \(error)")
            }
            for (entry, record) in zip(group, records) {
                messages.append(ConversationMessage(
                    sequence: entry.sequence, offset: entry.offset, timestamp: batch.baseTimestamp + record.timestampDelta,
                    key: record.key ?? [], value: record.value, headers: record.headers))
            }
        }
        return messages
    }

    /// The number of conversations in this partition's index (a scan of the
    /// index keys, one seek per conversation: for operators, not hot paths).
    public func conversationCount() throws(LogStoreError) -> Int {
        let iterator = context.database.makeIterator(in: context.families.conversationIndex, lowerBound: prefix, upperBound: Keys.end(of: prefix), fillCache: false)
        var count = 0
        iterator.seekToFirst()
        while iterator.isValid {
            count += 1
            let key = iterator.keyView
            let length = Int(key[prefix.count])
            let conversation = [UInt8](key[(prefix.count + 1)..<(prefix.count + 1 + length)])
            iterator.seek(Keys.end(of: Keys.conversation(prefix: prefix, conversation: conversation)))
        }
        try storage { try iterator.checkError() }
        return count
    }

    // MARK: Timestamps

    /// The first record at or after `timestamp` (milliseconds) below
    /// `maxOffset`, with its own timestamp: ListOffsets by time. Batches are
    /// skipped by their newest timestamp, and only the batch that holds the
    /// answer is decoded, so the answer is exact. Nil when no record is that new.
    public func offset(forTimestamp timestamp: Int64, maxOffset: Int64? = nil) throws(LogStoreError) -> (offset: Int64, timestamp: Int64)? {
        let (end, segments) = state.withLock { ($0.logEndOffset, $0.segments) }
        let limit = min(maxOffset ?? end, end)
        let iterator = context.database.makeIterator(
            in: context.families.log, lowerBound: prefix, upperBound: Keys.batch(prefix: prefix, baseOffset: max(limit, 0)))
        iterator.seekToFirst()
        while iterator.isValid {
            guard let location = BatchLocation(iterator.valueView) else {
                throw LogStoreError(.corrupt, "a batch location of \(topicName)/\(index) is unreadable")
            }
            if location.maxTimestamp >= timestamp, let stored = try readBatch(at: location, segments: segments, refreshable: true) {
                do {
                    let batch = try RecordBatch(storedBytes: stored)
                    for (position, record) in try batch.records().enumerated() {
                        let recordTimestamp = batch.usesLogAppendTime ? batch.maxTimestamp : batch.baseTimestamp + record.timestampDelta
                        let offset = batch.baseOffset + Int64(position)
                        if recordTimestamp >= timestamp && offset < limit { return (offset, recordTimestamp) }
                    }
                } catch {
                    throw LogStoreError(.corrupt, "stored batch \(topicName)/\(index)@\(location.lastOffset) fails its checks: \(error)")
                }
            }
            iterator.next()
        }
        try storage { try iterator.checkError() }
        return nil
    }

    // MARK: Leader epochs

    /// The newest leader epoch recorded, or nil before the first append.
    public var currentLeaderEpoch: Int32? { state.withLock { $0.epochs.last?.epoch } }

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

    // MARK: Truncation and retention

    /// Removes every record at or after `offset` (replication: a follower
    /// drops what the leader does not have). A batch that holds `offset` is
    /// removed whole, so the new log end offset can be below `offset`; it is
    /// returned. The index, epochs, producer state and high watermark follow.
    @discardableResult
    public func truncate(to offset: Int64) throws(LogStoreError) -> Int64 {
        try state.withLock { state throws(LogStoreError) -> Int64 in
            guard !state.isDeleted else { throw LogStoreError(.unknownTopic, "topic \(topicName) was deleted") }
            guard offset < state.logEndOffset else { return state.logEndOffset }
            let target = max(offset, state.logStartOffset)
            let iterator = context.database.makeIterator(in: context.families.log, lowerBound: prefix, upperBound: Keys.end(of: prefix))
            iterator.seekForPrevious(Keys.batch(prefix: prefix, baseOffset: target))
            if !iterator.isValid || (BatchLocation(iterator.valueView)?.lastOffset ?? -1) < target {
                iterator.seek(Keys.batch(prefix: prefix, baseOffset: target))
            }
            guard iterator.isValid else { return state.logEndOffset }
            let cut = Int64(bitPattern: Keys.readUInt64(iterator.keyView, at: prefix.count))
            var dropped: [BatchLocation] = []
            while iterator.isValid {
                guard let location = BatchLocation(iterator.valueView) else {
                    throw LogStoreError(.corrupt, "a batch location of \(topicName)/\(index) is unreadable")
                }
                dropped.append(location)
                iterator.next()
            }
            try storage { try iterator.checkError() }
            // The conversations whose index entries go; nil (a scan of the
            // whole index) when a dropped batch cannot be read.
            var conversations: Set<[UInt8]>? = nil
            if configuration.conversationIndex {
                var found = Set<[UInt8]>()
                for location in dropped {
                    guard let stored = try readBatch(at: location, segments: state.segments) else {
                        conversations = nil
                        break
                    }
                    do {
                        let batch = try RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax)
                        found.formUnion(try PartitionLog.conversationKeys(of: batch))
                        conversations = found
                    } catch {
                        throw LogStoreError(.corrupt, "stored batch in \(topicName)/\(index) fails its checks during truncation: \(error)")
                    }
                }
            }
            // Segments first: a crash between the two leaves RocksDB ahead of
            // the segments, which opening repairs; the other order could let
            // recovery's replay bring the truncated batches back.
            try cutSegments(at: dropped[0], state: &state)
            try applyTruncation(cut: cut, conversations: conversations, state: &state)
            return cut
        }
    }

    /// Cuts the segments back to where the batch at `location` began: that
    /// segment is shortened and synced, later ones removed.
    private func cutSegments(at location: BatchLocation, state: inout State) throws(LogStoreError) {
        guard let position = state.segments.firstIndex(where: { $0.baseOffset == location.segmentBase }) else {
            throw LogStoreError(.corrupt, "\(topicName)/\(index) has no segment \(location.segmentBase)")
        }
        let segment = state.segments[position]
        try segment.truncate(to: location.position)
        try segment.sync()
        let later = state.segments[(position + 1)...]
        if !later.isEmpty {
            later.forEach { $0.unlink() }
            try SegmentFile.syncDirectory(directory)
            state.segments.removeSubrange((position + 1)...)
        }
        state.activeSize = location.position
    }

    /// Removes from RocksDB and `state` everything at or after `cut`: batch
    /// locations, the index entries of `conversations` (of every
    /// conversation, by a scan of the index, when nil), leader epochs,
    /// producer sequences; synced, because the segments were cut already.
    private func applyTruncation(cut: Int64, conversations: Set<[UInt8]>?, state: inout State) throws(LogStoreError) {
        let families = context.families
        var droppedBytes: Int64 = 0
        var droppedBatches: Int64 = 0
        let iterator = context.database.makeIterator(
            in: families.log, lowerBound: Keys.batch(prefix: prefix, baseOffset: cut), upperBound: Keys.end(of: prefix))
        iterator.seekToFirst()
        while iterator.isValid {
            droppedBytes += Int64(BatchLocation(iterator.valueView)?.sizeBytes ?? 0)
            droppedBatches += 1
            iterator.next()
        }
        try storage { try iterator.checkError() }

        let write = WriteBatch()
        write.deleteRange(from: Keys.batch(prefix: prefix, baseOffset: cut), to: Keys.end(of: prefix), in: families.log)
        if configuration.conversationIndex {
            if let conversations {
                for conversation in conversations {
                    try deleteIndexEntries(of: conversation, where: { $0 >= cut }, fromNewest: true, into: write)
                }
            } else {
                try deleteAllIndexEntries(where: { $0 >= cut }, into: write)
            }
        }
        var next = state
        next.logEndOffset = cut
        next.highWatermark = min(next.highWatermark, cut)
        next.sizeBytes -= droppedBytes
        next.batchCount -= droppedBatches
        if let conversations {
            for conversation in conversations { next.nextSequences[conversation] = nil }
        } else {
            next.nextSequences.removeAll()
        }
        while let last = next.epochs.last, last.startOffset >= cut {
            write.delete(Keys.epoch(prefix: prefix, epoch: last.epoch), in: families.epochs)
            next.epochs.removeLast()
        }
        for (producerID, entry) in next.producers {
            let kept = entry.batches.filter { $0.lastOffset < cut }
            guard kept != entry.batches else { continue }
            let key = Keys.producer(prefix: prefix, producerID: producerID)
            if kept.isEmpty {
                // With no batch left the producer is unknown again, and an
                // unknown producer may continue at any sequence.
                next.producers[producerID] = nil
                write.delete(key, in: families.producers)
            } else {
                let updated = ProducerEntry(epoch: entry.epoch, batches: kept)
                next.producers[producerID] = updated
                write.put(key, updated.encoded(), in: families.producers)
            }
        }
        write.put(prefix, next.encoded(), in: families.partitionState)
        try storage { try context.database.write(write, sync: true) }
        state = next
    }

    /// Deletes every index entry of this partition whose offset matches: a
    /// scan of the partition's whole index, for recovery, which cannot read
    /// the batches whose entries it removes.
    private func deleteAllIndexEntries(where matches: (Int64) -> Bool, into write: WriteBatch) throws(LogStoreError) {
        let iterator = context.database.makeIterator(
            in: context.families.conversationIndex, lowerBound: prefix, upperBound: Keys.end(of: prefix), fillCache: false)
        iterator.seekToFirst()
        while iterator.isValid {
            if matches(Int64(bitPattern: Keys.readUInt64(iterator.valueView, at: 0))) {
                write.delete(iterator.key, in: context.families.conversationIndex)
            }
            iterator.next()
        }
        try storage { try iterator.checkError() }
    }

    /// Drops the oldest whole batches that retention allows: those whose
    /// newest timestamp is older than the retention time, and, oldest first,
    /// those beyond the retention size. Only batches below the high watermark
    /// are dropped. The log start offset moves to the first kept batch.
    /// Returns the number of batches dropped.
    @discardableResult
    public func enforceRetention(nowMilliseconds: Int64) throws(LogStoreError) -> Int {
        let retentionTime = configuration.retentionTime
        let retentionBytes = configuration.retentionBytes
        guard retentionTime != nil || retentionBytes != nil else { return 0 }
        let cutoff: Int64? = retentionTime.map { time in
            let (seconds, attoseconds) = time.components
            return nowMilliseconds - (seconds * 1000 + attoseconds / 1_000_000_000_000_000)
        }
        return try state.withLock { state throws(LogStoreError) -> Int in
            guard !state.isDeleted else { return 0 }
            let families = context.families
            let iterator = context.database.makeIterator(
                in: families.log, lowerBound: prefix, upperBound: Keys.batch(prefix: prefix, baseOffset: state.highWatermark))
            iterator.seekToFirst()
            var droppedBytes: Int64 = 0
            var droppedBatches = 0
            var newStart = state.logStartOffset
            var conversations = Set<[UInt8]>()
            while iterator.isValid {
                guard let location = BatchLocation(iterator.valueView) else {
                    throw LogStoreError(.corrupt, "a batch location of \(topicName)/\(index) is unreadable")
                }
                let tooOld = cutoff.map { location.maxTimestamp < $0 } ?? false
                let tooBig = retentionBytes.map { state.sizeBytes - droppedBytes > $0 } ?? false
                guard (tooOld || tooBig) && location.lastOffset < state.highWatermark else { break }
                if configuration.conversationIndex, let stored = try readBatch(at: location, segments: state.segments) {
                    do {
                        let batch = try RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax)
                        conversations.formUnion(try PartitionLog.conversationKeys(of: batch))
                    } catch {
                        throw LogStoreError(.corrupt, "stored batch in \(topicName)/\(index) fails its checks during retention: \(error)")
                    }
                }
                droppedBytes += Int64(location.sizeBytes)
                droppedBatches += 1
                newStart = location.lastOffset + 1
                iterator.next()
            }
            try storage { try iterator.checkError() }
            guard droppedBatches > 0 else { return 0 }
            let write = WriteBatch()
            write.deleteRange(from: prefix, to: Keys.batch(prefix: prefix, baseOffset: newStart), in: families.log)
            for conversation in conversations {
                try deleteIndexEntries(of: conversation, where: { $0 < newStart }, fromNewest: false, into: write)
            }
            var next = state
            next.logStartOffset = newStart
            next.sizeBytes -= droppedBytes
            next.batchCount -= Int64(droppedBatches)
            write.put(prefix, next.encoded(), in: families.partitionState)
            // Synced before any segment goes: the locations must never point
            // into a removed file after a machine crash.
            try storage { try context.database.write(write, sync: true) }
            // A segment goes once the next one starts at or below the new log
            // start: all of its batches are dropped. The active one stays.
            var removable = 0
            while removable + 1 < next.segments.count && next.segments[removable + 1].baseOffset <= newStart {
                removable += 1
            }
            if removable > 0 {
                next.segments[..<removable].forEach { $0.unlink() }
                next.segments.removeFirst(removable)
                try? SegmentFile.syncDirectory(directory)
            }
            state = next
            return droppedBatches
        }
    }

    /// Deletes a conversation's index entries whose offsets match, walking
    /// from the newest (truncation) or the oldest (retention) entry and
    /// stopping at the first that does not match: offsets grow with sequences.
    private func deleteIndexEntries(of conversation: [UInt8], where matches: (Int64) -> Bool, fromNewest: Bool, into write: WriteBatch) throws(LogStoreError) {
        let conversationPrefix = Keys.conversation(prefix: prefix, conversation: conversation)
        let iterator = context.database.makeIterator(
            in: context.families.conversationIndex, lowerBound: conversationPrefix, upperBound: Keys.end(of: conversationPrefix))
        if fromNewest { iterator.seekToLast() } else { iterator.seekToFirst() }
        while iterator.isValid {
            let offset = Int64(bitPattern: Keys.readUInt64(iterator.valueView, at: 0))
            guard matches(offset) else { break }
            write.delete(iterator.key, in: context.families.conversationIndex)
            if fromNewest { iterator.previous() } else { iterator.next() }
        }
        try storage { try iterator.checkError() }
    }

    /// Marks the partition deleted and removes its segment files (readers
    /// that hold one keep reading it until they let go).
    func markDeleted() {
        state.withLock { state in
            state.isDeleted = true
            state.segments.removeAll()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Syncs every segment (a clean close, whatever the durability mode).
    func syncSegments() throws(LogStoreError) {
        let segments = state.withLock { $0.segments }
        for segment in segments { try segment.sync() }
    }

    /// The paths of the partition's segment files, oldest first (for operators and tests).
    public var segmentPaths: [String] { state.withLock { $0.segments.map(\.path) } }

    // MARK: Verification

    /// Checks every stored batch (CRC, layout, key agreeing with the batch's
    /// base offset, no gaps between batches) and, with `checkIndex`, that
    /// every conversation index entry points at a record of its conversation.
    public func verify(checkIndex: Bool = true) throws(LogStoreError) -> [Damage] {
        var damage: [Damage] = []
        let (start, end, segments) = state.withLock { ($0.logStartOffset, $0.logEndOffset, $0.segments) }
        let families = context.families
        let iterator = context.database.makeIterator(in: families.log, lowerBound: prefix, upperBound: Keys.end(of: prefix), fillCache: false)
        iterator.seekToFirst()
        var expected: Int64? = nil
        var keysByOffset: [Int64: [UInt8]] = [:]
        while iterator.isValid {
            let keyOffset = Int64(bitPattern: Keys.readUInt64(iterator.keyView, at: prefix.count))
            do {
                guard let location = BatchLocation(iterator.valueView) else {
                    throw LogStoreError(.corrupt, "its location is unreadable")
                }
                guard let stored = try readBatch(at: location, segments: segments, refreshable: true, checked: false) else {
                    throw LogStoreError(.corrupt, "segment \(location.segmentBase) lacks its \(location.sizeBytes) bytes at \(location.position)")
                }
                let batch = try RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax)
                if batch.lastOffset != location.lastOffset || batch.maxTimestamp != location.maxTimestamp {
                    damage.append(Damage(topic: topicName, partition: index, offset: keyOffset, problem: "its location disagrees with the batch's header"))
                }
                if batch.baseOffset != keyOffset {
                    damage.append(Damage(topic: topicName, partition: index, offset: keyOffset, problem: "batch says base offset \(batch.baseOffset)"))
                }
                if let expected, expected != keyOffset {
                    damage.append(Damage(topic: topicName, partition: index, offset: keyOffset, problem: "gap: previous batch ended before \(expected)"))
                } else if expected == nil && keyOffset != start {
                    damage.append(Damage(topic: topicName, partition: index, offset: keyOffset, problem: "first batch does not start at the log start offset \(start)"))
                }
                if checkIndex && configuration.conversationIndex {
                    for (position, record) in try batch.records().enumerated() {
                        keysByOffset[keyOffset + Int64(position)] = record.key
                    }
                }
                expected = batch.nextOffset
            } catch {
                damage.append(Damage(topic: topicName, partition: index, offset: keyOffset, problem: "\(error)"))
                expected = nil
            }
            iterator.next()
        }
        try storage { try iterator.checkError() }
        if let expected, expected != end {
            damage.append(Damage(topic: topicName, partition: index, offset: expected, problem: "log end offset is \(end) but the last batch ends at \(expected)"))
        }
        guard checkIndex && configuration.conversationIndex else { return damage }
        let indexIterator = context.database.makeIterator(in: families.conversationIndex, lowerBound: prefix, upperBound: Keys.end(of: prefix), fillCache: false)
        indexIterator.seekToFirst()
        var previous: (conversation: [UInt8], sequence: UInt64, offset: Int64)? = nil
        var indexed = 0
        while indexIterator.isValid {
            let key = indexIterator.keyView
            let length = Int(key[prefix.count])
            let conversation = [UInt8](key[(prefix.count + 1)..<(prefix.count + 1 + length)])
            let sequence = Keys.readUInt64(key, at: prefix.count + 1 + length)
            let offset = Int64(bitPattern: Keys.readUInt64(indexIterator.valueView, at: 0))
            indexed += 1
            if keysByOffset[offset] != conversation {
                damage.append(Damage(topic: topicName, partition: index, offset: offset, problem: "index entry \(String(decoding: conversation, as: UTF8.self))#\(sequence) points at a record of another conversation or none"))
            }
            if let previous, previous.conversation == conversation {
                if sequence != previous.sequence + 1 || offset <= previous.offset {
                    damage.append(Damage(topic: topicName, partition: index, offset: offset, problem: "index sequence \(sequence) after \(previous.sequence) is out of order"))
                }
            }
            previous = (conversation, sequence, offset)
            indexIterator.next()
        }
        try storage { try indexIterator.checkError() }
        if indexed != keysByOffset.count {
            damage.append(Damage(topic: topicName, partition: index, offset: start, problem: "index holds \(indexed) entries for \(keysByOffset.count) records"))
        }
        return damage
    }
}
