import Cluster
import Core
import Foundation
import KafkaNIO
import LogStore
import NIOCore
import Synchronization

/// The partitions this node leads in a cluster: the leader epoch of each,
/// and the acks=all Produce requests waiting for the high watermark to pass
/// their batch. The high watermark itself, with each partition's
/// `ReplicaTracker`, is `HighWatermarks`' (the one owner); this class
/// feeds it the leader's events and wakes produces when it moves.
public final class ReplicationState: Sendable {
    /// Kafka's min.insync.replicas: fewer in-sync replicas refuse acks=all.
    public let minInsyncReplicas: Int
    /// Every partition's high watermark on this node.
    public let highWatermarks: HighWatermarks
    private let epochs = Mutex<[PartitionID: Int32]>([:])
    /// Set once the Kafka listeners have stopped: no acks=all wait parks
    /// any more (`releaseAcksWaits`).
    private let acksReleased = Atomic<Bool>(false)
    /// Produce timeouts are seconds long; 50 ms is precise enough.
    let timeouts = ParkedTimeouts(tick: .milliseconds(50))
    /// acks=all Produce requests waiting for the high watermark to pass
    /// their batch: true once it has, false at the deadline or when this
    /// node stops leading.
    let acksWaiters: ParkedWaiters<PartitionID, Bool>

    public init(minInsyncReplicas: Int = 1, highWatermarks: HighWatermarks = HighWatermarks()) {
        self.minInsyncReplicas = minInsyncReplicas
        self.highWatermarks = highWatermarks
        acksWaiters = ParkedWaiters(deadlines: timeouts, expired: false, waitersMax: Limits.parkedAcksMax)
        // Produces it passed are answered.
        highWatermarks.observe(readsLog: false) { [acksWaiters] id, highWatermark in
            acksWaiters.wake(id, reaching: highWatermark, with: true)
        }
    }

    /// Milliseconds on the trackers' clock.
    public var now: Int64 { highWatermarks.clock.now.milliseconds }

    /// Takes up leadership of a partition with these replicas and ISR, at
    /// `epoch` (stamped on every batch it appends).
    public func lead(_ id: PartitionID, replicas: [Int32], isr: Set<Int32>, isrRevision: Int64 = 0, leaderID: Int32, log: PartitionLog, epoch: Int32 = 0, lagMaxMilliseconds: Int64 = 30_000) {
        // Becoming leader moves the high watermark only when the leader is
        // alone in the ISR (to its log end); the log keeps it in memory.
        _ = try? highWatermarks.handle(.becameLeader(leader: leaderID, replicas: replicas, isr: isr, logEndOffset: log.logEndOffset,
                                                     replicaLagMax: .milliseconds(lagMaxMilliseconds), isrRevision: isrRevision), for: log)
        epochs.withLock { $0[id] = epoch }
    }

    /// Gives up leadership (another broker leads now): waiting acks=all
    /// produces fail rather than wait for a high watermark that will not move here.
    public func stopLeading(_ id: PartitionID) {
        epochs.withLock { $0[id] = nil }
        highWatermarks.stopLeading(id)
        acksWaiters.wake(id, with: false)
    }

    /// The epoch this node leads the partition at, or nil when it does not lead it.
    public func leaderEpoch(_ id: PartitionID) -> Int32? {
        epochs.withLock { $0[id] }
    }

    /// Every partition this node leads.
    public var ledPartitions: [PartitionID] {
        epochs.withLock { Array($0.keys) }
    }

    public func tracker(_ id: PartitionID) -> ReplicaTracker? {
        guard leaderEpoch(id) != nil else { return nil }
        return highWatermarks.tracker(id)
    }

    func isReplicated(_ id: PartitionID) -> Bool {
        tracker(id) != nil
    }

    /// `minInsyncReplicas`: the partition's topic's setting.
    func acceptsAcksAll(_ id: PartitionID, minInsyncReplicas: Int) -> Bool {
        tracker(id)?.acceptsAcksAll(minInsyncReplicas: minInsyncReplicas) ?? true
    }

    /// Calls `done` once the high watermark reaches `offset` (true), after
    /// `timeout`, or when this node does not (or no longer) lead the
    /// partition (false): at once, or on the thread that moved the mark.
    func whenHighWatermark(_ id: PartitionID, reaches offset: Int64, timeout: Duration, done: @escaping @Sendable (Bool) -> Void) {
        acksWaiters.park(id, position: offset, timeout: timeout, ready: { committed(id, offset) }, resume: done)
    }

    /// Ends every acks=all wait, now and from now on, as not committed:
    /// once the listeners have stopped, the answers have no connection to
    /// go to, and a wait for followers that may never copy the batch (a
    /// controlled shutdown that could not hand the leadership over, etcd
    /// unreachable) must not hold the node's stop for the request's whole
    /// timeout. The batches stay in the log; clients retry elsewhere, and
    /// idempotent producers' sequence numbers keep the retries single.
    public func releaseAcksWaits() {
        acksReleased.store(true, ordering: .sequentiallyConsistent)
        acksWaiters.wakeAll(with: false)
    }

    private func committed(_ id: PartitionID, _ offset: Int64) -> Bool? {
        if acksReleased.load(ordering: .sequentiallyConsistent) { return false }
        // Not led here any more: it will not be committed here.
        guard let commit = highWatermarks.commit(id), commit.tracker != nil, leaderEpoch(id) != nil else { return false }
        return commit.highWatermark >= offset ? true : nil
    }
}
