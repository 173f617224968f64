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
    @discardableResult
    public func cleanLogs(nowMilliseconds: Int64) -> RetentionOutcome {
        var removed = RetentionOutcome()
        for partition in store.allPartitions {
            do {
                try partition.closeActiveSegment(nowMilliseconds: nowMilliseconds)
                let outcome = try partition.enforceRetention(nowMilliseconds: nowMilliseconds)
                if outcome.batches > 0 {
                    logger.info("retention removed old records", metadata: [
                        "partition": "\(partition.topicName)/\(partition.index)", "batches": "\(outcome.batches)",
                        "bytes": "\(outcome.bytes)", "segments": "\(outcome.segments)", "logStartOffset": "\(partition.logStartOffset)"])
                }
                removed = removed + outcome
            } catch {
                logger.error("retention failed for a partition", metadata: ["partition": "\(partition.topicName)/\(partition.index)", "error": "\(error)"])
            }
        }
        metrics.recordRetention(removed)
        return removed
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
