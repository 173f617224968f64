import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import Synchronization

// Parked syncs and waits for the gateway's own writes, with their deadlines.
extension ChatState {
    /// Wakes the waiting syncs of `users` (after the position moved past
    /// what woke them, so their next look finds it).
    func wake(users: Set<String>) {
        let woken = inner.withLock { inner in users.flatMap { Self.takeWaiters(&inner, user: $0) } }
        for waiter in woken { resume(waiter) }
    }

    /// Records that a tail applied everything before `next`; wakes whoever waits for it.
    func applied(topic: String, partition: Int32, next: Int64) {
        let ready = inner.withLock { inner -> [(continuation: CheckedContinuation<Void, Never>, timer: UInt64?)] in
            inner.applied[topic, default: [:]][partition] = next
            var ready: [(continuation: CheckedContinuation<Void, Never>, timer: UInt64?)] = []
            for (key, waiter) in inner.appliedWaiters where waiter.topic == topic && waiter.partition == partition && waiter.offset < next {
                ready.append((waiter.continuation, waiter.timer))
                inner.appliedWaiters.removeValue(forKey: key)
            }
            return ready
        }
        for waiter in ready { resume(waiter.continuation, timer: waiter.timer) }
    }

    /// Waits until this gateway's tail has read past `offset` (its own write,
    /// typically), so the next request sees it; gives up after `timeout`.
    func waitApplied(topic: String, partition: Int32, offset: Int64, timeout: Duration = .seconds(10)) async {
        let key = nextWaitKey()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = inner.withLock { inner -> Bool in
                if (inner.applied[topic]?[partition] ?? 0) > offset { return true }
                inner.appliedWaiters[key] = (topic, partition, offset, continuation, nil)
                return false
            }
            if done {
                continuation.resume()
                return
            }
            timeouts.add(timeout: TimeAmount(timeout)) { [self] in
                inner.withLock { $0.appliedWaiters.removeValue(forKey: key) }?.continuation.resume()
            } attach: { timer in
                inner.withLock { inner in
                    guard inner.appliedWaiters[key] != nil else { return false }
                    inner.appliedWaiters[key]?.timer = timer
                    return true
                }
            }
        }
    }

    func appliedOffset(topic: String, partition: Int32) -> Int64 {
        inner.withLock { $0.applied[topic]?[partition] ?? 0 }
    }

    /// Parks a `/sync` of `userID` until something for it arrives or
    /// `timeout` passes; at once if something arrived since `generation`.
    func waitForUser(_ userID: String, after generation: UInt64, timeout: Duration) async {
        let key = nextWaitKey()
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                if !park(userID, key: key, after: generation, timeout: timeout, resume: { continuation.resume() }) {
                    continuation.resume()
                }
            }
        } onCancel: {
            wake(userID, key)
        }
    }

    /// Parks a `/sync` of `userID` as `waitForUser` does, calling `resume` once when
    /// woken or at `timeout`; nil (and no call) if something arrived since
    /// `generation`. The key is for `unpark`.
    func park(_ userID: String, after generation: UInt64, timeout: Duration, resume: @escaping @Sendable () -> Void) -> UInt64? {
        let key = nextWaitKey()
        return park(userID, key: key, after: generation, timeout: timeout, resume: resume) ? key : nil
    }

    /// Drops a parked `/sync` whose connection closed, without calling it.
    func unpark(_ userID: String, key: UInt64) {
        guard let waiter = takeWaiter(userID, key) else { return }
        if let timer = waiter.timer { timeouts.remove(timer) }
    }

    func takeWaiter(_ userID: String, _ key: UInt64) -> Waiter? {
        inner.withLock { $0.userWaiters[userID]?.removeValue(forKey: key) }
    }

    func park(_ userID: String, key: UInt64, after generation: UInt64, timeout: Duration, resume: @escaping @Sendable () -> Void) -> Bool {
        let parked = inner.withLock { inner -> Bool in
            if (inner.userGenerations[userID] ?? 0) != generation { return false }
            inner.userWaiters[userID, default: [:]][key] = Waiter(resume: resume)
            return true
        }
        guard parked else { return false }
        timeouts.add(timeout: TimeAmount(timeout)) { [self] in wake(userID, key) } attach: { timer in
            inner.withLock { inner in
                guard inner.userWaiters[userID]?[key] != nil else { return false }
                inner.userWaiters[userID]?[key]?.timer = timer
                return true
            }
        }
        return true
    }

    func wake(_ userID: String, _ key: UInt64) {
        guard let waiter = takeWaiter(userID, key) else { return }
        resume(waiter)
    }

    /// Ends a parked `/sync`, and its timeout with it.
    func resume(_ waiter: Waiter) {
        if let timer = waiter.timer { timeouts.remove(timer) }
        waiter.resume()
    }

    /// Ends a wait woken before its deadline, and the deadline with it: a
    /// send's wait for its own write is 10 s long, and left in the table it
    /// would be swept thousands of times over.
    func resume(_ continuation: CheckedContinuation<Void, Never>, timer: UInt64?) {
        if let timer { timeouts.remove(timer) }
        continuation.resume()
    }

    func nextWaitKey() -> UInt64 {
        inner.withLock { inner in
            inner.nextWaitKey &+= 1
            return inner.nextWaitKey
        }
    }

    static func takeWaiters(_ inner: inout Inner, user: String) -> [Waiter] {
        inner.userGenerations[user, default: 0] &+= 1
        guard let waiting = inner.userWaiters.removeValue(forKey: user) else { return [] }
        return Array(waiting.values)
    }
}
