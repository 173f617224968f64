import Cluster
import KafkaWire
import LogStore

/// What a service above the broker (the chat fan-out) may read of this
/// node: the partitions it leads, their committed records (never past the
/// high watermark), and a call when more is committed. The fan-out needs
/// nothing else of the broker, so it lives in a target of its own above it.
public protocol CommittedLog: Sendable {
    /// This broker's node id.
    var nodeID: Int32 { get }
    /// A topic's partition count; nil when the topic does not exist here.
    func partitionCount(topic: String) -> Int32?
    /// A partition's committed part; nil when it does not exist here.
    func committedPartition(topic: String, index: Int32) -> CommittedPartition?
    /// Whether this node takes produces and consumer fetches for the partition.
    func leads(topic: String, index: Int32) -> Bool
    /// Calls `observer` whenever a partition's high watermark moves, on the
    /// thread that moved it (the group-commit thread after its sync, a
    /// Produce's or a follower fetch's), after the move; it must not block.
    func observeCommits(_ observer: @escaping @Sendable (_ topic: String, _ index: Int32) -> Void)
}

/// One partition as its committed records: reads stop at the high watermark.
public struct CommittedPartition: Sendable {
    let log: PartitionLog

    public var highWatermark: Int64 { log.highWatermark }
    /// Below a reader's position when the log was truncated under it.
    public var logEndOffset: Int64 { log.logEndOffset }

    /// Batches from `offset`, up to `bytesMax` and below `upTo` and the high watermark.
    public func read(from offset: Int64, bytesMax: Int, upTo bound: Int64) throws(LogStoreError) -> LogRead {
        try log.read(from: offset, bytesMax: bytesMax, maxOffset: min(bound, log.highWatermark))
    }

    /// A page of one conversation from the conversation index, at or below
    /// `maxOffset` (the high watermark when nil or beyond it).
    public func history(conversation: [UInt8], from position: HistoryPosition, limit: Int, maxOffset: Int64?) throws(LogStoreError) -> [ConversationMessage] {
        let highWatermark = log.highWatermark
        let bound = maxOffset.map { min($0, highWatermark) } ?? highWatermark
        return try log.history(conversation: conversation, from: position, limit: limit, maxOffset: bound)
    }
}

extension Broker: CommittedLog {
    public var nodeID: Int32 { configuration.nodeID }

    public func partitionCount(topic: String) -> Int32? {
        store.topic(named: topic)?.configuration.partitionCount
    }

    public func committedPartition(topic: String, index: Int32) -> CommittedPartition? {
        (try? store.partition(topic: topic, index: index)).map(CommittedPartition.init)
    }

    public func observeCommits(_ observer: @escaping @Sendable (_ topic: String, _ index: Int32) -> Void) {
        highWatermarks.observe(readsLog: true) { id, _ in observer(id.topic, id.index) }
    }
}
