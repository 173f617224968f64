import Core
import Foundation
import KafkaWire
import RocksDB
import Synchronization

/// What one compaction pass did to a partition.
public struct CompactionOutcome: Sendable, Equatable {
    /// Bytes read and written (what the I/O limit counts).
    public var bytesRead: Int64 = 0
    public var bytesWritten: Int64 = 0
    public var recordsRemoved = 0
    public var tombstonesRemoved = 0
    /// Segment files merged into one.
    public var segmentsCleaned = 0

    public init() {}

    public var didWork: Bool { segmentsCleaned > 0 }

    public static func + (a: CompactionOutcome, b: CompactionOutcome) -> CompactionOutcome {
        var sum = a
        sum.bytesRead += b.bytesRead
        sum.bytesWritten += b.bytesWritten
        sum.recordsRemoved += b.recordsRemoved
        sum.tombstonesRemoved += b.tombstonesRemoved
        sum.segmentsCleaned += b.segmentsCleaned
        return sum
    }
}

// Compaction (`cleanup.policy=compact`): the closed segments are rewritten
// keeping each key's newest record, every kept record at its own offset.
extension PartitionLog {
    /// Compacts the closed segments below the high watermark when enough of
    /// them is new since the last pass (`min.cleanable.dirty.ratio`):
    /// records that a newer record of the same key replaces go, records
    /// younger than `min.compaction.lag.ms` stay, and a tombstone (null
    /// value) goes once it is older than `delete.retention.ms`. Batches keep
    /// their base offsets, and records their offsets; a batch left with no
    /// record goes. The active segment is never touched.
    ///
    /// The work happens without the partition's lock (appends go on): the
    /// cleaned batches go to `<first>.log.cleaned`, synced; then, under the
    /// lock and only if nothing changed the range meanwhile, one synced
    /// RocksDB write swaps the locations (with a marker), the file replaces
    /// the first segment by rename, the others are removed, and the marker
    /// goes. Opening the store finishes a swap a crash interrupted.
    ///
    /// `throttle` is called with the bytes read or written so far in the
    /// pass; the caller sleeps there to hold an I/O rate, and returns false
    /// to abandon the pass (the node is stopping): nothing changes then.
    @discardableResult
    public func compact(nowMilliseconds: Int64, keysMax: Int = Limits.compactionKeysMax, throttle: (Int64) -> Bool = { _ in true }) throws(LogStoreError) -> CompactionOutcome {
        let configuration = configuration
        guard configuration.cleanupPolicy.contains(.compact) else { return CompactionOutcome() }
        let (segments, highWatermark, logStart) = try withEntriesWritten { ($0.segments, $0.highWatermark, $0.logStartOffset) }
        // Closed segments only: the active one still grows.
        guard segments.count >= 2 else { return CompactionOutcome() }
        let closedEnd = min(highWatermark, segments[segments.count - 1].baseOffset)
        let lagCutoff = nowMilliseconds - configuration.compactionLagMin.milliseconds
        // The checkpoint: cleaned up to which offset, and when the oldest
        // tombstone a pass kept is due to go (a pass then runs, dirty or not).
        let stored = try storage { try context.database.get(Keys.cleanerCheckpoint(prefix: prefix), in: context.families.partitionState) }
        let checkpoint = stored.map { Int64(bitPattern: Keys.readUInt64($0, at: 0)) } ?? 0
        let tombstonesDue = stored.flatMap { $0.count >= 16 ? Int64(bitPattern: Keys.readUInt64($0, at: 8)) : nil } ?? .max

        // The batches to clean: from the log start, whole segments, while
        // older than the lag and while the key map has room.
        var locations: [(base: Int64, location: BatchLocation)] = []
        var latest: [[UInt8]: Int64] = [:]
        var end = logStart
        var totalBytes: Int64 = 0
        var dirtyBytes: Int64 = 0
        let iterator = context.database.makeIterator(in: context.families.log, lowerBound: prefix, upperBound: Keys.batch(prefix: prefix, baseOffset: closedEnd))
        iterator.seekToFirst()
        var bytesSeen: Int64 = 0
        while iterator.isValid {
            guard let location = BatchLocation(iterator.valueView) else {
                throw LogStoreError(.corrupt, "a batch location of \(topicName)/\(index) is unreadable")
            }
            let base = Int64(bitPattern: Keys.readUInt64(iterator.keyView, at: prefix.count))
            guard location.lastOffset < closedEnd, location.maxTimestamp <= lagCutoff else { break }
            guard let stored = try readBatch(at: location, segments: segments, refreshable: true) else { break }
            let keys: [[UInt8]?]
            let batch: RecordBatch
            do {
                batch = try RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax)
                keys = try batch.recordKeys()
            } catch {
                throw LogStoreError(.corrupt, "stored batch in \(topicName)/\(index) fails its checks during compaction: \(error)")
            }
            let newKeys = keys.reduce(0) { $0 + ($1.map { latest[$0] == nil ? 1 : 0 } ?? 0) }
            if latest.count + newKeys > keysMax && !locations.isEmpty { break }
            // Keys come in offset order; a record's offset is its position
            // after the batch's base (producers write deltas 0, 1, 2, ...;
            // a batch compacted before keeps its deltas, so they are read).
            let deltas = keys.count == Int(batch.lastOffsetDelta) + 1 ? nil : try? batch.records().map(\.offsetDelta)
            for (position, key) in keys.enumerated() {
                guard let key else { continue }
                latest[key] = base + Int64(deltas?[position] ?? Int32(position))
            }
            bytesSeen += Int64(location.sizeBytes)
            guard throttle(bytesSeen) else { return CompactionOutcome() }
            locations.append((base, location))
            totalBytes += Int64(location.sizeBytes)
            if location.lastOffset >= checkpoint { dirtyBytes += Int64(location.sizeBytes) }
            end = location.lastOffset + 1
            iterator.next()
        }
        try storage { try iterator.checkError() }
        // Whole closed segments only: the range ends where a segment ends.
        guard let first = locations.first, segments[0].baseOffset <= first.base else { return CompactionOutcome() }
        var lastSegment = -1
        while lastSegment + 2 < segments.count && segments[lastSegment + 2].baseOffset <= end { lastSegment += 1 }
        guard lastSegment >= 0 else { return CompactionOutcome() }
        let firstSegment = 0
        let rangeEnd = segments[lastSegment + 1].baseOffset
        locations.removeAll { $0.base >= rangeEnd }
        guard !locations.isEmpty, totalBytes > 0 else { return CompactionOutcome() }
        guard Double(dirtyBytes) / Double(totalBytes) >= configuration.cleanableDirtyRatioMin || nowMilliseconds >= tombstonesDue else {
            return CompactionOutcome()
        }
        let truncations = state.withLock { $0.truncations }
        // A record the map knows a newer offset of goes, wherever the newer
        // one lies: it is in the log after it.
        let tombstoneCutoff = nowMilliseconds - configuration.tombstoneRetention.milliseconds

