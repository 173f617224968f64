import Core
import LogStore
import Synchronization

/// The owner of every partition's high watermark on this node: the only
/// code that moves one (Docs/architecture.md, "Who owns what"). The Produce
/// path, the direct append, follower fetches, ISR changes and the replica
/// fetcher send it events; it runs each partition's `PartitionCommit` under
/// one lock and carries out the actions: it tells the acks=all waits, then
/// persists the new high watermark in the log, then tells the readers (the
/// fetch notifier, which wakes fetches and the fan-out): the order the
/// broker had before this owner, so an acknowledgement waits for no
/// RocksDB write.
///
/// Actions run after the lock: two threads may persist out of order, which
/// is harmless because the log keeps only a higher value.
public final class HighWatermarks: Sendable {
    /// With the topic's permanent id: a topic deleted and made again under
    /// its name starts from a fresh state, not the old topic's.
    private let commits = Mutex<[PartitionID: (topicID: UInt32, commit: PartitionCommit)]>([:])
    /// Told before the new value is persisted: they do not read the log.
    private let commitObservers = Mutex<[@Sendable (PartitionID, Int64) -> Void]>([])
    /// Told after: they read the log up to its high watermark.
    private let readerObservers = Mutex<[@Sendable (PartitionID, Int64) -> Void]>([])
    public let clock: any MonotonicClock

    public init(clock: any MonotonicClock = SystemClock()) {
        self.clock = clock
    }

    /// Adds who hears of every high watermark that moved. With
    /// `readsLog` false (the acks=all waits of `ReplicationState`, which
    /// compare with this owner's value) it is told before the value is
    /// persisted, so an acknowledgement does not wait for a RocksDB write;
    /// with `readsLog` true (the broker's notifier, whose fetches read the
    /// log) after the log holds it.
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
        var decided = commits.withLock { commits -> (actions: [PartitionCommit.Action], role: PartitionCommit.Role)? in
            guard commits[id]?.topicID == log.topicID else { return nil }
            return (commits[id]!.commit.handle(event, now: now), commits[id]!.commit.role)
        }
        if decided == nil {
            // The partition's first event (or its topic was made again).
            let fresh = PartitionCommit(highWatermark: log.highWatermark, logEndOffset: log.highWatermark)
            decided = commits.withLock { commits in
                if commits[id]?.topicID != log.topicID { commits[id] = (log.topicID, fresh) }
                return (commits[id]!.commit.handle(event, now: now), commits[id]!.commit.role)
            }
        }
        let (actions, role) = decided!
        var moved: Int64? = nil
        for action in actions {
            switch action {
            case .advanceHighWatermark(let target): moved = target
            }
        }
        guard let moved else { return nil }
        for observer in commitObservers.withLock({ $0 }) { observer(id, moved) }
        // A partition alone commits what its log holds: at start the node
        // takes its high watermark from the log end (Broker.init), so the
        // mark is not written per append (the next append's state record
        // carries it). With replicas, the written mark is where a restarted
        // node starts from.
        try log.advanceHighWatermark(to: moved, persist: role != .alone)
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
