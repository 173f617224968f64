import Foundation

/// SplitMix64: a small, fast, seedable generator, so a workload's keys and
/// room sizes are the same in every run with the same seed (A/B pairs then
/// differ only in the target).
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Ranks 1...count drawn with probability proportional to 1 / rank^exponent
/// (Zipf's law: a few conversations get most of the traffic, most get
/// little). Exponent 0 is uniform. Sampling is a binary search in the
/// cumulative table: O(log count) per draw, count doubles of memory.
public struct ZipfSampler: Sendable {
    public let count: Int
    public let exponent: Double
    private let cumulative: [Double]

    public init(count: Int, exponent: Double) {
        precondition(count >= 1, "a Zipf law needs at least one rank")
        precondition(exponent >= 0, "a Zipf exponent is not negative")
        self.count = count
        self.exponent = exponent
        var cumulative = [Double]()
        cumulative.reserveCapacity(count)
        var total = 0.0
        for rank in 1...count {
            total += exponent == 0 ? 1 : 1 / pow(Double(rank), exponent)
            cumulative.append(total)
        }
        self.cumulative = cumulative.map { $0 / total }
    }

    /// A rank in 1...count.
    public func next(using generator: inout some RandomNumberGenerator) -> Int {
        let u = Double.random(in: 0..<1, using: &generator)
        var low = 0
        var high = count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] <= u { low = middle + 1 } else { high = middle }
        }
        return low + 1
    }

    /// The probability of `rank`.
    public func probability(of rank: Int) -> Double {
        rank == 1 ? cumulative[0] : cumulative[rank - 1] - cumulative[rank - 2]
    }
}

/// Kafka's default partitioner for keyed records (murmur2, positive, modulo
/// the partition count), so the tool's messages land where a Java or
/// librdkafka producer's would (librdkafka's "murmur2_random").
public enum KafkaPartitioner {
    public static func murmur2(_ data: [UInt8]) -> Int32 {
        let seed: UInt32 = 0x9747_b28c
        let m: UInt32 = 0x5bd1_e995
        let r: UInt32 = 24
        var h: UInt32 = seed ^ UInt32(truncatingIfNeeded: data.count)
        let blocks = data.count / 4
        for block in 0..<blocks {
            let i = block * 4
            var k = UInt32(data[i]) | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2]) << 16 | UInt32(data[i + 3]) << 24
            k = k &* m
            k ^= k >> r
            k = k &* m
            h = h &* m
            h ^= k
        }
        let tail = blocks * 4
        switch data.count % 4 {
        case 3:
            h ^= UInt32(data[tail + 2]) << 16
            h ^= UInt32(data[tail + 1]) << 8
            h ^= UInt32(data[tail])
            h = h &* m
        case 2:
            h ^= UInt32(data[tail + 1]) << 8
            h ^= UInt32(data[tail])
            h = h &* m
        case 1:
            h ^= UInt32(data[tail])
            h = h &* m
        default:
            break
        }
        h ^= h >> 13
        h = h &* m
        h ^= h >> 15
        return Int32(bitPattern: h)
    }

    public static func partition(forKey key: [UInt8], partitionCount: Int32) -> Int32 {
        (murmur2(key) & 0x7fff_ffff) % partitionCount
    }
}
