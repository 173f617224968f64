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
    func fannedOut(partition: Int32, worker: String, upTo: Int64, gap: Bool) {
        guard partition < timelinePartitions else { return }
        if registration.record(worker: worker, partition: partition) || gap {
            cache.restart(partition: partition, at: upTo)
            shared.removeAll()
        }
        cache.advance(partition: partition, to: upTo)
    }
}
