import Cluster
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
    struct Waiter {
        let offset: Int64
        let continuation: CheckedContinuation<Bool, Never>
        var timer: UInt64? = nil
    }

    struct State {
        var trackers: [PartitionID: ReplicaTracker] = [:]
        var epochs: [PartitionID: Int32] = [:]
        var waiters: [PartitionID: [UInt64: Waiter]] = [:]
        var nextWaiterKey: UInt64 = 0
    }

    /// Kafka's min.insync.replicas: fewer in-sync replicas refuse acks=all.
    public let minInsyncReplicas: Int
    private let state = Mutex(State())
    private let clockStart = ContinuousClock.now
    /// Produce timeouts are seconds long; 50 ms is precise enough.
    let timeouts = ParkedTimeouts(tick: .milliseconds(50))

    public init(minInsyncReplicas: Int = 1) {
        self.minInsyncReplicas = minInsyncReplicas
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
        let waiting = state.withLock { state -> [Waiter] in
            state.trackers[id] = nil
            state.epochs[id] = nil
            return Array((state.waiters.removeValue(forKey: id) ?? [:]).values)
        }
        for waiter in waiting {
            if let timer = waiter.timer { timeouts.remove(timer) }
            waiter.continuation.resume(returning: false)
        }
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
        let (moved, ready) = state.withLock { state -> (Int64?, [Waiter]) in
            guard var tracker = state.trackers[id] else { return (nil, []) }
            let moved = change(&tracker)
            state.trackers[id] = tracker
            guard moved else { return (nil, []) }
            var ready: [Waiter] = []
            if var waiting = state.waiters[id] {
                for (key, waiter) in waiting where waiter.offset <= tracker.highWatermark {
                    ready.append(waiter)
                    waiting.removeValue(forKey: key)
                }
                state.waiters[id] = waiting
            }
            return (tracker.highWatermark, ready)
        }
        for waiter in ready {
            if let timer = waiter.timer { timeouts.remove(timer) }
            waiter.continuation.resume(returning: true)
        }
        return moved
    }

    /// Waits until the high watermark reaches `offset`; false after `timeout`.
    func waitForHighWatermark(_ id: PartitionID, offset: Int64, timeout: Duration) async -> Bool {
        // A counter, not a UUID (Foundation reads /dev/urandom for each), and
        // the timeout in `ParkedTimeouts` rather than a sleeping task per
        // wait: an acks=all Produce parks here for every batch.
        let key = state.withLock { state -> UInt64 in
            state.nextWaiterKey &+= 1
            return state.nextWaiterKey
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let done = state.withLock { state -> Bool in
                    guard let tracker = state.trackers[id], tracker.highWatermark < offset else { return true }
                    state.waiters[id, default: [:]][key] = Waiter(offset: offset, continuation: continuation)
                    return false
                }
                if done {
                    continuation.resume(returning: true)
                    return
                }
                timeouts.add(timeout: TimeAmount(timeout)) { [weak self] in
                    self?.expire(id, key)
                } attach: { timer in
                    // The high watermark may have passed the offset meanwhile.
                    state.withLock { state in
                        guard state.waiters[id]?[key] != nil else { return false }
                        state.waiters[id]?[key]?.timer = timer
                        return true
                    }
                }
            }
        } onCancel: {
            expire(id, key)
        }
    }

    private func expire(_ id: PartitionID, _ key: UInt64) {
        guard let waiter = state.withLock({ $0.waiters[id]?.removeValue(forKey: key) }) else { return }
        if let timer = waiter.timer { timeouts.remove(timer) }
        waiter.continuation.resume(returning: false)
    }
}
