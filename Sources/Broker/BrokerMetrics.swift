import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

/// The broker's metrics, through swift-metrics: whatever backend main
/// bootstraps (Prometheus in `postduif serve`) receives them.
final class BrokerMetrics: Sendable {
    private let requests: [ApiKey: (count: Counter, duration: Metrics.Timer)]
    let bytesIn = Counter(label: "postduif_bytes_in_total")
    let bytesOut = Counter(label: "postduif_bytes_out_total")
    private let connections = Gauge(label: "postduif_connections")
    /// What retention removed: batches, their bytes, and segment files.
    let retentionBatches = Counter(label: "postduif_retention_removed_batches_total")
    let retentionBytes = Counter(label: "postduif_retention_removed_bytes_total")
    let retentionSegments = Counter(label: "postduif_retention_removed_segments_total")
    /// What compaction read, wrote and removed.
    let compactionBytesRead = Counter(label: "postduif_compaction_read_bytes_total")
    let compactionBytesWritten = Counter(label: "postduif_compaction_written_bytes_total")
    let compactionRecordsRemoved = Counter(label: "postduif_compaction_removed_records_total")
    private let connectionsCount = Mutex(0)

    init() {
        var requests: [ApiKey: (Counter, Metrics.Timer)] = [:]
        for api in ApiKey.allCases {
            let dimensions = [("api", api.description)]
            requests[api] = (Counter(label: "postduif_requests_total", dimensions: dimensions),
                             Metrics.Timer(label: "postduif_request_duration_seconds", dimensions: dimensions))
        }
        self.requests = requests
    }

    func recordRequest(_ api: ApiKey, duration: Duration) {
        guard let metrics = requests[api] else { return }
        metrics.count.increment()
        metrics.duration.record(duration: duration)
    }

    func connectionOpened() {
        connections.record(connectionsCount.withLock { $0 += 1; return $0 })
    }

    func connectionClosed() {
        connections.record(connectionsCount.withLock { $0 -= 1; return $0 })
    }

    /// Each partition's two gauges, made once: produce is the hot path, and
    /// making a metric asks the backend's registry under its lock.
    private let partitionGauges = Mutex<[String: (logEndOffset: Gauge, highWatermark: Gauge)]>([:])

    func recordOffsets(topic: String, partition: Int32, logEndOffset: Int64, highWatermark: Int64) {
        let gauges = partitionGauges.withLock { gauges in
            let key = "\(topic)/\(partition)"
            if let existing = gauges[key] { return existing }
            let dimensions = [("topic", topic), ("partition", String(partition))]
            let made = (Gauge(label: "postduif_partition_log_end_offset", dimensions: dimensions),
                        Gauge(label: "postduif_partition_high_watermark", dimensions: dimensions))
            gauges[key] = made
            return made
        }
        gauges.logEndOffset.record(logEndOffset)
        gauges.highWatermark.record(highWatermark)
    }
}
