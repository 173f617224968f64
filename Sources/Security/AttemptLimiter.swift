/// Limits attempts per key (a client address, a user name) in a sliding
/// window, so passwords cannot be guessed at speed: SASL at the Kafka
/// listeners, login and registration at the gateway. Pure: the caller
/// passes the time, in milliseconds of any monotonic clock.
public struct AttemptLimiter: Sendable {
    public let limit: Int
    public let windowMilliseconds: Int64
    /// Most keys tracked; the oldest are forgotten past it, so a flood of
    /// distinct keys cannot grow the table without bound.
    public let keysMax: Int
    private var attempts: [String: [Int64]] = [:]

    public init(limit: Int, windowMilliseconds: Int64, keysMax: Int = 100_000) {
        self.limit = limit
        self.windowMilliseconds = windowMilliseconds
        self.keysMax = keysMax
    }

    /// Milliseconds until `key` may try again; nil when it may now.
    public mutating func wait(for key: String, now: Int64) -> Int64? {
        guard var times = attempts[key] else { return nil }
        times.removeAll { $0 <= now - windowMilliseconds }
        attempts[key] = times.isEmpty ? nil : times
        guard times.count >= limit, let oldest = times.first else { return nil }
        return oldest + windowMilliseconds - now
    }

    /// Counts one attempt (a failure, or any request that is limited).
    public mutating func record(_ key: String, now: Int64) {
        if attempts[key] == nil && attempts.count >= keysMax {
            // Forget the keys whose last attempt is oldest (a tenth at once).
            let stale = attempts.sorted { ($0.value.last ?? 0) < ($1.value.last ?? 0) }.prefix(max(keysMax / 10, 1)).map(\.key)
            for key in stale { attempts[key] = nil }
        }
        attempts[key, default: []].append(now)
        if attempts[key]!.count > limit { attempts[key]!.removeFirst(attempts[key]!.count - limit) }
    }

    /// Forgets a key's attempts (a success).
    public mutating func reset(_ key: String) {
        attempts[key] = nil
    }
}
