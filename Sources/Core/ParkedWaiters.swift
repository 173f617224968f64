import Synchronization

/// Schedules the deadlines of parked waits: `ParkedTimeouts` on an event
/// loop in production, `ManualDeadlines` moved by a test's clock.
public protocol DeadlineScheduler: Sendable {
    /// Calls `expire` once `timeout` has passed, unless `remove` came first.
    /// Returns the handle for `remove`.
    func add(timeout: Duration, expire: @escaping @Sendable () -> Void) -> UInt64
    /// The wait ended before its deadline.
    func remove(_ handle: UInt64)
}

/// Waits parked by key, each ended exactly once: woken with a value, or
/// expired at its deadline with the table's `expired` value. The one
/// pattern behind every long poll here (a gateway's poll for deliveries, a
/// `/sync` waiting for its user, a write waiting to be read back), so each
/// of them no longer hand-writes its mutex, continuations and timers.
///
/// A waiter is a callback, so it serves a task (`wait`, a continuation) and
/// an event loop alike (`park` with a callback that schedules onto it).
/// Callbacks run outside the table's lock.
public final class ParkedWaiters<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Waiter {
        var resume: @Sendable (Value) -> Void
        var timer: UInt64?
        /// What the wait needs reached (an offset, say); see `wake(_:reaching:with:)`.
        var position: Int64
    }

    private enum ParkOutcome {
        case parked(UInt64)
        case now(Value)
    }

    private struct State {
        var waiters: [Key: [UInt64: Waiter]] = [:]
        var nextToken: UInt64 = 0
        var count = 0
    }

    private let state = Mutex(State())
    private let deadlines: any DeadlineScheduler
    private let expired: Value
    /// At most this many waits parked at once; more are answered `expired` at once.
    public let waitersMax: Int

    /// - Parameters:
    ///   - deadlines: where the waits' deadlines are kept.
    ///   - expired: what a wait whose deadline passed (or that was refused) gets.
    ///   - waitersMax: the most waits parked at once.
    public init(deadlines: any DeadlineScheduler, expired: Value, waitersMax: Int) {
        self.deadlines = deadlines
        self.expired = expired
        self.waitersMax = waitersMax
    }

    /// How many waits are parked.
    public var count: Int { state.withLock { $0.count } }

    /// Parks `resume` under `key` until `wake` or `timeout`, unless `ready`,
    /// asked under the table's lock, already has the value: then `resume`
    /// gets it at once. Returns the wait's token (for `cancel`), or nil when
    /// it ended at once.
    @discardableResult
    public func park(_ key: Key, position: Int64 = 0, timeout: Duration, ready: () -> Value? = { nil }, resume: @escaping @Sendable (Value) -> Void) -> UInt64? {
        let outcome = state.withLock { state -> ParkOutcome in
            if let value = ready() { return .now(value) }
            guard state.count < waitersMax else { return .now(expired) }
            state.nextToken &+= 1
            state.waiters[key, default: [:]][state.nextToken] = Waiter(resume: resume, timer: nil, position: position)
            state.count += 1
            return .parked(state.nextToken)
        }
        switch outcome {
        case .now(let value):
            resume(value)
            return nil
        case .parked(let token):
            let timer = deadlines.add(timeout: timeout) { [weak self] in self?.end(key, token, with: nil) }
            let stands = state.withLock { state -> Bool in
                guard state.waiters[key]?[token] != nil else { return false }
                state.waiters[key]?[token]?.timer = timer
                return true
            }
            // Woken before its deadline was attached: nothing left to expire.
            if !stands { deadlines.remove(timer) }
            return token
        }
    }

    /// Parks `resume` under `key` as `park` does, unless `moot`, asked under
    /// the table's lock, says there is nothing to wait for: then nothing is
    /// called and nil is returned (the caller looks again itself).
    public func parkUnless(_ key: Key, timeout: Duration, moot: () -> Bool, resume: @escaping @Sendable (Value) -> Void) -> UInt64? {
        let skipped = Mutex(false)
        let token = park(key, timeout: timeout, ready: {
            guard moot() else { return nil }
            skipped.withLock { $0 = true }
            return expired
        }, resume: { value in
            // Called at once, under no lock, only when `moot` held: dropped.
            if !skipped.withLock({ $0 }) { resume(value) }
        })
        return skipped.withLock { $0 } ? nil : token
    }

    /// `park` for a task: returns the value it was woken with, or `expired`.
    public func wait(_ key: Key, position: Int64 = 0, timeout: Duration, ready: () -> Value? = { nil }) async -> Value {
        let token = Mutex<UInt64?>(nil)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Value, Never>) in
                let parked = park(key, position: position, timeout: timeout, ready: ready) { continuation.resume(returning: $0) }
                token.withLock { $0 = parked }
                // Cancelled before the token was known: `onCancel` found none.
                if Task.isCancelled, let parked { cancel(key, parked) }
            }
        } onCancel: {
            if let parked = token.withLock({ $0 }) { cancel(key, parked) }
        }
    }

    /// Wakes every wait under `key` with `value`; returns how many.
    @discardableResult
    public func wake(_ key: Key, with value: Value) -> Int {
        let woken = state.withLock { state -> [Waiter] in
            guard let waiting = state.waiters.removeValue(forKey: key) else { return [] }
            state.count -= waiting.count
            return Array(waiting.values)
        }
        finish(woken, with: value)
        return woken.count
    }

    /// Wakes the waits under `key` whose position `reached` is at or past, with `value`.
    @discardableResult
    public func wake(_ key: Key, reaching reached: Int64, with value: Value) -> Int {
        let woken = state.withLock { state -> [Waiter] in
            guard var waiting = state.waiters[key] else { return [] }
            var woken: [Waiter] = []
            for (token, waiter) in waiting where waiter.position <= reached {
                woken.append(waiter)
                waiting.removeValue(forKey: token)
            }
            state.waiters[key] = waiting.isEmpty ? nil : waiting
            state.count -= woken.count
            return woken
        }
        finish(woken, with: value)
        return woken.count
    }

    /// Wakes every wait of every key with `value` (a shutdown, a lost role).
    public func wakeAll(with value: Value) {
        let woken = state.withLock { state -> [Waiter] in
            let all = state.waiters.values.flatMap(\.values)
            state.waiters.removeAll()
            state.count = 0
            return all
        }
        finish(woken, with: value)
    }

    /// Ends one wait early with `expired` (its caller went away).
    public func cancel(_ key: Key, _ token: UInt64) {
        end(key, token, with: nil)
    }

    /// Drops one wait without calling it (its connection closed).
    public func discard(_ key: Key, _ token: UInt64) {
        let waiter = state.withLock { state -> Waiter? in
            guard let waiter = state.waiters[key]?.removeValue(forKey: token) else { return nil }
            if state.waiters[key]?.isEmpty == true { state.waiters[key] = nil }
            state.count -= 1
            return waiter
        }
        if let timer = waiter?.timer { deadlines.remove(timer) }
    }

    /// Whether any wait is parked under `key`.
    public func isWaiting(_ key: Key) -> Bool {
        state.withLock { $0.waiters[key] != nil }
    }

    private func end(_ key: Key, _ token: UInt64, with value: Value?) {
        let waiter = state.withLock { state -> Waiter? in
            guard let waiter = state.waiters[key]?.removeValue(forKey: token) else { return nil }
            if state.waiters[key]?.isEmpty == true { state.waiters[key] = nil }
            state.count -= 1
            return waiter
        }
        guard let waiter else { return }
        finish([waiter], with: value ?? expired)
    }

    private func finish(_ waiters: [Waiter], with value: Value) {
        for waiter in waiters {
            if let timer = waiter.timer { deadlines.remove(timer) }
            waiter.resume(value)
        }
    }
}

