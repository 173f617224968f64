/// The `# HELP` line of every metric Postduif exports. swift-metrics has
/// no place for a description, so the operations port adds these to the
/// exposition text (`annotate`); `promtool check metrics` asks for one per
/// family, and OperationsTests checks that every metric the sources name is
/// described here.
public enum MetricHelp {
    public static let texts: [String: String] = [
        "postduif_bytes_in_total": "Bytes of Kafka requests received.",
        "postduif_bytes_out_total": "Bytes of Kafka responses sent.",
        "postduif_fetch_follower_reads_total": "Consumer fetches this broker served records to as an in-sync follower (KIP-392).",
        "postduif_fetch_preferred_read_replica_answers_total": "Consumer fetches this leader sent to the in-sync follower in the consumer's rack (KIP-392).",
        "postduif_compaction_read_bytes_total": "Bytes compaction read from closed segments.",
        "postduif_compaction_removed_records_total": "Records and tombstones compaction removed.",
        "postduif_compaction_written_bytes_total": "Bytes compaction wrote to cleaned segments.",
        "postduif_connections": "Open Kafka client connections.",
        "postduif_consumer_group_lag": "Records between a partition's high watermark and the group's committed offset, on the group's coordinator.",
        "postduif_controller_active": "1 on the broker that is the cluster's controller, else 0.",
        "postduif_controller_changes_total": "Controller changes this broker saw.",
        "postduif_data_capacity_bytes": "Size of the data directory's file system.",
        "postduif_data_free_bytes": "Bytes of the data directory's file system free to the broker.",
        "postduif_fanout_dropped_deliveries_total": "Live deliveries left out because a gateway's queue was full (the gateway resyncs from the log).",
        "postduif_fanout_handed_over_deliveries_total": "Deliveries handed straight to the gateway in the broker's process, without a queue (ADR 0037).",
        "postduif_gateway_cache_restarts_total": "Times a gateway rebuilt its timeline cache from the log.",
        "postduif_gateway_deliveries_total": "Messages the fan-out delivered to this gateway.",
        "postduif_gateway_fast_sends_total": "Matrix sends answered by the gateway's event-loop fast path.",
        "postduif_gateway_fast_syncs_total": "Matrix syncs answered by the gateway's event-loop fast path.",
        "postduif_gateway_local_users": "Users with a session on this gateway.",
        "postduif_gateway_long_polls": "Matrix syncs waiting for news.",
        "postduif_gateway_produce_requests_total": "Produce requests the gateway sent to the broker.",
        "postduif_gateway_produced_records_total": "Records the gateway produced.",
        "postduif_isr_expands_total": "Followers this broker added back to an in-sync replica set as leader.",
        "postduif_isr_shrinks_total": "Followers this broker removed from an in-sync replica set as leader.",
        "postduif_offline_partitions": "Partitions without a leader (on the controller).",
        "postduif_partition_high_watermark": "A partition's high watermark: records below it are committed.",
        "postduif_partition_log_end_offset": "A partition's log end offset.",
        "postduif_reassigning_partitions": "Partitions being moved (on the controller).",
        "postduif_reassignment_bytes_left": "Bytes the replicas being added still lack (on their leaders, estimated).",
        "postduif_request_duration_seconds": "Time from a request's arrival to its answer, per API.",
        "postduif_requests_total": "Requests answered, per API.",
        "postduif_retention_removed_batches_total": "Batches retention removed.",
        "postduif_retention_removed_bytes_total": "Bytes retention removed.",
        "postduif_retention_removed_segments_total": "Segment files retention removed.",
        "postduif_tls_certificate_expiry_timestamp_seconds": "When the certificate in use stops being valid, in seconds since the epoch.",
        "postduif_under_replicated_partitions": "Partitions this broker leads whose in-sync replica set lacks a replica.",
        "postduif_wal_sync_duration_seconds": "Time of one group-commit round of syncs (the floor of an fsync-mode acknowledgement).",
    ]

    /// Metrics of the libraries under the gateway (Hummingbird's metrics
    /// middleware), by the names `prometheusName` gives them.
    public static let libraryTexts: [String: String] = [
        "hb_requests_total": "HTTP requests the gateway answered, per method and route.",
        "hb_request_errors_total": "HTTP requests the gateway answered with an error, per method and route.",
        "http_server_active_requests": "HTTP requests the gateway is answering now.",
        "http_server_request_duration": "Time the gateway took to answer an HTTP request, in seconds.",
    ]

    /// Prometheus's name for a swift-metrics label: counters end in
    /// `_total`, which Hummingbird's two counters lack (`promtool check
    /// metrics` asks for it). For `PrometheusMetricsFactory.nameAndLabelSanitizer`.
    public static func prometheusName(_ label: String, _ dimensions: [(String, String)]) -> (String, [(String, String)]) {
        switch label {
        case "hb.requests", "hb.request.errors": (label + "_total", dimensions)
        default: (label, dimensions)
        }
    }

    /// Buckets for the broker's request and sync durations, from 50 µs:
    /// a Produce or a round of syncs takes well under the 5 ms at which
    /// swift-prometheus's default buckets begin.
    public static let fineDurationBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// The exposition with a `# HELP` line before each described family's `# TYPE` line.
    public static func annotate(_ exposition: String) -> String {
        var lines: [Substring] = []
        for line in exposition.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE "), let name = line.split(separator: " ").dropFirst(2).first, let help = texts[String(name)] ?? libraryTexts[String(name)] {
                lines.append("# HELP \(name) \(help)")
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }
}
