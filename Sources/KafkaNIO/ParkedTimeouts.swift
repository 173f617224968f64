import Core
import NIOCore
import NIOPosix
import Synchronization

/// The deadlines of parked waits (long-polling fetches, acks=all produces
/// waiting for the high watermark, the gateway's long-polling `/sync`),
/// kept in one table with one event-loop timer armed for the earliest.
///
/// A timer per park fired even when the wait had long ended: an acks=all
/// burst left tens of thousands of 30-second timers behind that all fired
/// during the next workload. Here an ended wait is removed from the table,
/// and the timer expires the waits whose deadline passed, then re-arms for
/// the earliest left. Deadlines less than `tick` apart share a firing, so a
/// wait may end up to one tick late; with nothing parked nothing fires.
public final class ParkedTimeouts: Sendable {
    private struct Entry {
        var deadline: NIODeadline
        var expire: @Sendable () -> Void
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var nextID: UInt64 = 0
        /// When the current timer fires, and its token (older timers still
        /// scheduled only sweep).
        var armedAt: NIODeadline?
        var armedToken: UInt64 = 0
    }

    private let state = Mutex(State())
    private let tick: TimeAmount
    private let loop: any EventLoop

    public init(tick: TimeAmount, loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()) {
        self.tick = tick
        self.loop = loop
    }

    /// Calls `expire` once `timeout` has passed, unless `remove` came first.
    /// Returns the handle for `remove`.
    public func add(timeout: TimeAmount, expire: @escaping @Sendable () -> Void) -> UInt64 {
        let deadline = NIODeadline.now() + timeout
        let (id, arm) = state.withLock { state -> (UInt64, (NIODeadline, UInt64)?) in
            state.nextID &+= 1
            state.entries[state.nextID] = Entry(deadline: deadline, expire: expire)
            // The armed timer serves this one unless it fires more than a tick later.
            if let armedAt = state.armedAt, deadline + tick >= armedAt {
                return (state.nextID, nil)
            }
            state.armedAt = deadline
            state.armedToken &+= 1
            return (state.nextID, (deadline, state.armedToken))
        }
        if let (at, token) = arm { schedule(at: at, token: token) }
        return id
    }

    /// `add`, then `attach` stores the handle with its wait (under the
    /// wait's own lock) and says whether the wait still stands; if it ended
    /// meanwhile, the deadline is removed again.
    public func add(timeout: TimeAmount, expire: @escaping @Sendable () -> Void, attach: (UInt64) -> Bool) {
        let id = add(timeout: timeout, expire: expire)
        if !attach(id) { remove(id) }
    }

    /// The wait ended before its deadline.
    public func remove(_ id: UInt64) {
        state.withLock { _ = $0.entries.removeValue(forKey: id) }
    }

    /// How many waits are parked (for tests).
    public var count: Int {
        state.withLock { $0.entries.count }
    }

    private func schedule(at deadline: NIODeadline, token: UInt64) {
        loop.scheduleTask(deadline: deadline) { [weak self] in self?.sweep(token: token) }
    }

    private func sweep(token: UInt64) {
        let now = NIODeadline.now()
        let (due, arm) = state.withLock { state -> ([@Sendable () -> Void], (NIODeadline, UInt64)?) in
            var due: [@Sendable () -> Void] = []
            var dueIDs: [UInt64] = []
            var earliest: NIODeadline?
            for (id, entry) in state.entries {
                if entry.deadline <= now {
                    due.append(entry.expire)
                    dueIDs.append(id)
                } else if earliest == nil || entry.deadline < earliest! {
                    earliest = entry.deadline
                }
            }
            // Removed after the loop: removing while iterating copied the table.
            for id in dueIDs { state.entries[id] = nil }
            guard token == state.armedToken else { return (due, nil) }
            guard let earliest else {
                state.armedAt = nil
                return (due, nil)
            }
            let at = max(earliest, now + tick)
            state.armedAt = at
            state.armedToken &+= 1
            return (due, (at, state.armedToken))
        }
        for expire in due { expire() }
        if let (at, token) = arm { schedule(at: at, token: token) }
    }
}

extension ParkedTimeouts: DeadlineScheduler {
    public func add(timeout: Duration, expire: @escaping @Sendable () -> Void) -> UInt64 {
        add(timeout: TimeAmount(timeout), expire: expire)
    }
}
