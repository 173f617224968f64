import Glibc
import Synchronization

/// Where time comes from, for code that decides by it: the real monotonic
/// clock in production, a clock moved by hand in tests (so a test of a
/// timeout advances the clock instead of sleeping). An instant is the time
/// since the clock's origin; only differences between instants mean
/// anything.
///
/// Named apart from the standard library's `Clock`, whose generic
/// instants and `sleep` a state machine does not need.
public protocol MonotonicClock: Sendable {
    /// Time since this clock's origin; never moves back.
    var now: Duration { get }
}

/// The operating system's monotonic clock.
public struct SystemClock: MonotonicClock {
    private let origin = ContinuousClock.now

    public init() {}

    public var now: Duration { ContinuousClock.now - origin }
}

/// A clock that moves only when a test moves it.
public final class ManualClock: MonotonicClock {
    private let current: Mutex<Duration>

    public init(at start: Duration = .zero) {
        current = Mutex(start)
    }

    public var now: Duration { current.withLock { $0 } }

    /// Moves the clock forward.
    public func advance(by step: Duration) {
        precondition(step >= .zero, "a monotonic clock does not move back")
        current.withLock { $0 += step }
    }
}

extension Duration {
    /// Whole milliseconds (truncated), for the protocol fields and leases
    /// that count in them.
    public var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}

/// Wall-clock time in milliseconds since 1970, for what is compared with
/// record timestamps (retention, a topic's LogAppendTime).
public protocol WallClock: Sendable {
    var nowMilliseconds: Int64 { get }
}

/// The operating system's wall clock.
public struct SystemWallClock: WallClock {
    public init() {}

    public var nowMilliseconds: Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
    }
}

/// A wall clock set by hand in tests.
public final class ManualWallClock: WallClock {
    private let current: Mutex<Int64>

    public init(at start: Int64) {
        current = Mutex(start)
    }

    public var nowMilliseconds: Int64 { current.withLock { $0 } }

    public func set(_ milliseconds: Int64) {
        current.withLock { $0 = milliseconds }
    }
}
