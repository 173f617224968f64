import Core

/// One partition's commit state: which records count as committed (the high
/// watermark) and why. The one decider of the high watermark, whatever the
/// partition's role:
///
/// - `alone` (a single node, or a partition without followers): what is
///   durable is committed.
/// - `leader`: committed once every in-sync replica has it (the
///   `ReplicaTracker`'s smallest log end in the ISR).
/// - `follower`: committed up to what the leader reports, within its own log.
///
/// Pure: events in, actions out; the caller's clock arrives as `now`.
/// `HighWatermarks` is the thin shell that feeds it and carries the actions
/// out, and the only code that moves a partition's high watermark.
public struct PartitionCommit: Sendable, Equatable {
    public enum Role: Sendable, Equatable {
        case alone
        case leader(ReplicaTracker)
        case follower
    }

    public enum Event: Sendable, Equatable {
        /// The partition's appends became durable up to this log end.
        case appendedDurably(logEndOffset: Int64)
        /// A follower fetched at `offset`: it holds everything before it.
        case followerFetched(replica: Int32, offset: Int64)
        /// The ISR of the partition record at etcd `revision`, as the
        /// coordination store holds it (older revisions are ignored).
        case isrChanged(Set<Int32>, revision: Int64)
        /// The followers being written into the ISR now (empty: none; the
        /// write failed). They count for the high watermark meanwhile.
        case isrExpanding(Set<Int32>)
        /// The leader's partition has other replicas (a reassignment).
        case replicasChanged([Int32])
        /// This node leads the partition with these replicas from now on;
        /// its log ends at `logEndOffset`.
        /// `isrRevision`: the etcd revision of the record that made it leader.
        case becameLeader(leader: Int32, replicas: [Int32], isr: Set<Int32>, logEndOffset: Int64, replicaLagMax: Duration, isrRevision: Int64 = 0)
        /// This node copies the partition from a leader from now on; its
        /// log ends at `logEndOffset`.
        case becameFollower(logEndOffset: Int64)
        /// The leader's high watermark, as a follower's fetch reported it,
        /// with the follower's own log end once its copies are durable.
        case leaderReported(highWatermark: Int64, durableLogEnd: Int64)
        /// The log was cut back to this log end (a follower reconciling).
        case truncated(logEndOffset: Int64)
    }

    public enum Action: Sendable, Equatable {
        /// Persist the high watermark and wake whoever waits for committed data.
        case advanceHighWatermark(to: Int64)
    }

    public private(set) var role: Role
    public private(set) var highWatermark: Int64
    /// The durable log end as the events told it.
    public private(set) var logEndOffset: Int64

    /// A partition as opened from its log: alone until told otherwise.
    public init(highWatermark: Int64, logEndOffset: Int64) {
        role = .alone
        self.highWatermark = highWatermark
        self.logEndOffset = logEndOffset
    }

    public var tracker: ReplicaTracker? {
        if case .leader(let tracker) = role { tracker } else { nil }
    }

    public mutating func handle(_ event: Event, now: Duration) -> [Action] {
        let nowMilliseconds = now.milliseconds
        switch event {
        case .appendedDurably(let end):
            logEndOffset = max(logEndOffset, end)
            switch role {
            case .alone: return advance(to: logEndOffset)
            case .leader:
                let tracker = updateTracker { _ = $0.leaderAppended(logEndOffset: end) }
                return advance(to: tracker.highWatermark)
            case .follower:
                // A follower's copies commit at the leader's word, not on their own.
                return []
            }
        case .followerFetched(let replica, let offset):
            guard case .leader = role else { return [] }
            let tracker = updateTracker { _ = $0.followerFetched(replica, offset: offset, now: nowMilliseconds) }
            return advance(to: tracker.highWatermark)
        case .isrChanged(let isr, let revision):
            guard case .leader = role else { return [] }
            let tracker = updateTracker { _ = $0.isrChanged(to: isr, revision: revision) }
            return advance(to: tracker.highWatermark)
        case .isrExpanding(let followers):
            guard case .leader = role else { return [] }
            let tracker = updateTracker { _ = $0.expanding(followers) }
            return advance(to: tracker.highWatermark)
        case .replicasChanged(let replicas):
            guard case .leader = role else { return [] }
            _ = updateTracker { $0.replicasChanged(to: replicas) }
            return []
        case .becameLeader(let leader, let replicas, let isr, let end, let lagMax, let isrRevision):
            logEndOffset = end
            role = .leader(ReplicaTracker(leader: leader, replicas: replicas, isr: isr, isrRevision: isrRevision, leaderLogEnd: logEndOffset,
                                          highWatermark: highWatermark, now: nowMilliseconds, lagMaxMilliseconds: lagMax.milliseconds))
            // Alone in its ISR, the leader commits what its log holds; with
            // followers in it, its log past the high watermark waits for
            // them like any new batch (a broker back from a crash may hold
            // batches nobody copied).
            let tracker = updateTracker { _ = $0.leaderAppended(logEndOffset: end) }
            return advance(to: tracker.highWatermark)
        case .becameFollower(let end):
            logEndOffset = end
            role = .follower
            return []
        case .leaderReported(let reported, let end):
            guard case .follower = role else { return [] }
            logEndOffset = max(logEndOffset, end)
            return advance(to: min(reported, logEndOffset))
        case .truncated(let end):
            logEndOffset = end
            highWatermark = min(highWatermark, end)
            return []
        }
    }

    /// The ISR the leader should write now, or nil to keep it (followers
    /// that lagged past the limit leave; caught-up ones join).
    public func proposedISR(now: Duration) -> Set<Int32>? {
        tracker?.proposedISR(now: now.milliseconds)
    }

    /// `ReplicaTracker.proposeISR`: the proposal, its joiners counting for
    /// the high watermark from now on.
    public mutating func proposeISR(now: Duration) -> Set<Int32>? {
        guard case .leader = role else { return nil }
        var proposal: Set<Int32>? = nil
        _ = updateTracker { proposal = $0.proposeISR(now: now.milliseconds) }
        return proposal
    }

    /// Changes the leader's tracker in place: the role's own reference is
    /// dropped first, so its tables are not copied on every event.
    private mutating func updateTracker(_ change: (inout ReplicaTracker) -> Void) -> ReplicaTracker {
        guard case .leader(var tracker) = role else { preconditionFailure("only a leader has a tracker") }
        role = .alone
        change(&tracker)
        role = .leader(tracker)
        return tracker
    }

    /// Never back, never past the durable log end.
    private mutating func advance(to candidate: Int64) -> [Action] {
        let target = min(candidate, logEndOffset)
        guard target > highWatermark else { return [] }
        highWatermark = target
        return [.advanceHighWatermark(to: target)]
    }
}
