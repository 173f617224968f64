import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

extension Broker {
    /// Brings the gauges measured on demand up to date (the operations
    /// port calls it before each scrape): consumer groups' lag.
    public func refreshMetrics() {
        metrics.refreshLag { topic, partition in
            (try? store.partition(topic: topic, index: partition))?.highWatermark
        }
        // The data directory's file system, for the disk-filling alert:
        // what is left to the broker (an unprivileged process's share).
        if let space = FileSystemSpace(path: store.path) {
            metrics.dataFreeBytes.record(Double(space.usableBytes))
            metrics.dataCapacityBytes.record(Double(space.totalBytes))
        }
    }
}

/// The broker's metrics, through swift-metrics: whatever backend main
/// bootstraps (Prometheus in `postduif serve`) receives them.
final class BrokerMetrics: Sendable {
    private let requests: [ApiKey: (count: Counter, duration: Metrics.Timer)]
    let bytesIn = Counter(label: "postduif_bytes_in_total")
    let bytesOut = Counter(label: "postduif_bytes_out_total")
    /// KIP-392: consumer fetches this broker served as a follower, and
    /// those it sent to a follower in the consumer's rack as leader.
    let followerReads = Counter(label: "postduif_fetch_follower_reads_total")
    let preferredReadReplicaAnswers = Counter(label: "postduif_fetch_preferred_read_replica_answers_total")
    private let connections = Gauge(label: "postduif_connections")
    /// The data directory's file system: bytes free to the broker, and its size.
    let dataFreeBytes = Gauge(label: "postduif_data_free_bytes")
    let dataCapacityBytes = Gauge(label: "postduif_data_capacity_bytes")
    /// What retention removed: batches, their bytes, and segment files.
    let retentionBatches = Counter(label: "postduif_retention_removed_batches_total")
    let retentionBytes = Counter(label: "postduif_retention_removed_bytes_total")
    let retentionSegments = Counter(label: "postduif_retention_removed_segments_total")
    /// What compaction read, wrote and removed.
    let compactionBytesRead = Counter(label: "postduif_compaction_read_bytes_total")
    let compactionBytesWritten = Counter(label: "postduif_compaction_written_bytes_total")
    let compactionRecordsRemoved = Counter(label: "postduif_compaction_removed_records_total")
    private let connectionsCount = Mutex(0)
    /// The cluster as this broker sees it (Docs/operations.md, "Alerts"):
    /// ISR changes it wrote as a leader, controller changes it saw,
    /// partitions it leads with fewer in-sync replicas than replicas, and
    /// (on the controller only) partitions without a leader and moves
    /// under way; on a leader, the bytes its added replicas still lack.
    let isrShrinks = Counter(label: "postduif_isr_shrinks_total")
    let isrExpands = Counter(label: "postduif_isr_expands_total")
    let controllerChanges = Counter(label: "postduif_controller_changes_total")
    let controllerActive = Gauge(label: "postduif_controller_active")
    let underReplicatedPartitions = Gauge(label: "postduif_under_replicated_partitions")
    let offlinePartitions = Gauge(label: "postduif_offline_partitions")
    let reassigningPartitions = Gauge(label: "postduif_reassigning_partitions")
    let reassignmentBytesLeft = Gauge(label: "postduif_reassignment_bytes_left")
    /// Each group's last committed offset per partition, for the lag gauges.
    private let committed = Mutex<[GroupPartition: (offset: Int64, gauge: Gauge)]>([:])

    struct GroupPartition: Hashable {
        var group: String
        var topic: String
        var partition: Int32
    }

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

    /// A group committed `offset` for a partition (its lag is measured from it).
    func noteCommitted(group: String, topic: String, partition: Int32, offset: Int64) {
        let key = GroupPartition(group: group, topic: topic, partition: partition)
        committed.withLock { committed in
            let gauge = committed[key]?.gauge ?? Gauge(label: "postduif_consumer_group_lag", dimensions: [("group", group), ("topic", topic), ("partition", String(partition))])
            committed[key] = (offset, gauge)
        }
    }

    /// Every group's committed offset per partition, as this broker (their
    /// coordinator) holds them: for the operator console.
    var committedOffsets: [(group: String, topic: String, partition: Int32, offset: Int64)] {
        committed.withLock { committed in committed.map { ($0.key.group, $0.key.topic, $0.key.partition, $0.value.offset) } }
    }

    /// Forgets a group's commits (DeleteGroups, OffsetDelete).
    func forgetCommitted(group: String, partitions: [(topic: String, partition: Int32)]? = nil) {
        committed.withLock { committed in
            for key in committed.keys where key.group == group && (partitions?.contains { $0.topic == key.topic && $0.partition == key.partition } ?? true) {
                committed.removeValue(forKey: key)?.gauge.destroy()
            }
        }
    }

    /// Sets every group's lag: the partition's high watermark (where this
    /// broker holds the partition) less the group's committed offset.
    func refreshLag(highWatermark: (String, Int32) -> Int64?) {
        for (key, entry) in committed.withLock({ $0 }) {
            guard let end = highWatermark(key.topic, key.partition) else { continue }
            entry.gauge.record(max(0, end - entry.offset))
        }
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
