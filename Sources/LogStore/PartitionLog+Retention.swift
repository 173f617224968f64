import Core
import Foundation
import KafkaWire
import RocksDB
import Synchronization

/// What one pass of retention (or a DeleteRecords) removed from a partition.
public struct RetentionOutcome: Sendable, Equatable {
    public var batches = 0
    public var bytes: Int64 = 0
    /// Segment files removed: the disk space actually freed.
    public var segments = 0

    public init() {}

    public static func + (a: RetentionOutcome, b: RetentionOutcome) -> RetentionOutcome {
        var sum = a
        sum.batches += b.batches
        sum.bytes += b.bytes
        sum.segments += b.segments
        return sum
    }
}

// Retention: the oldest batches go, by age, by size, or below an offset
// (DeleteRecords), and the log start offset moves past them.
extension PartitionLog {
    /// Drops the oldest whole batches that retention allows: those whose
    /// newest timestamp is older than the retention time, and, oldest first,
    /// those beyond the retention size. Only batches below the high watermark
    /// are dropped, and only when the topic's cleanup policy includes
    /// `delete`. The log start offset moves to the first kept batch.
    @discardableResult
    public func enforceRetention(nowMilliseconds: Int64) throws(LogStoreError) -> RetentionOutcome {
        let configuration = configuration
        guard configuration.cleanupPolicy.contains(.delete) else { return RetentionOutcome() }
        let retentionBytes = configuration.retentionBytes
        guard configuration.retentionTime != nil || retentionBytes != nil else { return RetentionOutcome() }
        let cutoff: Int64? = configuration.retentionTime.map { nowMilliseconds - $0.milliseconds }
        return try dropOldest { location, keptBytes in
            let tooOld = cutoff.map { location.maxTimestamp < $0 } ?? false
            let tooBig = retentionBytes.map { keptBytes > $0 } ?? false
            return tooOld || tooBig
        }
    }

    /// Kafka's DeleteRecords: every record below `offset` goes. The log
    /// start offset becomes `offset` exactly (the batch holding it stays
    /// whole, as in Kafka, and readers skip its earlier records). `offset`
    /// must not pass the high watermark; -1 means the high watermark.
    /// A follower calls it with its leader's log start offset. Returns the
    /// new log start offset.
    @discardableResult
    public func deleteRecords(before offset: Int64) throws(LogStoreError) -> Int64 {
        let highWatermark = self.highWatermark
        let target = offset == -1 ? highWatermark : offset
        guard target >= 0 && target <= highWatermark else {
            throw LogStoreError(.offsetOutOfRange, "offset \(offset) is beyond the high watermark \(highWatermark) of \(topicName)/\(index)")
        }
        try dropOldest(startAtLeast: target) { location, _ in location.lastOffset < target }
        return logStartOffset
    }

    /// A follower so far behind that its leader no longer has what it lacks:
    /// every batch goes and the log begins again, empty, at `offset` (the
    /// leader's log start), where the follower's copying resumes.
    public func startOver(at offset: Int64) throws(LogStoreError) {
        guard offset > logEndOffset else { return }
        _ = try truncate(to: logStartOffset)
        try context.layout.around { () throws(LogStoreError) in try state.withLock { state throws(LogStoreError) in
            guard !state.isDeleted else { return }
            try writePendingEntries(&state)
            var next = state
            next.logStartOffset = offset
            next.logEndOffset = offset
            next.highWatermark = offset
            next.sizeBytes = 0
            next.batchCount = 0
            // The old segments hold nothing the log still names: they go, and
            // the next copy begins a segment of its own.
            next.segments.forEach { $0.unlink() }
            next.segments = []
            next.activeSize = 0
            let write = WriteBatch()
            write.put(prefix, next.encoded(), in: context.families.partitionState)
            try writeDurably(write)
            try? SegmentFile.syncDirectory(directory)
            state = next
        } }
    }

    /// Closes the active segment when its first batch is older than the
    /// topic's `segment.ms` at `nowMilliseconds`, so the next batch begins a
    /// new one and retention can free the old file. True when it closed one.
    @discardableResult
    public func closeActiveSegment(nowMilliseconds: Int64) throws(LogStoreError) -> Bool {
        guard let segmentTime = configuration.segmentTime else { return false }
        return try state.withLock { state throws(LogStoreError) -> Bool in
            guard !state.isDeleted, !state.activeClosed, state.activeSize > 0, let active = state.segments.last else { return false }
            if state.activeFirstTimestamp == nil {
                // Opened since the segment began: its first batch's location says.
                try writePendingEntries(&state)
                let key = Keys.batch(prefix: prefix, baseOffset: active.baseOffset)
                let stored = try storage { try context.database.get(key, in: context.families.log) }
                state.activeFirstTimestamp = stored.flatMap { bytes in bytes.withUnsafeBytes { BatchLocation($0)?.maxTimestamp } }
            }
            guard let first = state.activeFirstTimestamp, nowMilliseconds - first >= segmentTime.milliseconds else { return false }
            state.activeClosed = true
            return true
        }
    }