/// Deadlines on a `ManualClock`: they expire when a test moves the clock
/// and calls `fire`, never by themselves.
public final class ManualDeadlines: DeadlineScheduler {
    private struct Entry {
        var deadline: Duration
        var expire: @Sendable () -> Void
    }

    private let clock: ManualClock
    private let entries = Mutex<(table: [UInt64: Entry], next: UInt64)>(([:], 0))

    public init(clock: ManualClock) {
        self.clock = clock
    }

    public func add(timeout: Duration, expire: @escaping @Sendable () -> Void) -> UInt64 {
        let deadline = clock.now + timeout
        return entries.withLock { entries in
            entries.next &+= 1
            entries.table[entries.next] = Entry(deadline: deadline, expire: expire)
            return entries.next
        }
    }

    public func remove(_ handle: UInt64) {
        _ = entries.withLock { $0.table.removeValue(forKey: handle) }
    }

    /// How many deadlines are pending.
    public var count: Int { entries.withLock { $0.table.count } }

    /// Expires every deadline the clock has reached.
    public func fire() {
        let now = clock.now
        let due = entries.withLock { entries -> [@Sendable () -> Void] in
            let due = entries.table.filter { $0.value.deadline <= now }
            for id in due.keys { entries.table[id] = nil }
            return due.sorted { $0.value.deadline < $1.value.deadline }.map(\.value.expire)
        }
        for expire in due { expire() }
    }
}
