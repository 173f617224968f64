/// Every bound Postduif enforces, in one place (STYLE.md rule 4): on input
/// from the wire, in the log store, and on every queue, cache and table of
/// parked waits above them. Values are checked where input arrives and
/// asserted inside.
public enum Limits {
    // MARK: The wire

    /// The largest record batch accepted by default (Kafka's
    /// `max.message.bytes` default is 1 MiB plus overhead; we allow 1 MiB).
    public static let batchBytesDefaultMax = 1 << 20
    /// The largest `max.message.bytes` a topic may configure.
    public static let batchBytesConfigurableMax = 16 << 20
    /// The most bytes one compressed batch may inflate to. A batch that
    /// expands further is refused as a decompression bomb.
    public static let decompressedBatchBytesMax = 64 << 20
    /// The most records in one batch (Kafka stores the count in an int32; a
    /// count above this is refused before any allocation).
    public static let recordsPerBatchMax = 1 << 20
    /// The most headers one record may carry.
    public static let headersPerRecordMax = 1 << 10

    // MARK: The log store

    /// Batches remembered per producer for duplicate detection (Kafka: 5).
    public static let producerBatchesRemembered = 5
    /// The most partitions one topic may have.
    public static let partitionsPerTopicMax = 10_000
    /// The smallest segment file a topic may configure (Kafka's `segment.bytes` minimum is 14).
    public static let segmentBytesMin: Int64 = 4096
    /// Keys one compaction pass of a partition remembers (Kafka's offset
    /// map); a partition with more is compacted over several passes.
    public static let compactionKeysMax = 4_000_000
    /// The longest topic name (Kafka's own limit).
    public static let topicNameBytesMax = 249
    /// The longest conversation id (record key) indexed for a conversation topic.
    public static let conversationIDBytesMax = 255
    /// The most messages one history call returns.
    public static let historyMessagesMax = 1000
    /// In `fsync` mode, an active segment is written out ahead of its last
    /// batch by as many bytes as it holds, from this size on…
    public static let segmentPreparedBytesMin: Int64 = 64 << 10
    /// …and by at most this many (Docs/adr/0034).
    public static let segmentPreparedBytesMax: Int64 = 4 << 20
    /// A batch this large or larger asks for no zeros ahead: updating the
    /// file's extents is a small part of its sync, and zeros written ahead
    /// of a run of them (a file's chunks) are written twice (ADR 0035).
    public static let segmentPreparedBatchBytesMax = 128 << 10
    /// Appends whose RocksDB entries wait in their partition before they
    /// are written as one (`PartitionLog.PendingEntries`, ADR 0013): one
    /// write of the partition state and of each producer per this many
    /// appends when nothing reads the partition. What a crash loses of
    /// them, with what RocksDB's WAL buffer held, opening the store
    /// replays from the segments.
    public static let pendingAppendEntriesMax = 64
    /// Conversations whose next sequence the log store keeps in memory per partition.
    public static let conversationSequenceCacheCountMax = 100_000

    // MARK: Connections

    /// Requests a Kafka connection holds (read and not yet taken, or taken
    /// and not yet answered) before it stops reading from its socket.
    public static let connectionRequestsBacklogMax = 16

    // MARK: Replication

    /// acks=all Produce requests parked at once waiting for the high watermark.
    public static let parkedAcksMax = 1 << 20

    // MARK: The fan-out

    /// Deliveries queued for one gateway; beyond, the gateway resyncs.
    public static let fanOutQueueCountMax = 10_000
    /// Bytes queued for one gateway; beyond, the gateway resyncs.
    public static let fanOutQueueBytesMax = 16 << 20
    /// Gateways' polls parked at once on one broker.
    public static let parkedPollsMax = 10_000
    /// Conversations whose next sequence a fan-out worker remembers.
    public static let fanOutSequenceCacheCountMax = 100_000

    // MARK: Authentication

    /// Failed SASL exchanges from one address per minute; beyond, its
    /// exchanges fail at once until the minute is over.
    public static let saslFailuresPerMinute = 20
    /// The pause before a failed authentication's answer (Kafka's
    /// connection.failed.authentication.delay.ms).
    public static let saslFailureDelay: Duration = .milliseconds(100)
    /// Failed logins per user name, and per client address, per minute at
    /// the gateway; beyond, M_LIMIT_EXCEEDED until the minute is over.
    public static let chatLoginsPerMinutePerUser = 10
    public static let chatLoginsPerMinutePerAddress = 30

    // MARK: The gateway

    /// Events cached per room (and up to 32 more before trimming).
    public static let roomTimelineCacheCountMax = 200
    /// Client transaction ids remembered for idempotent sends.
    public static let transactionsRememberedMax = 200_000
    /// Parked `/sync`s (and waits for the gateway's own writes) at once;
    /// beyond, a wait ends at once as if its deadline had passed.
    public static let parkedSyncsMax = 1 << 20
    /// Objects and arrays inside one another in JSON the gateway parses
    /// (Foundation's JSONDecoder stops at the same depth).
    public static let jsonNestingDepthMax = 512
}
