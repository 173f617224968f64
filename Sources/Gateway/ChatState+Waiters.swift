import Core
import Foundation

// Parked syncs and waits for the gateway's own writes, each in a
// `ParkedWaiters` table with its deadlines in `timeouts`.
extension ChatState {
    /// Wakes the waiting syncs of `users` (after the position moved past
    /// what woke them, so their next look finds it).
    func wake(users: Set<String>) {
        generations.bump(users)
        syncWaiters.wake(each: users, with: ())
    }

    /// Records that a tail applied everything before `next`; wakes whoever waits for it.
    func applied(topic: String, partition: Int32, next: Int64) {
        let key = AppliedKey(topic: topic, partition: partition)
        applied.record(key, next: next)
        appliedWaiters.wake(key, reaching: next, with: ())
    }

    /// Waits until this gateway's tail has read past `offset` (its own write,
    /// typically), so the next request sees it; gives up after `timeout`.
    func waitApplied(topic: String, partition: Int32, offset: Int64, timeout: Duration = .seconds(10)) async {
        let key = AppliedKey(topic: topic, partition: partition)
        // Position offset + 1: woken once the tail's next offset passes the write.
        await appliedWaiters.wait(key, position: offset + 1, timeout: timeout) {
            applied.next(key) > offset ? () : nil
        }
    }

    /// Parks a `/sync` of `userID` until something for it arrives or
    /// `timeout` passes; at once if something arrived since `generation`.
    func waitForUser(_ userID: String, after generation: UInt64, timeout: Duration) async {
        await syncWaiters.wait(userID, timeout: timeout) {
            self.generations.of(userID) != generation ? () : nil
        }
    }

    /// Parks a `/sync` of `userID` as `waitForUser` does, calling `resume` once when
    /// woken or at `timeout`; nil (and no call) if something arrived since
    /// `generation`. The key is for `unpark`.
    func park(_ userID: String, after generation: UInt64, timeout: Duration, resume: @escaping @Sendable () -> Void) -> UInt64? {
        // Asked under the table's lock: a wake bumps the generation first and
        // takes that lock after, so it either shows here or finds the wait.
        syncWaiters.parkUnless(userID, timeout: timeout, moot: { self.generations.of(userID) != generation }) { _ in resume() }
    }

    /// Drops a parked `/sync` whose connection closed, without calling it.
    func unpark(_ userID: String, key: UInt64) {
        syncWaiters.discard(userID, key)
    }
}
