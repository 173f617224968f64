import Core

/// Which of a fetcher's partitions rest, and until when: a partition the
/// leader refused is left out of the fetches for `restAfterRefusal`. A
/// refusal is answered at once, so asking again at once would spin, while
/// pausing the whole fetcher held the other partitions' copies back with
/// it. Pure: the fetcher's clock arrives as `now`.
public struct FetchRests: Sendable, Equatable {
    /// How long a refused partition stays out of the fetches.
    public let restAfterRefusal: Duration
    private var until: [Int: Duration] = [:]

    public init(restAfterRefusal: Duration) {
        self.restAfterRefusal = restAfterRefusal
    }

    /// What the next Fetch should do.
    public enum Plan: Sendable, Equatable {
        /// Ask for these partitions (positions in the fetcher's list).
        case fetch([Int])
        /// Every partition rests: wait until this moment, then plan again.
        case waitUntil(Duration)
    }

    /// The partition at `position` was refused at `now`.
    public mutating func refused(_ position: Int, now: Duration) {
        until[position] = now + restAfterRefusal
    }

    /// The next Fetch of `count` partitions at `now`; rests that ended are forgotten.
    public mutating func plan(count: Int, now: Duration) -> Plan {
        until = until.filter { $0.value > now }
        let asked = (0..<count).filter { until[$0] == nil }
        if !asked.isEmpty { return .fetch(asked) }
        // `count` is never zero here with rests left; without rests, nothing to ask.
        return until.values.min().map(Plan.waitUntil) ?? .fetch([])
    }
}
