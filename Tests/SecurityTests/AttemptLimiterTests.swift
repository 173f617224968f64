import Security
import Testing

@Suite("Attempt limits")
struct AttemptLimiterTests {
    @Test("a key may try `limit` times per window, then waits until its oldest attempt leaves the window")
    func window() {
        var limiter = AttemptLimiter(limit: 3, windowMilliseconds: 60_000)
        for now in [0, 10, 20] as [Int64] {
            #expect(limiter.wait(for: "10.0.0.1", now: now) == nil)
            limiter.record("10.0.0.1", now: now)
        }
        #expect(limiter.wait(for: "10.0.0.1", now: 30) == 59_970)
        #expect(limiter.wait(for: "10.0.0.2", now: 30) == nil, "other keys are not held up")
        #expect(limiter.wait(for: "10.0.0.1", now: 60_001) == nil, "the oldest attempt left the window")
    }

    @Test("a reset forgets a key; past keysMax the stalest keys are forgotten")
    func forgetting() {
        var limiter = AttemptLimiter(limit: 1, windowMilliseconds: 1000, keysMax: 10)
        limiter.record("a", now: 0)
        #expect(limiter.wait(for: "a", now: 1) != nil)
        limiter.reset("a")
        #expect(limiter.wait(for: "a", now: 1) == nil)
        for index in 0..<100 { limiter.record("k\(index)", now: Int64(index)) }
        #expect(limiter.wait(for: "k99", now: 100) != nil, "the newest key is still tracked")
        #expect(limiter.wait(for: "k0", now: 100) == nil, "the oldest was forgotten")
    }
}
