import ArgumentParser
import Broker
import Foundation

/// Topic defaults and the log cleaner's settings (`postduif serve`), by
/// Kafka's broker names: each is the default of a topic config, under the
/// cluster's dynamic defaults (AlterConfigs on broker "").
struct TopicOptions: ParsableArguments {
    @Option(help: "Default retention.ms: older batches go; -1 keeps them (POSTDUIF_LOG_RETENTION_MS).")
    var logRetentionMs: Int64?

    @Option(help: "Default retention.bytes per partition; -1 for no limit (POSTDUIF_LOG_RETENTION_BYTES).")
    var logRetentionBytes: Int64?

    @Option(help: "Default segment.bytes: a segment file closes at this size (POSTDUIF_LOG_SEGMENT_BYTES).")
    var logSegmentBytes: Int64?

    @Option(help: "Default segment.ms: a segment file closes once its first batch is this old (POSTDUIF_LOG_ROLL_MS).")
    var logRollMs: Int64?

    @Option(help: "Default cleanup.policy: delete, compact, or delete,compact (POSTDUIF_LOG_CLEANUP_POLICY).")
    var logCleanupPolicy: String?

    @Option(help: "How often retention and compaction visit every partition, in milliseconds (POSTDUIF_LOG_RETENTION_CHECK_INTERVAL_MS).")
    var logRetentionCheckIntervalMs: Int64 = Int64(Environment.integer("LOG_RETENTION_CHECK_INTERVAL_MS") ?? Int(BrokerConfiguration().retentionCheckInterval.milliseconds))

    @Option(help: "Compaction's I/O limit in MB/s, so produce latency holds (POSTDUIF_LOG_CLEANER_IO_MAX_MB_PER_S).")
    var logCleanerIoMaxMbPerS: Double = Environment.string("LOG_CLEANER_IO_MAX_MB_PER_S").flatMap(Double.init)
        ?? BrokerConfiguration().cleanerBytesPerSecond / 1_048_576

    func apply(to configuration: inout BrokerConfiguration) throws {
        let given: [(String, String?)] = [
            ("log.retention.ms", (logRetentionMs.map(String.init)) ?? Environment.string("LOG_RETENTION_MS")),
            ("log.retention.bytes", (logRetentionBytes.map(String.init)) ?? Environment.string("LOG_RETENTION_BYTES")),
            ("log.segment.bytes", (logSegmentBytes.map(String.init)) ?? Environment.string("LOG_SEGMENT_BYTES")),
            ("log.roll.ms", (logRollMs.map(String.init)) ?? Environment.string("LOG_ROLL_MS")),
            ("log.cleanup.policy", logCleanupPolicy ?? Environment.string("LOG_CLEANUP_POLICY")),
        ]
        for (name, value) in given { if let value { configuration.topicDefaults[name] = value } }
        guard logRetentionCheckIntervalMs >= 10 else { throw OperatorError("--log-retention-check-interval-ms must be at least 10") }
        configuration.retentionCheckInterval = .milliseconds(logRetentionCheckIntervalMs)
        guard logCleanerIoMaxMbPerS > 0 else { throw OperatorError("--log-cleaner-io-max-mb-per-s must be positive") }
        configuration.cleanerBytesPerSecond = logCleanerIoMaxMbPerS * 1_048_576
        do {
            try configuration.checkTopicDefaults()
        } catch {
            throw OperatorError("\(error)")
        }
    }
}
