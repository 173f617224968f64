import Core
import Foundation
import KafkaWire
import RocksDB
import Synchronization

// Opening a partition after a crash: RocksDB and the segment files made to agree.
extension PartitionLog {
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
        try recoverCompaction()
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
                    guard let batch = try PartitionLog.batch(in: segment, at: position, size: size) else {
                        // Zeros written out ahead (`SegmentFile.prepare`)
                        // end this segment's batches, not the log: a crash
                        // can keep them after the segment stopped being
                        // active. Anything else ends the log.
                        guard segmentIndex + 1 < segments.count, try segment.isZeros(from: position) else { break scan }
                        try segment.truncate(to: position)
                        try segment.sync()
                        break
                    }
                    if batch.nextOffset <= state.logEndOffset {
                        // Dropped by retention below the log start: skip it.
                        position += Int64(batch.sizeBytes)
                        continue
                    }
                    // A compacted topic's follower copies its leader's gaps.
                    let gapsAllowed = configuration.cleanupPolicy.contains(.compact)
                    guard batch.baseOffset == state.logEndOffset || (gapsAllowed && batch.baseOffset > state.logEndOffset) else { break scan }
                    let conversations: [[UInt8]]
                    do {
                        conversations = conversationIndex ? try PartitionLog.conversationKeys(of: batch) : []
                    } catch {
                        break scan
                    }
                    let location = BatchLocation(
                        segmentBase: segment.baseOffset, position: position, sizeBytes: batch.sizeBytes,
                        lastOffset: batch.lastOffset, maxTimestamp: batch.maxTimestamp)
                    if state.pending.appends >= Limits.pendingAppendEntriesMax {
                        try writePendingEntries(&state)
                    }
                    try record(
                        batch, location: location, leaderEpoch: batch.partitionLeaderEpoch, conversations: conversations,
                        producerEntry: batch.producerID >= 0 ? state.producers[batch.producerID] : nil, state: &state)
                    replayed += 1
                    position = location.end
                }
                guard segmentIndex + 1 < segments.count,
                      segments[segmentIndex + 1].baseOffset == state.logEndOffset
                        || (configuration.cleanupPolicy.contains(.compact) && segments[segmentIndex + 1].baseOffset > state.logEndOffset)
                else { break }
                segmentIndex += 1
                position = 0
            }

            // Whatever follows the last good batch is a torn write or garbage.
            if segmentIndex < segments.count {
                let segment = segments[segmentIndex]
                let size = try segment.size()
                if size > position {
                    // Zeros alone are space written out ahead of the last
                    // batch (`SegmentFile.prepare`), cut without a word.
                    let prepared = try segment.isZeros(from: position)
                    try segment.truncate(to: position)
                    try segment.sync()
                    if !prepared {
                        repairs.append("cut \(size - position) bytes of an incomplete write from the end of \(segment.path)")
                    }
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
                // Buffered like an append's entries; the WAL is synced once.
                try writePendingEntries(&state)
                try storage { try context.database.flushWAL(sync: true) }
                repairs.append("recorded \(replayed) batches the segments held beyond RocksDB's entries")
            }
        }
    }

    /// The batch stored at `position` of a segment of `size` bytes, if a
    /// whole one that passes its checks is there.
    static func batch(in segment: SegmentFile, at position: Int64, size: Int64) throws(LogStoreError) -> RecordBatch? {
        guard size - position >= Int64(RecordBatch.headerBytesCount) else { return nil }
        let head = try segment.read(at: position, count: 12)
        guard head.count == 12 else { return nil }
        let length = Int64(Int32(bitPattern: head.withUnsafeBytes { Keys.readUInt32($0, at: 8) }))
        let total = 12 + length
        guard total >= Int64(RecordBatch.headerBytesCount), total <= Int64(Limits.batchBytesConfigurableMax), position + total <= size else { return nil }
        let bytes = try segment.read(at: position, count: Int(total))
        return try? RecordBatch(validating: bytes, bytesMax: Limits.batchBytesConfigurableMax)
    }
}
