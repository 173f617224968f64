/// Plans for `postduif cluster drain` and `rebalance`: given where every
/// partition's replicas are, the live brokers and their racks, the
/// replica sets to move to. Pure, so plans are tested without a cluster;
/// the plan is printed, and applied with AlterPartitionReassignments.
public struct ReplicaPlanner: Sendable {
    /// Every partition's replicas, the preferred leader first.
    public var replicas: [PartitionID: [Int32]]
    /// The brokers replicas may go to.
    public var brokers: [Int32]
    /// Each broker's rack, where it has one.
    public var racks: [Int32: String]

    public init(replicas: [PartitionID: [Int32]], brokers: [Int32], racks: [Int32: String] = [:]) {
        self.replicas = replicas
        self.brokers = brokers.sorted()
        self.racks = racks
    }

    /// Replicas per broker (every broker listed, zero included).
    public var load: [Int32: Int] {
        var counts = Dictionary(uniqueKeysWithValues: brokers.map { ($0, 0) })
        for set in replicas.values { for broker in set { counts[broker, default: 0] += 1 } }
        return counts
    }

    /// Preferred leaders per broker.
    public var leaders: [Int32: Int] {
        var counts = Dictionary(uniqueKeysWithValues: brokers.map { ($0, 0) })
        for set in replicas.values { if let first = set.first { counts[first, default: 0] += 1 } }
        return counts
    }

    /// Every replica off `broker` (decommissioning): each goes, in its
    /// place, to the least loaded broker not yet holding the partition,
    /// one on a rack the partition does not use yet when there is one.
    /// Nil target for partitions that cannot move (too few brokers).
    public func drain(_ broker: Int32) -> [PartitionID: [Int32]] {
        var planner = self
        planner.brokers.removeAll { $0 == broker }
        var plan: [PartitionID: [Int32]] = [:]
        for id in replicas.keys.sorted() where replicas[id]!.contains(broker) {
            var set = planner.replicas[id]!
            let others = set.filter { $0 != broker }
            guard let replacement = planner.leastLoaded(excluding: Set(set), preferringRacksOtherThan: others) else { continue }
            set[set.firstIndex(of: broker)!] = replacement
            planner.replicas[id] = set
            plan[id] = set
        }
        return plan
    }

    /// Replicas spread evenly (no broker more than one above another),
    /// then preferred leaders spread evenly, with as few moves as that
    /// takes. Partitions whose replicas stay, in the same order, are left out.
    public func rebalance() -> [PartitionID: [Int32]] {
        guard brokers.count > 1 else { return [:] }
        var planner = self
        // Replicas: from the most to the least loaded, one at a time.
        for _ in 0..<(replicas.values.reduce(0) { $0 + $1.count } + 1) {
            let load = planner.load
            guard let most = brokers.max(by: { (load[$0]!, -$0) < (load[$1]!, -$1) }),
                  let least = brokers.min(by: { (load[$0]!, $0) < (load[$1]!, $1) }),
                  load[most]! - load[least]! > 1 else { break }
            // A partition on the most loaded broker and not on the least,
            // preferring one where the least brings a new rack.
            let candidates = planner.replicas.keys.sorted().filter { planner.replicas[$0]!.contains(most) && !planner.replicas[$0]!.contains(least) }
            let chosen = candidates.first { id in
                let others = planner.replicas[id]!.filter { $0 != most }
                return racks[least] == nil || !others.contains { racks[$0] == racks[least] }
            } ?? candidates.first
            guard let id = chosen else { break }
            var set = planner.replicas[id]!
            set[set.firstIndex(of: most)!] = least
            planner.replicas[id] = set
        }
        // Leaders: a partition led by an over-loaded broker is led by its
        // least-leading replica instead, while that evens things out.
        for _ in 0..<(replicas.count + 1) {
            let leaders = planner.leaders
            guard let most = brokers.max(by: { (leaders[$0]!, -$0) < (leaders[$1]!, -$1) }) else { break }
            let swap = planner.replicas.keys.sorted().lazy.compactMap { id -> (PartitionID, Int32)? in
                let set = planner.replicas[id]!
                guard set.first == most, let other = set.dropFirst().min(by: { (leaders[$0] ?? 0, $0) < (leaders[$1] ?? 0, $1) }),
                      (leaders[other] ?? 0) + 1 < leaders[most]! else { return nil }
                return (id, other)
            }.first
            guard let (id, other) = swap else { break }
            var set = planner.replicas[id]!
            set.swapAt(0, set.firstIndex(of: other)!)
            planner.replicas[id] = set
        }
        return planner.replicas.filter { replicas[$0.key] != $0.value }
    }

    /// The least loaded broker outside `excluded`, one on a rack none of
    /// `others` uses when there is such a broker; ties go to the lowest id.
    func leastLoaded(excluding excluded: Set<Int32>, preferringRacksOtherThan others: [Int32]) -> Int32? {
        let load = self.load
        let eligible = brokers.filter { !excluded.contains($0) }.sorted { (load[$0]!, $0) < (load[$1]!, $1) }
        let usedRacks = Set(others.compactMap { racks[$0] })
        return eligible.first { racks[$0] == nil || !usedRacks.contains(racks[$0]!) } ?? eligible.first
    }
}
