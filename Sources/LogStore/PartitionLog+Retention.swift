import Core
import Foundation
import KafkaWire
import RocksDB
import Synchronization

// Retention: whole batches past the retention time or size are dropped.
extension PartitionLog {
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
}
