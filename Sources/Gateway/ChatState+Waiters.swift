import Core
import Foundation
import Synchronization

/// Where a wait for the gateway's own write is parked: a tail's topic and partition.
struct AppliedKey: Hashable, Sendable {
    var topic: String
    var partition: Int32
}

// Parked syncs and waits for the gateway's own writes, each in a
// `ParkedWaiters` table with its deadlines in `timeouts`.
extension ChatState {
    /// Wakes the waiting syncs of `users` (after the position moved past
    /// what woke them, so their next look finds it).
    func wake(users: Set<String>) {
        inner.withLock { inner in Self.bumpGenerations(&inner, users: users) }
        for user in users { syncWaiters.wake(user, with: ()) }
    }

    /// Records that a tail applied everything before `next`; wakes whoever waits for it.
    func applied(topic: String, partition: Int32, next: Int64) {
        inner.withLock { $0.applied[topic, default: [:]][partition] = next }
        appliedWaiters.wake(AppliedKey(topic: topic, partition: partition), reaching: next, with: ())
    }

    /// Waits until this gateway's tail has read past `offset` (its own write,
    /// typically), so the next request sees it; gives up after `timeout`.
    func waitApplied(topic: String, partition: Int32, offset: Int64, timeout: Duration = .seconds(10)) async {
        // Position offset + 1: woken once the tail's next offset passes the write.
        await appliedWaiters.wait(AppliedKey(topic: topic, partition: partition), position: offset + 1, timeout: timeout) {
            appliedOffset(topic: topic, partition: partition) > offset ? () : nil
        }
    }

    func appliedOffset(topic: String, partition: Int32) -> Int64 {
        inner.withLock { $0.applied[topic]?[partition] ?? 0 }
    }

    /// Parks a `/sync` of `userID` until something for it arrives or
    /// `timeout` passes; at once if something arrived since `generation`.
    func waitForUser(_ userID: String, after generation: UInt64, timeout: Duration) async {
        await syncWaiters.wait(userID, timeout: timeout) {
            self.generation(of: userID) != generation ? () : nil
        }
    }

    /// Parks a `/sync` of `userID` as `waitForUser` does, calling `resume` once when
    /// woken or at `timeout`; nil (and no call) if something arrived since
    /// `generation`. The key is for `unpark`.
    func park(_ userID: String, after generation: UInt64, timeout: Duration, resume: @escaping @Sendable () -> Void) -> UInt64? {
        // Asked under the table's lock: a wake bumps the generation first and
        // takes that lock after, so it either shows here or finds the wait.
        syncWaiters.parkUnless(userID, timeout: timeout, moot: { self.generation(of: userID) != generation }) { _ in resume() }
    }

    /// Drops a parked `/sync` whose connection closed, without calling it.
    func unpark(_ userID: String, key: UInt64) {
        syncWaiters.discard(userID, key)
    }

    /// Moves each user's generation: a sync that read the old one parks no more.
    static func bumpGenerations(_ inner: inout Inner, users: some Sequence<String>) {
        for user in users { inner.userGenerations[user, default: 0] &+= 1 }
    }
}
