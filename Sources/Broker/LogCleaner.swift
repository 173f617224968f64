import Core
import Foundation
import LogStore
import Logging
import Metrics

/// Retention (and compaction) on every replica this broker holds: one pass
/// at a time, each at a given time, so the rules run under a manual clock in
/// tests; the executable's service calls `cleanLogs` on a timer.
extension Broker {
    /// One pass over every partition: segments older than their topic's
    /// `segment.ms` close, and retention drops what its topic's settings
    /// allow. A partition that fails (a full disk) is logged and skipped;
    /// the next pass tries again.
    ///
    /// Compacted topics are compacted in the same pass; `throttle` is called
    /// with the bytes a partition's compaction has read and written so far
    /// and the limit in bytes a second, and sleeps to hold it; it returns
    /// false when the node is stopping, and the pass ends there.
    @discardableResult
    public func cleanLogs(nowMilliseconds: Int64, throttle: (_ bytes: Int64, _ bytesPerSecond: Double) -> Bool = { _, _ in true }) -> (RetentionOutcome, CompactionOutcome) {
        var removed = RetentionOutcome()
        var compacted = CompactionOutcome()
        let limit = cleanerBytesPerSecond
        for partition in store.allPartitions {
            guard throttle(0, limit) else { break }
            do {
                try partition.closeActiveSegment(nowMilliseconds: nowMilliseconds)
                let cleaned = try partition.compact(nowMilliseconds: nowMilliseconds) { throttle($0, limit) }
                if cleaned.didWork {
                    logger.info("compacted", metadata: [
                        "partition": "\(partition.topicName)/\(partition.index)", "segments": "\(cleaned.segmentsCleaned)",
                        "recordsRemoved": "\(cleaned.recordsRemoved)", "tombstonesRemoved": "\(cleaned.tombstonesRemoved)",
                        "bytesRead": "\(cleaned.bytesRead)", "bytesWritten": "\(cleaned.bytesWritten)"])
                    compacted = compacted + cleaned
                }
                let outcome = try partition.enforceRetention(nowMilliseconds: nowMilliseconds)
                if outcome.batches > 0 {
                    logger.info("retention removed old records", metadata: [
                        "partition": "\(partition.topicName)/\(partition.index)", "batches": "\(outcome.batches)",
                        "bytes": "\(outcome.bytes)", "segments": "\(outcome.segments)", "logStartOffset": "\(partition.logStartOffset)"])
                }
                removed = removed + outcome
            } catch {
                logger.error("retention or compaction failed for a partition", metadata: ["partition": "\(partition.topicName)/\(partition.index)", "error": "\(error)"])
            }
        }
        metrics.recordRetention(removed)
        metrics.recordCompaction(compacted)
        return (removed, compacted)
    }
}

extension BrokerMetrics {
    func recordRetention(_ outcome: RetentionOutcome) {
        guard outcome.batches > 0 else { return }
        retentionBatches.increment(by: outcome.batches)
        retentionBytes.increment(by: Int(outcome.bytes))
        retentionSegments.increment(by: outcome.segments)
    }
}

extension BrokerMetrics {
    func recordCompaction(_ outcome: CompactionOutcome) {
        guard outcome.didWork else { return }
        compactionBytesRead.increment(by: Int(outcome.bytesRead))
        compactionBytesWritten.increment(by: Int(outcome.bytesWritten))
        compactionRecordsRemoved.increment(by: outcome.recordsRemoved + outcome.tombstonesRemoved)
    }
}
