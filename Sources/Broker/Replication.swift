import Cluster
import Core
import Foundation
import KafkaNIO
import LogStore
import NIOCore
import Synchronization

/// The partitions this node leads with followers, each with its
/// `ReplicaTracker`: follower fetches move the high watermark, and an
/// acks=all Produce waits here until the high watermark passes its batch.
/// Partitions without a tracker keep the single-node rule (the high
/// watermark follows durability).
public final class ReplicationState: Sendable {
    struct State {
        var trackers: [PartitionID: ReplicaTracker] = [:]
        var epochs: [PartitionID: Int32] = [:]
    }

    /// Kafka's min.insync.replicas: fewer in-sync replicas refuse acks=all.
    public let minInsyncReplicas: Int
    private let state = Mutex(State())
    private let clockStart = ContinuousClock.now
    /// Produce timeouts are seconds long; 50 ms is precise enough.
    let timeouts = ParkedTimeouts(tick: .milliseconds(50))
    /// acks=all Produce requests waiting for the high watermark to pass
    /// their batch: true once it has, false at the deadline or when this
    /// node stops leading.
    let acksWaiters: ParkedWaiters<PartitionID, Bool>

    public init(minInsyncReplicas: Int = 1) {
        self.minInsyncReplicas = minInsyncReplicas
        acksWaiters = ParkedWaiters(deadlines: timeouts, expired: false, waitersMax: Limits.parkedAcksMax)
    }

    /// Milliseconds on the trackers' clock.
    public var now: Int64 {
        (ContinuousClock.now - clockStart).milliseconds
    }

    /// Takes up leadership of a partition with these replicas and ISR, at
    /// `epoch` (stamped on every batch it appends).
    public func lead(_ id: PartitionID, replicas: [Int32], isr: Set<Int32>, leaderID: Int32, log: PartitionLog, epoch: Int32 = 0, lagMaxMilliseconds: Int64 = 30_000) {
        let tracker = ReplicaTracker(leader: leaderID, replicas: replicas, isr: isr, leaderLogEnd: log.logEndOffset,
                                     highWatermark: log.highWatermark, now: now, lagMaxMilliseconds: lagMaxMilliseconds)
        state.withLock {
            $0.trackers[id] = tracker
            $0.epochs[id] = epoch
        }
    }

    /// Gives up leadership (another broker leads now): waiting acks=all
    /// produces fail rather than wait for a high watermark that will not move here.
    public func stopLeading(_ id: PartitionID) {
        state.withLock { state in
            state.trackers[id] = nil
            state.epochs[id] = nil
        }
        acksWaiters.wake(id, with: false)
    }

    /// The epoch this node leads the partition at, or nil when it does not lead it.
    public func leaderEpoch(_ id: PartitionID) -> Int32? {
        state.withLock { $0.epochs[id] }
    }

    /// Every partition this node leads.
    public var ledPartitions: [PartitionID] {
        state.withLock { Array($0.trackers.keys) }
    }

    public func tracker(_ id: PartitionID) -> ReplicaTracker? {
        state.withLock { $0.trackers[id] }
    }

    func isReplicated(_ id: PartitionID) -> Bool {
        state.withLock { $0.trackers[id] != nil }
    }

    func acceptsAcksAll(_ id: PartitionID) -> Bool {
        state.withLock { $0.trackers[id]?.acceptsAcksAll(minInsyncReplicas: minInsyncReplicas) ?? true }
    }

    /// The leader's append became durable; returns the new high watermark if it moved.
    func leaderAppended(_ id: PartitionID, logEnd: Int64) -> Int64? {
        update(id) { $0.leaderAppended(logEndOffset: logEnd) }
    }

    /// A follower fetched; returns the new high watermark if it moved.
    func followerFetched(_ id: PartitionID, replica: Int32, offset: Int64) -> Int64? {
        let now = self.now
        return update(id) { $0.followerFetched(replica, offset: offset, now: now) }
    }

    /// The ISR as etcd now holds it.
    public func isrChanged(_ id: PartitionID, to isr: Set<Int32>) -> Int64? {
        update(id) { $0.isrChanged(to: isr) }
    }

    private func update(_ id: PartitionID, _ change: (inout ReplicaTracker) -> Bool) -> Int64? {
        let moved = state.withLock { state -> Int64? in
            guard var tracker = state.trackers[id] else { return nil }
            let moved = change(&tracker)
            state.trackers[id] = tracker
            return moved ? tracker.highWatermark : nil
        }
        // After the lock: a waiter that read the old high watermark had
        // parked before this wake could take the table's lock.
        if let moved { acksWaiters.wake(id, reaching: moved, with: true) }
        return moved
    }

    /// Waits until the high watermark reaches `offset`; false after `timeout`.
    func waitForHighWatermark(_ id: PartitionID, offset: Int64, timeout: Duration) async -> Bool {
        await acksWaiters.wait(id, position: offset, timeout: timeout) {
            // No tracker (no longer led, or never): nothing to wait for here.
            state.withLock { state in
                guard let tracker = state.trackers[id], tracker.highWatermark < offset else { return true }
                return nil
            }
        }
    }
}
