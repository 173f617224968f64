import Cluster
import KafkaNIO
import NIOCore
import Synchronization

/// Wakes long-polling fetches (and fan-out workers) when a partition they
/// read gets new data. Each partition has two generation counters: one
/// moves when its high watermark moves (what consumers and the fan-out
/// may read), the other when a leader appends to it (what its followers
/// copy). A waiter reads the sum of its partitions' counters of one kind,
/// and waits until that sum moves or its deadline passes.
///
/// Per partition, because one counter for the whole broker woke every
/// waiting fetch on every append anywhere: in a three-broker cluster at
/// 17,000 messages a second each parked consumer and follower fetch re-read
/// all its partitions thousands of times a second for nothing. Per kind,
/// because a follower's fetch has nothing new when the high watermark
/// moves (its own next fetch is what moved it), and a consumer's nothing
/// when an append is not yet committed: with one counter each acks=all
/// Produce woke every parked follower fetch twice, and at librdkafka's
/// linger 0 re-reading them was a third of a leader's CPU.
final class DataNotifier: Sendable {
    /// What a waiter waits for.
    enum Reading: Sendable {
        /// Records below the high watermark: consumers, the fan-out.
        case committed
        /// Records below the log end: a leader's followers.
        case appended
    }

    private struct Watched: Hashable {
        var partition: PartitionID
        var reading: Reading
    }

    private struct Waiter {
        var continuation: CheckedContinuation<Void, Never>
        var partitions: [Watched]
        var timer: UInt64? = nil
    }

    private struct State {
        var generations: [Watched: UInt64] = [:]
        var waiters: [UInt64: Waiter] = [:]
        var waitersByPartition: [Watched: Set<UInt64>] = [:]
        var nextWaiterID: UInt64 = 0

        func generation(of partitions: [Watched]) -> UInt64 {
            partitions.reduce(0) { $0 &+ (generations[$1] ?? 0) }
        }

        /// Removes a waiter from every partition it waits on.
        mutating func take(_ id: UInt64) -> Waiter? {
            guard let waiter = waiters.removeValue(forKey: id) else { return nil }
            for partition in waiter.partitions {
                waitersByPartition[partition]?.remove(id)
                if waitersByPartition[partition]?.isEmpty == true { waitersByPartition[partition] = nil }
            }
            return waiter
        }
    }

    private let state = Mutex(State())
    /// Fetch waits are 500 ms by default; 5 ms is within Kafka's own precision.
    let timeouts = ParkedTimeouts(tick: .milliseconds(5))

    /// The sum of the partitions' generations: it moves when any of them does.
    func generation(of partitions: [PartitionID], _ reading: Reading = .committed) -> UInt64 {
        let watched = partitions.map { Watched(partition: $0, reading: reading) }
        return state.withLock { $0.generation(of: watched) }
    }

    /// A partition has new data: its waiters re-check.
    func notify(_ partition: PartitionID, _ reading: Reading = .committed) {
        let watched = Watched(partition: partition, reading: reading)
        let ready = state.withLock { state -> [Waiter] in
            state.generations[watched, default: 0] &+= 1
            guard let ids = state.waitersByPartition[watched] else { return [] }
            return ids.compactMap { state.take($0) }
        }
        for waiter in ready {
            if let timer = waiter.timer { timeouts.remove(timer) }
            waiter.continuation.resume()
        }
    }

    /// Returns when the partitions' generation moves past `seen`, the
    /// timeout passes, or the task is cancelled.
    ///
    /// One continuation per park, its timeout in `ParkedTimeouts`: a broker
    /// parks thousands of fetches a second, and a task group with a sleeping
    /// child per park cost two tasks and a timer each.
    func wait(on partitions: [PartitionID], _ reading: Reading = .committed, afterGeneration seen: UInt64, timeout: Duration) async {
        guard timeout > .zero else { return }
        let partitions = partitions.map { Watched(partition: $0, reading: reading) }
        let id = state.withLock { state -> UInt64 in
            state.nextWaiterID &+= 1
            return state.nextWaiterID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    // Re-checked under the lock: a commit between the caller's
                    // read and this registration must not be missed.
                    if state.generation(of: partitions) != seen || Task.isCancelled { return true }
                    state.waiters[id] = Waiter(continuation: continuation, partitions: partitions)
                    for partition in partitions { state.waitersByPartition[partition, default: []].insert(id) }
                    return false
                }
                if resumeNow {
                    continuation.resume()
                    return
                }
                timeouts.add(timeout: TimeAmount(timeout)) { [self] in
                    state.withLock { $0.take(id) }?.continuation.resume()
                } attach: { timer in
                    // A notification may have taken the waiter meanwhile.
                    state.withLock { state in
                        guard state.waiters[id] != nil else { return false }
                        state.waiters[id]?.timer = timer
                        return true
                    }
                }
            }
        } onCancel: {
            guard let waiter = state.withLock({ $0.take(id) }) else { return }
            if let timer = waiter.timer { timeouts.remove(timer) }
            waiter.continuation.resume()
        }
    }
}
