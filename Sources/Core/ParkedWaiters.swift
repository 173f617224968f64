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
        /// `parkUnless`'s `moot` held: nothing to wait for, nothing called.
        case moot
        /// `waitersMax` waits are parked: this one gets `expired` at once.
        case full
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
            return Self.insert(&state, key, Waiter(resume: resume, timer: nil, position: position), waitersMax: waitersMax)
        }
        return settle(outcome, key, timeout: timeout, resume: resume)
    }

    /// Parks `resume` under `key` as `park` does, unless `moot`, asked under
    /// the table's lock, says there is nothing to wait for: then nothing is
    /// called and nil is returned (the caller looks again itself).
    public func parkUnless(_ key: Key, timeout: Duration, moot: () -> Bool, resume: @escaping @Sendable (Value) -> Void) -> UInt64? {
        let outcome = state.withLock { state -> ParkOutcome in
            if moot() { return .moot }
            return Self.insert(&state, key, Waiter(resume: resume, timer: nil, position: 0), waitersMax: waitersMax)
        }
        return settle(outcome, key, timeout: timeout, resume: resume)
    }

    private static func insert(_ state: inout State, _ key: Key, _ waiter: Waiter, waitersMax: Int) -> ParkOutcome {
        guard state.count < waitersMax else { return .full }
        state.nextToken &+= 1
        state.waiters[key, default: [:]][state.nextToken] = waiter
        state.count += 1
        return .parked(state.nextToken)
    }

    /// After the table's lock: a wait that ended at once is answered, a
    /// parked one gets its deadline.
    private func settle(_ outcome: ParkOutcome, _ key: Key, timeout: Duration, resume: @Sendable (Value) -> Void) -> UInt64? {
        switch outcome {
        case .moot:
            return nil
        case .full:
            resume(expired)
            return nil
        case .now(let value):
            resume(value)
            return nil
        case .parked(let token):
            // The table outlives its deadlines: an ended wait removes its own.
            let timer = deadlines.add(timeout: timeout) { self.end(key, token, with: nil) }
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

    /// Wakes every wait under each of `keys` with `value`, in one pass over
    /// the table (a message wakes every member of its room); returns how many.
    @discardableResult
    public func wake(each keys: some Sequence<Key>, with value: Value) -> Int {
        let woken = state.withLock { state -> [Waiter] in
            var woken: [Waiter] = []
            for key in keys {
                guard let waiting = state.waiters.removeValue(forKey: key) else { continue }
                woken.append(contentsOf: waiting.values)
            }
            state.count -= woken.count
            return woken
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
