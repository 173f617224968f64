import NIOCore
import NIOPosix
import Synchronization

/// The deadlines of parked waits (long-polling fetches, acks=all produces
/// waiting for the high watermark, the gateway's long-polling `/sync`), checked by one event-loop timer that is
/// armed only while something waits.
///
/// A timer per park fired even when the wait had long ended: an acks=all
/// burst left tens of thousands of 30-second timers behind that all fired
/// during the next workload. Here an ended wait is removed from the table,
/// and a tick expires the waits whose deadline passed. A deadline is kept to
/// within one tick.
public final class ParkedTimeouts: Sendable {
    private struct Entry {
        var deadline: NIODeadline
        var expire: @Sendable () -> Void
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var nextID: UInt64 = 0
        var armed = false
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
        let (id, arm) = state.withLock { state -> (UInt64, Bool) in
            state.nextID &+= 1
            state.entries[state.nextID] = Entry(deadline: deadline, expire: expire)
            let arm = !state.armed
            state.armed = true
            return (state.nextID, arm)
        }
        if arm { schedule() }
        return id
    }

    /// The wait ended before its deadline.
    public func remove(_ id: UInt64) {
        state.withLock { _ = $0.entries.removeValue(forKey: id) }
    }

    /// How many waits are parked (for tests).
    public var count: Int {
        state.withLock { $0.entries.count }
    }

    private func schedule() {
        loop.scheduleTask(in: tick) { [weak self] in self?.sweep() }
    }

    private func sweep() {
        let now = NIODeadline.now()
        let (due, rearm) = state.withLock { state -> ([@Sendable () -> Void], Bool) in
            var due: [@Sendable () -> Void] = []
            for id in state.entries.compactMap({ $0.value.deadline <= now ? $0.key : nil }) {
                if let entry = state.entries.removeValue(forKey: id) { due.append(entry.expire) }
            }
            state.armed = !state.entries.isEmpty
            return (due, state.armed)
        }
        for expire in due { expire() }
        if rearm { schedule() }
    }
}
