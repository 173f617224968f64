import ChatWire
import Foundation

// The fan-out poll's effects on the cache and the registration.
extension ChatState {
    /// A poll to `address` carrying `users` was answered: its fan-out routes them here.
    ///
    /// `added` are the users this poll newly named; `fannedOutUpTo` the
    /// fan-out's positions in the answer. From those positions on, every
    /// message of the new users' rooms reaches this gateway, so a room not
    /// yet covered by the cache is covered from there (before the users
    /// count as registered, so their next syncs read the cache, not the index).
    func confirmRegistered(_ added: Set<String>, at address: String, fannedOutUpTo: [Int32: Int64]) {
        for user in added {
            cache.cover(directory.roomIDs(of: user), from: fannedOutUpTo)
        }
        registrationWaiters.wake(each: registration.confirm(added, at: address), with: ())
    }

    /// Waits until every broker's fan-out routes `user` here, so nothing
    /// sent from now on passes this gateway by; gives up after `timeout`.
    func waitRegistered(_ user: String, timeout: Duration) async {
        await registrationWaiters.wait(user, timeout: timeout) { registration.isRegistered(user) ? () : nil }
    }

    /// Where a partition's fan-out stands after a poll. A new worker (the
    /// broker restarted, or leadership moved) or a reported gap means some
    /// deliveries never came: the cache of that partition restarts at
    /// `upTo`, and older positions are served from the index.
    ///
    /// A restart only ever drops what the cache holds (a room's events and
    /// its coverage go together), so it may interleave with deliveries
    /// handed over by the fan-out in this process: what it drops is read
    /// from the index instead. Returns whether the cache restarted.
    @discardableResult
    func fannedOut(partition: Int32, worker: String, upTo: Int64, gap: Bool) -> Bool {
        guard partition < timelinePartitions else { return false }
        let restart = registration.record(worker: worker, partition: partition) || gap
        if restart {
            cache.restart(partition: partition, at: upTo)
            shared.removeAll()
        }
        cache.advance(partition: partition, to: upTo)
        return restart
    }

    /// Deliveries the fan-out in this process handed over (ADR 0037), as a
    /// poll's answer would bring them: a new worker first restarts the
    /// partition's cache where its deliveries begin, then the deliveries,
    /// then the position. Returns the users to wake, and whether the cache
    /// restarted.
    func handedOver(_ handOver: FanOutHandOver) -> (woken: Set<String>, restarted: Bool) {
        guard handOver.partition < timelinePartitions else { return ([], false) }
        let restarted = registration.worker(partition: handOver.partition) != handOver.workerID
            && fannedOut(partition: handOver.partition, worker: handOver.workerID, upTo: handOver.from, gap: false)
        var woken: Set<String> = []
        for delivery in handOver.deliveries {
            woken.formUnion(applyDelivery(delivery))
        }
        cache.advance(partition: handOver.partition, to: handOver.upTo)
        return (woken, restarted)
    }
}