        // The cleaned file.
        let target = segments[firstSegment]
        let cleanedPath = target.path + Self.cleanedSuffix
        let cleaned = try SegmentFile(path: cleanedPath, baseOffset: target.baseOffset, create: true)
        _ = firstSegment
        var outcome = CompactionOutcome()
        outcome.bytesRead = bytesSeen
        var newLocations: [(base: Int64, location: BatchLocation)] = []
        var removed: [(conversation: [UInt8], offset: Int64)] = []
        var position: Int64 = 0
        var nextTombstonesDue = Int64.max
        for (base, location) in locations {
            guard let stored = try readBatch(at: location, segments: segments, refreshable: true) else {
                cleaned.unlink()
                return CompactionOutcome()
            }
            let batch: RecordBatch
            let records: [Record]
            do {
                batch = try RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax)
                // Most batches of a compacted log keep nothing: their keys tell
                // so without copying a single value.
                if Int64(batch.recordsCount) == Int64(batch.lastOffsetDelta) + 1 {
                    let keys = try batch.recordKeys()
                    let keeps = keys.enumerated().contains { position, key in key.map { latest[$0] == base + Int64(position) } ?? true }
                    if !keeps {
                        outcome.recordsRemoved += keys.count
                        if conversationIndex {
                            for (position, key) in keys.enumerated() { if let key { removed.append((key, base + Int64(position))) } }
                        }
                        continue
                    }
                }
                records = try batch.records()
            } catch {
                cleaned.unlink()
                throw LogStoreError(.corrupt, "stored batch in \(topicName)/\(index) fails its checks during compaction: \(error)")
            }
            var builder = RecordBatchBuilder(compression: batch.compression ?? .none)
            builder.baseOffset = base
            builder.partitionLeaderEpoch = batch.partitionLeaderEpoch
            builder.producerID = batch.producerID
            builder.producerEpoch = batch.producerEpoch
            builder.baseSequence = batch.baseSequence
            builder.lastOffsetDelta = batch.lastOffsetDelta
            if batch.usesLogAppendTime { builder.logAppendTime = batch.maxTimestamp }
            for record in records {
                let offset = base + Int64(record.offsetDelta)
                let isNewest = record.key.map { latest[$0] == offset } ?? true
                let isOldTombstone = record.value == nil && batch.maxTimestamp < tombstoneCutoff
                if isNewest && !isOldTombstone {
                    if record.value == nil {
                        nextTombstonesDue = min(nextTombstonesDue, batch.maxTimestamp + configuration.tombstoneRetention.milliseconds)
                    }
                    builder.append(key: record.key, value: record.value, headers: record.headers,
                                   timestamp: batch.baseTimestamp + record.timestampDelta, offsetDelta: record.offsetDelta)
                } else {
                    if isNewest { outcome.tombstonesRemoved += 1 } else { outcome.recordsRemoved += 1 }
                    if conversationIndex, let key = record.key { removed.append((key, offset)) }
                }
            }
            guard builder.recordsCount > 0 else { continue }
            let bytes = builder.recordsCount == records.count ? stored : builder.build()
            try cleaned.write(head: [], rest: bytes, at: position)
            let last = base + Int64(batch.lastOffsetDelta)
            let maxTimestamp = (try? RecordBatch(validating: bytes, bytesMax: Limits.batchBytesConfigurableMax).maxTimestamp) ?? location.maxTimestamp
            newLocations.append((base, BatchLocation(segmentBase: target.baseOffset, position: position, sizeBytes: bytes.count, lastOffset: last, maxTimestamp: maxTimestamp)))
            position += Int64(bytes.count)
            outcome.bytesWritten += Int64(bytes.count)
            // Writeback started as the file grows, so the sync at the end
            // is short: a long one commits the file system's journal while
            // appends to other partitions wait on it.
            if position / PartitionLog.writebackBytes != (position - Int64(bytes.count)) / PartitionLog.writebackBytes {
                cleaned.startWriteback()
            }
            guard throttle(outcome.bytesRead + outcome.bytesWritten) else {
                cleaned.unlink()
                return CompactionOutcome()
            }
        }
        try cleaned.sync()
        outcome.segmentsCleaned = lastSegment - firstSegment + 1

        // The swap, under the lock, if the range is as it was.
        let firstBase = locations[0].base
        let merged = segments[firstSegment...lastSegment].map(\.baseOffset)
        return try context.layout.around { () throws(LogStoreError) -> CompactionOutcome in try state.withLock { state throws(LogStoreError) -> CompactionOutcome in
            guard !state.isDeleted, state.truncations == truncations, state.logStartOffset <= firstBase, state.logEndOffset >= rangeEnd,
                  state.segments.count > merged.count, Array(state.segments.prefix(merged.count).map(\.baseOffset)) == merged
            else {
                cleaned.unlink()
                return CompactionOutcome()
            }
            try writePendingEntries(&state)
            let families = context.families
            let write = WriteBatch()
            write.deleteRange(from: Keys.batch(prefix: prefix, baseOffset: firstBase), to: Keys.batch(prefix: prefix, baseOffset: rangeEnd), in: families.log)
            for (base, location) in newLocations {
                write.put(Keys.batch(prefix: prefix, baseOffset: base), location.encoded(), in: families.log)
            }
            if !removed.isEmpty {
                let byConversation = Dictionary(grouping: removed, by: \.conversation).mapValues { Set($0.map(\.offset)) }
                for (conversation, offsets) in byConversation {
                    try deleteIndexEntries(of: conversation, matching: offsets, into: write)
                }
            }
            var next = state
            next.sizeBytes -= outcome.bytesRead - outcome.bytesWritten
            next.batchCount -= Int64(locations.count - newLocations.count)
            write.put(prefix, next.encoded(), in: families.partitionState)
            var checkpointValue = [UInt8]()
            Keys.append(&checkpointValue, rangeEnd)
            Keys.append(&checkpointValue, nextTombstonesDue)
            write.put(Keys.cleanerCheckpoint(prefix: prefix), checkpointValue, in: families.partitionState)
            var swap = [UInt8]()
            for base in merged { Keys.append(&swap, base) }
            write.put(Keys.cleanerSwap(prefix: prefix), swap, in: families.partitionState)
            try writeDurably(write)
            try finishSwap(merged, state: &next)
            state = next
            return outcome
        } }
    }

    static let cleanedSuffix = ".cleaned"

    /// The second half of a compaction's swap: the cleaned file takes the
    /// first segment's name, the other merged segments go, the marker goes.
    /// Also what opening the store does with a marker a crash left.
    func finishSwap(_ merged: [Int64], state: inout State) throws(LogStoreError) {
        let targetPath = directory + "/" + SegmentFile.name(baseOffset: merged[0])
        let cleanedPath = targetPath + Self.cleanedSuffix
        if FileManager.default.fileExists(atPath: cleanedPath) {
            guard rename(cleanedPath, targetPath) == 0 else { throw SegmentFile.failure("rename", cleanedPath) }
        }
        for base in merged.dropFirst() { _ = unlink(directory + "/" + SegmentFile.name(baseOffset: base)) }
        try SegmentFile.syncDirectory(directory)
        if let first = state.segments.firstIndex(where: { $0.baseOffset == merged[0] }) {
            let replacement = try SegmentFile(directory: directory, baseOffset: merged[0], create: false)
            state.segments.removeAll { merged.dropFirst().contains($0.baseOffset) }
            state.segments[first] = replacement
        }
        // Unsynced: a marker that survives a crash only makes opening redo the
        // (finished, so harmless) swap.
        try storage { try context.database.delete(Keys.cleanerSwap(prefix: prefix), in: context.families.partitionState, sync: false) }
    }

    /// Opening: finishes a compaction's swap a crash interrupted (its marker
    /// is in RocksDB: the locations already speak of the cleaned file), or
    /// removes a cleaned file whose swap never began, and a closed segment's
    /// kept part a crash left half copied (`cutSegments`).
    func recoverCompaction() throws(LogStoreError) {
        let marker = try storage { try context.database.get(Keys.cleanerSwap(prefix: prefix), in: context.families.partitionState) }
        if let marker, marker.count >= 8, marker.count % 8 == 0 {
            let merged = stride(from: 0, to: marker.count, by: 8).map { Int64(bitPattern: Keys.readUInt64(marker, at: $0)) }
            var ignored = State()
            try finishSwap(merged, state: &ignored)
            notes.withLock { $0.append("\(topicName)/\(index): finished a compaction's swap of segments \(merged)") }
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasSuffix(Self.cleanedSuffix) || name.hasSuffix(Self.cutSuffix) {
            _ = unlink(directory + "/" + name)
        }
    }

    /// Deletes a conversation's index entries whose offsets are in `offsets`.
    func deleteIndexEntries(of conversation: [UInt8], matching offsets: Set<Int64>, into write: WriteBatch) throws(LogStoreError) {
        let conversationPrefix = Keys.conversation(prefix: prefix, conversation: conversation)
        let iterator = context.database.makeIterator(
            in: context.families.conversationIndex, lowerBound: conversationPrefix, upperBound: Keys.end(of: conversationPrefix))
        iterator.seekToFirst()
        var left = offsets.count
        while iterator.isValid && left > 0 {
            if offsets.contains(Int64(bitPattern: Keys.readUInt64(iterator.valueView, at: 0))) {
                write.delete(iterator.key, in: context.families.conversationIndex)
                left -= 1
            }
            iterator.next()
        }
        try storage { try iterator.checkError() }
    }
}
