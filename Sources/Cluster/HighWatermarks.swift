import Core
import LogStore
import Synchronization

/// The owner of every partition's high watermark on this node: the only
/// code that moves one (Docs/architecture.md, "Who owns what"). The Produce
/// path, the direct append, follower fetches, ISR changes and the replica
/// fetcher send it events; it runs each partition's `PartitionCommit` under
/// one lock and carries out the actions: it tells the acks=all waits, then
/// moves the log's high watermark (in memory: the next state record the
/// log writes carries it, and a cluster node checkpoints it every second),
/// then tells the readers (the fetch notifier, which wakes fetches and the
/// fan-out).
///
/// Actions run after the lock: two threads may move the log's mark out of
/// order, which is harmless because the log keeps only a higher value.
public final class HighWatermarks: Sendable {
    /// With the topic's permanent id: a topic deleted and made again under
    /// its name starts from a fresh state, not the old topic's.
    private let commits = Mutex<[PartitionID: (topicID: UInt32, commit: PartitionCommit)]>([:])
    /// Told before the log holds the new value: they do not read the log.
    private let commitObservers = Mutex<[@Sendable (PartitionID, Int64) -> Void]>([])
    /// Told after: they read the log up to its high watermark.
    private let readerObservers = Mutex<[@Sendable (PartitionID, Int64) -> Void]>([])
    public let clock: any MonotonicClock

    public init(clock: any MonotonicClock = SystemClock()) {
        self.clock = clock
    }

    /// Adds who hears of every high watermark that moved. With
    /// `readsLog` false (the acks=all waits of `ReplicationState`, which
    /// compare with this owner's value) it is told before the log holds
    /// the value; with `readsLog` true (the broker's notifier, whose
    /// fetches read the log) after.
    public func observe(readsLog: Bool, _ committed: @escaping @Sendable (PartitionID, Int64) -> Void) {
        if readsLog {
            readerObservers.withLock { $0.append(committed) }
        } else {
            commitObservers.withLock { $0.append(committed) }
        }
    }

    /// Feeds `event` for `log`'s partition and carries out what it decides.
    /// Returns the new high watermark when it moved.
    @discardableResult
    public func handle(_ event: PartitionCommit.Event, for log: PartitionLog) throws(LogStoreError) -> Int64? {
        let id = PartitionID(topic: log.topicName, index: log.index)
        let now = clock.now
        // In place, and without touching the log under this lock: reading the
        // log's high watermark takes the partition's own mutex, which an
        // append holds while it writes, and every partition's events pass here.
        // Through the dictionary's index, so the commit is changed where it
        // lies: a copy of it (`commits[id]?.…` reads the whole entry) retained
        // its tracker's tables and made the change copy them, on every
        // follower fetch of every partition.
        func decide(_ commits: inout [PartitionID: (topicID: UInt32, commit: PartitionCommit)]) -> [PartitionCommit.Action]? {
            guard let position = commits.index(forKey: id), commits.values[position].topicID == log.topicID else { return nil }
            return commits.values[position].commit.handle(event, now: now)
        }
        var decided = commits.withLock { decide(&$0) }
        if decided == nil {
            // The partition's first event (or its topic was made again).
            let fresh = PartitionCommit(highWatermark: log.highWatermark, logEndOffset: log.highWatermark)
            decided = commits.withLock { commits in
                if commits[id]?.topicID != log.topicID { commits[id] = (log.topicID, fresh) }
                return decide(&commits)
            }
        }
        let actions = decided!
        var moved: Int64? = nil
        for action in actions {
            switch action {
            case .advanceHighWatermark(let target): moved = target
            }
        }
        guard let moved else { return nil }
        for observer in commitObservers.withLock({ $0 }) { observer(id, moved) }
        // Not written here: the next append's state record carries the
        // mark. A partition alone commits what its log holds (at start the
        // node takes its mark from the log end, Broker.init); a replicated
        // one's is also checkpointed every second and at close
        // (`PartitionLog.checkpointHighWatermark`, ClusterNode).
        try log.advanceHighWatermark(to: moved, persist: false)
        for observer in readerObservers.withLock({ $0 }) { observer(id, moved) }
        return moved
    }

    /// The partition's commit state (nil before its first event).
    public func commit(_ id: PartitionID) -> PartitionCommit? {
        commits.withLock { $0[id]?.commit }
    }

    /// The leader's view of its followers, when this node leads the partition.
    public func tracker(_ id: PartitionID) -> ReplicaTracker? {
        commits.withLock { $0[id]?.commit.tracker }
    }

    /// The ISR to propose now for a partition led here, or nil.
    public func proposedISR(_ id: PartitionID) -> Set<Int32>? {
        let now = clock.now
        return commits.withLock { $0[id]?.commit.proposedISR(now: now) }
    }

    /// The ISR to write now, with the followers it adds counting for the
    /// high watermark from this moment (under this owner's lock, so no
    /// append is committed in between); the caller reports the write's
    /// outcome with `.isrChanged` or `.isrExpanding`.
    public func proposeISR(_ id: PartitionID) -> Set<Int32>? {
        let now = clock.now
        return commits.withLock { commits in
            guard let position = commits.index(forKey: id) else { return nil }
            return commits.values[position].commit.proposeISR(now: now)
        }
    }

    /// This node stopped leading the partition: its commits now come from
    /// the leader (no action follows, so no log is needed).
    public func stopLeading(_ id: PartitionID) {
        let now = clock.now
        commits.withLock { commits in
            guard var known = commits[id] else { return }
            let actions = known.commit.handle(.becameFollower(logEndOffset: known.commit.logEndOffset), now: now)
            precondition(actions.isEmpty, "becoming a follower moves no high watermark")
            commits[id] = known
        }
    }

    /// Forgets a partition (its topic was deleted).
    public func forget(_ id: PartitionID) {
        _ = commits.withLock { $0.removeValue(forKey: id) }
    }
}