    /// Writes to RocksDB and returns once the write is durable: written
    /// unsynced, then RocksDB's WAL synced on the calling thread. A synced
    /// write (`sync: true`) would hold RocksDB's write group for the fsync
    /// and stall every partition's appends behind the cleaner's
    /// bookkeeping; a WAL sync does not.
    ///
    /// Callers hold the partition's lock, so this must not wait for the
    /// group-commit thread: that thread calls the appends' completions,
    /// which take the same lock to move the high watermark, and a cleaner
    /// waiting behind one of them waited forever (the broker stopped
    /// answering Produce mid-compaction).
    func writeDurably(_ write: WriteBatch) throws(LogStoreError) {
        try storage { try context.database.write(write, sync: false) }
        try context.groupCommit.syncWAL()
    }

    /// Drops batches from the oldest while `drops(location, bytes kept
    /// before dropping it)` says so, below the high watermark; then moves the
    /// log start offset (to at least `startAtLeast`), removes the dropped
    /// batches' index entries, and unlinks segment files left empty.
    @discardableResult
    func dropOldest(startAtLeast: Int64 = 0, _ drops: (BatchLocation, Int64) -> Bool) throws(LogStoreError) -> RetentionOutcome {
        try context.layout.around { () throws(LogStoreError) -> RetentionOutcome in try state.withLock { state throws(LogStoreError) -> RetentionOutcome in
            guard !state.isDeleted else { return RetentionOutcome() }
            try writePendingEntries(&state)
            let families = context.families
            let iterator = context.database.makeIterator(
                in: families.log, lowerBound: prefix, upperBound: Keys.batch(prefix: prefix, baseOffset: state.highWatermark))
            iterator.seekToFirst()
            var outcome = RetentionOutcome()
            // Past the last dropped batch: the location keys below it go.
            var droppedEnd = state.logStartOffset
            var conversations = Set<[UInt8]>()
            func collectConversations(_ location: BatchLocation) throws(LogStoreError) {
                guard conversationIndex, let stored = try readBatch(at: location, segments: state.segments) else { return }
                do {
                    let batch = try RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax)
                    conversations.formUnion(try PartitionLog.conversationKeys(of: batch))
                } catch {
                    throw LogStoreError(.corrupt, "stored batch in \(topicName)/\(index) fails its checks during retention: \(error)")
                }
            }
            let startAtLeast = min(startAtLeast, state.highWatermark)
            while iterator.isValid {
                guard let location = BatchLocation(iterator.valueView) else {
                    throw LogStoreError(.corrupt, "a batch location of \(topicName)/\(index) is unreadable")
                }
                guard location.lastOffset < state.highWatermark, drops(location, state.sizeBytes - outcome.bytes) else {
                    // A start inside this batch keeps it whole; its records
                    // below the start leave the index all the same.
                    let base = Int64(bitPattern: Keys.readUInt64(iterator.keyView, at: prefix.count))
                    if base < startAtLeast { try collectConversations(location) }
                    break
                }
                try collectConversations(location)
                outcome.bytes += Int64(location.sizeBytes)
                outcome.batches += 1
                droppedEnd = max(droppedEnd, location.lastOffset + 1)
                iterator.next()
            }
            try storage { try iterator.checkError() }
            let newStart = max(droppedEnd, startAtLeast)
            guard newStart > state.logStartOffset else { return outcome }
            let write = WriteBatch()
            write.deleteRange(from: prefix, to: Keys.batch(prefix: prefix, baseOffset: droppedEnd), in: families.log)
            for conversation in conversations {
                try deleteIndexEntries(of: conversation, where: { $0 < newStart }, fromNewest: false, into: write)
            }
            var next = state
            next.logStartOffset = newStart
            next.sizeBytes -= outcome.bytes
            next.batchCount -= Int64(outcome.batches)
            write.put(prefix, next.encoded(), in: families.partitionState)
            // Durable before any segment goes: the locations must never point
            // into a removed file after a machine crash.
            try writeDurably(write)
            // A segment goes once the next one starts at or below the new log
            // start: all of its batches are dropped. The active one stays.
            var removable = 0
            while removable + 1 < next.segments.count && next.segments[removable + 1].baseOffset <= newStart {
                removable += 1
            }
            // The active segment goes too when every batch it held is dropped
            // and it takes no more: the next append begins a new one.
            if removable + 1 == next.segments.count, next.activeClosed, newStart >= next.logEndOffset {
                removable += 1
                next.activeSize = 0
            }
            if removable > 0 {
                next.segments[..<removable].forEach { $0.unlink() }
                next.segments.removeFirst(removable)
                outcome.segments = removable
                try? SegmentFile.syncDirectory(directory)
            }
            state = next
            return outcome
        } }
    }
}
