import Core
import Foundation

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
