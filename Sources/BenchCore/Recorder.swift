import Histogram
import Synchronization

/// What the tool counts, per second of the run and in total.
public enum Counter: String, Codable, CaseIterable, Sendable {
    /// Messages handed to the target.
    case sent
    /// Messages the target acknowledged (for acks=0, counted when written).
    case acknowledged
    /// Messages a consumer received.
    case received
    /// Copies delivered to online members (the chat workload).
    case deliveries
    /// Messages the target refused or lost with an error.
    case errors
    /// Olm to-device messages members received (the encrypted chat workload).
    case toDevice
}

/// Latencies (in microseconds, HdrHistogram with three significant digits)
/// and per-second counters of one run, shared by every task of the run.
/// One lock per call: callers record a whole batch of messages at once.
public final class Recorder: Sendable {
    public static let latencyMicrosecondsMax: UInt64 = 3_600_000_000

    struct State {
        var latency = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: Recorder.latencyMicrosecondsMax, numberOfSignificantValueDigits: .three)
        var totals: [Counter: Int] = [:]
        var perSecond: [Counter: [Int]] = [:]
        var bytes: [Counter: Int] = [:]
    }

    public let start: UInt64
    private let state = Mutex(State())

    public init(start: UInt64 = monotonicNanoseconds()) {
        self.start = start
    }

    /// Counts `count` messages (of `bytes` in all) at `now`.
    public func count(_ counter: Counter, _ count: Int, bytes: Int = 0, at now: UInt64 = monotonicNanoseconds()) {
        guard count > 0 else { return }
        let second = now > start ? Int((now - start) / 1_000_000_000) : 0
        state.withLock { state in
            state.totals[counter, default: 0] += count
            state.bytes[counter, default: 0] += bytes
            var series = state.perSecond[counter] ?? []
            if series.count <= second { series.append(contentsOf: repeatElement(0, count: second + 1 - series.count)) }
            series[second] += count
            state.perSecond[counter] = series
        }
    }

    /// Records, for each intended time, the latency to `now`, `weight` times
    /// each (a message delivered to five members is five deliveries).
    public func recordLatencies(from intended: [UInt64], to now: UInt64, weight: UInt64 = 1) {
        guard weight > 0, !intended.isEmpty else { return }
        state.withLock { state in
            for sent in intended {
                let microseconds = now > sent ? (now - sent) / 1000 : 0
                _ = state.latency.record(min(max(microseconds, 1), Recorder.latencyMicrosecondsMax), count: weight)
            }
        }
    }

    public func total(_ counter: Counter) -> Int {
        state.withLock { $0.totals[counter] ?? 0 }
    }

    /// The latency at `percentile` so far, in milliseconds (nil before any).
    public func latencyMilliseconds(atPercentile percentile: Double) -> Double? {
        state.withLock { state in
            state.latency.totalCount == 0 ? nil : Double(state.latency.valueAtPercentile(percentile)) / 1000
        }
    }

    /// Folds another run's recording into this one (several load processes).
    public func merge(_ other: Recorder) {
        let theirs = other.state.withLock { $0 }
        state.withLock { state in
            state.latency.add(theirs.latency)
            for (counter, total) in theirs.totals { state.totals[counter, default: 0] += total }
            for (counter, bytes) in theirs.bytes { state.bytes[counter, default: 0] += bytes }
            for (counter, series) in theirs.perSecond {
                var mine = state.perSecond[counter] ?? []
                if mine.count < series.count { mine.append(contentsOf: repeatElement(0, count: series.count - mine.count)) }
                for (second, count) in series.enumerated() { mine[second] += count }
                state.perSecond[counter] = mine
            }
        }
    }

    /// Adds another recording's totals and series of `counters`, not its latencies.
    public func mergeCounters(from other: Recorder, _ counters: [Counter]) {
        let theirs = other.state.withLock { $0 }
        state.withLock { state in
            for counter in counters {
                state.totals[counter, default: 0] += theirs.totals[counter] ?? 0
                state.bytes[counter, default: 0] += theirs.bytes[counter] ?? 0
                guard let series = theirs.perSecond[counter] else { continue }
                var mine = state.perSecond[counter] ?? []
                if mine.count < series.count { mine.append(contentsOf: repeatElement(0, count: series.count - mine.count)) }
                for (second, count) in series.enumerated() { mine[second] += count }
                state.perSecond[counter] = mine
            }
        }
    }

    /// The figures of the run so far.
    public func summary(seconds: Double) -> Figures {
        state.withLock { state in
            var latency: LatencyFigures? = nil
            let histogram = state.latency
            if histogram.totalCount > 0 {
                func ms(_ p: Double) -> Double { Double(histogram.valueAtPercentile(p)) / 1000 }
                // The percentile curve: 0, 50, 75, 87.5, ... halving the rest, to 99.999.
                var curve: [[Double]] = []
                var rest = 100.0
                while 100 - rest <= 99.999 {
                    curve.append([100 - rest, ms(100 - rest)])
                    rest /= 2
                }
                curve.append([100, Double(histogram.max) / 1000])
                latency = LatencyFigures(
                    count: Int(histogram.totalCount), p50: ms(50), p90: ms(90), p99: ms(99), p999: ms(99.9),
                    max: Double(histogram.max) / 1000, mean: histogram.mean / 1000, curve: curve)
            }
            var totals: [String: Int] = [:]
            var bytes: [String: Int] = [:]
            var series: [String: [Int]] = [:]
            for counter in Counter.allCases {
                totals[counter.rawValue] = state.totals[counter] ?? 0
                if let count = state.bytes[counter], count > 0 { bytes[counter.rawValue] = count }
                if let perSecond = state.perSecond[counter] { series[counter.rawValue] = perSecond }
            }
            return Figures(seconds: seconds, totals: totals, bytes: bytes, perSecond: series, latency: latency)
        }
    }
}

/// Latency figures in milliseconds.
public struct LatencyFigures: Codable, Sendable, Equatable {
    public var count: Int
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
    public var mean: Double
    /// [percentile, milliseconds] pairs for the percentile chart.
    public var curve: [[Double]]
}

/// Totals, per-second series and latency of one run.
public struct Figures: Codable, Sendable, Equatable {
    public var seconds: Double
    public var totals: [String: Int]
    public var bytes: [String: Int]
    public var perSecond: [String: [Int]]
    public var latency: LatencyFigures?

    public func rate(_ counter: Counter) -> Double {
        seconds > 0 ? Double(totals[counter.rawValue] ?? 0) / seconds : 0
    }
}
