import Foundation

/// Monotonic nanoseconds, comparable within one process: every latency the
/// tool reports is a difference of two of these.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// Open-loop pacing: message `i` is due at `start + i / rate`, whatever
/// happened to the messages before it. Latency is measured from that
/// intended time, not from when the message was actually handed over, so a
/// target that stalls is charged for every message the stall delayed
/// (coordinated omission corrected).
public struct OpenLoopSchedule: Sendable {
    public let start: UInt64
    public let ratePerSecond: Double
    public let total: Int

    public init(start: UInt64, ratePerSecond: Double, total: Int) {
        precondition(ratePerSecond > 0, "an open loop needs a positive rate")
        self.start = start
        self.ratePerSecond = ratePerSecond
        self.total = total
    }

    /// When message `index` is due.
    public func intendedTime(of index: Int) -> UInt64 {
        start + UInt64((Double(index) * 1e9 / ratePerSecond).rounded())
    }

    /// The messages due at `now` that are not yet sent, from `next` on.
    public func due(at now: UInt64, next: Int) -> Range<Int> {
        guard now >= start, next < total else { return next..<next }
        let elapsed = Double(now - start) / 1e9
        let dueCount = min(total, Int(elapsed * ratePerSecond) + 1)
        return next..<max(next, dueCount)
    }
}
