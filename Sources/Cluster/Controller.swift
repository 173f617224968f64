/// The controller's decisions as a pure state machine: events in (what the
/// controller saw in etcd), actions out (compare-and-swap writes it should
/// make). No I/O here, so every failover rule is tested on its own; the
/// driver that reads etcd and applies the actions comes with replication.

/// A partition's leadership record, as stored in etcd under
/// `partitions/<topic>/<index>` and changed only by compare-and-swap.
public struct PartitionState: Codable, Sendable, Equatable {
    /// The leader's broker id, or -1 while no eligible replica is alive.
    public var leader: Int32
    /// Bumped on every leader change; stamped on batches and checked on requests.
    public var leaderEpoch: Int32
    /// In-sync replicas, leader included.
    public var isr: [Int32]
    /// Bumped on every change (leader or ISR).
    public var version: Int32

    public init(leader: Int32, leaderEpoch: Int32, isr: [Int32], version: Int32 = 0) {
        self.leader = leader
        self.leaderEpoch = leaderEpoch
        self.isr = isr
        self.version = version
    }
}

/// A topic's replica assignment: for each partition, its replicas, the
/// preferred leader first.
public struct TopicAssignment: Codable, Sendable, Equatable {
    public var name: String
    public var replicas: [[Int32]]
    /// The topic configs it was created with (CreateTopics' names and
    /// values), so every broker makes its replica of the topic alike.
    public var configs: [String: String]
    /// The topic's id (a UUID, as KIP-516's): a topic deleted and made
    /// again under the same name gets another, so a replica of the old one
    /// on a broker that was down is known for what it is. Nil for topics
    /// made before ids.
    public var topicID: String?

    public init(name: String, replicas: [[Int32]], configs: [String: String] = [:], topicID: String? = nil) {
        self.name = name
        self.replicas = replicas
        self.configs = configs
        self.topicID = topicID
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        replicas = try container.decode([[Int32]].self, forKey: .replicas)
        configs = try container.decodeIfPresent([String: String].self, forKey: .configs) ?? [:]
        topicID = try container.decodeIfPresent(String.self, forKey: .topicID)
    }
}

public struct PartitionID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var topic: String
    public var index: Int32

    public init(topic: String, index: Int32) {
        self.topic = topic
        self.index = index
    }

    public static func < (a: PartitionID, b: PartitionID) -> Bool {
        (a.topic, a.index) < (b.topic, b.index)
    }

    public var description: String { "\(topic)/\(index)" }
}

public enum ControllerError: Error, Equatable, CustomStringConvertible {
    case notEnoughBrokers(needed: Int, alive: Int)
    case invalidReplicationFactor(Int)
    case invalidPartitionCount(String)

    public var description: String {
        switch self {
        case .invalidPartitionCount(let reason): reason
        case .notEnoughBrokers(let needed, let alive): "replication factor \(needed) needs \(needed) live brokers, \(alive) alive"
        case .invalidReplicationFactor(let factor): "replication factor \(factor) is not positive"
        }
    }
}

public struct Controller: Sendable {
    public enum Event: Sendable, Equatable {
        /// A broker's registration appeared (its lease is alive).
        case brokerRegistered(Int32)
        /// A broker's registration vanished (its lease expired or was revoked).
        case brokerExpired(Int32)
        /// A partition's record as read from etcd (at start, or changed by a leader's ISR update).
        case partitionObserved(PartitionID, PartitionState)
        /// A topic's assignment as read from etcd.
        case topicObserved(TopicAssignment)
        /// A topic's record was deleted (DeleteTopics): its partitions are forgotten.
        case topicDeleted(String)
    }

    public enum Action: Sendable, Equatable {
        /// Compare-and-swap the partition record from `previous` (nil: it must not exist yet) to `next`.
        case writePartition(PartitionID, previous: PartitionState?, next: PartitionState)
    }

    public private(set) var liveBrokers: Set<Int32> = []
    public private(set) var partitions: [PartitionID: PartitionState] = [:]
    public private(set) var assignments: [String: TopicAssignment] = [:]
    /// Off by default: a replica outside the ISR may miss acknowledged writes.
    public let uncleanElection: Bool

    public init(uncleanElection: Bool = false) {
        self.uncleanElection = uncleanElection
    }

    /// Replicas for a new topic: partition p's replicas are the live brokers
    /// (sorted) starting at position p, so leaders and followers spread evenly.
    public func assign(topic: String, partitionCount: Int, replicationFactor: Int) throws(ControllerError) -> TopicAssignment {
        guard replicationFactor > 0 else { throw .invalidReplicationFactor(replicationFactor) }
        let brokers = liveBrokers.sorted()
        guard brokers.count >= replicationFactor else { throw .notEnoughBrokers(needed: replicationFactor, alive: brokers.count) }
        let replicas = (0..<partitionCount).map { partition in
            (0..<replicationFactor).map { brokers[(partition + $0) % brokers.count] }
        }
        return TopicAssignment(name: topic, replicas: replicas)
    }

    /// The first partition records of a topic just assigned: the preferred
    /// replica leads at epoch 0, every replica in sync (all are empty).
    public func initialStates(for assignment: TopicAssignment) -> [Action] {
        assignment.replicas.enumerated().map { index, replicas in
            .writePartition(PartitionID(topic: assignment.name, index: Int32(index)), previous: nil,
                            next: PartitionState(leader: replicas[0], leaderEpoch: 0, isr: replicas))
        }
    }

    /// Takes in one event; returns the writes it calls for.
    public mutating func handle(_ event: Event) -> [Action] {
        switch event {
        case .brokerRegistered(let broker):
            liveBrokers.insert(broker)
            // Leaderless partitions this broker can lead get it.
            return partitions.keys.sorted().compactMap { id in
                let state = partitions[id]!
                guard state.leader == -1 else { return nil }
                return elect(id, state)
            }
        case .brokerExpired(let broker):
            liveBrokers.remove(broker)
            return partitions.keys.sorted().compactMap { id in
                let state = partitions[id]!
                if state.leader == broker { return elect(id, state, removing: broker) }
                if state.isr.contains(broker) && state.isr.count > 1 {
                    var next = state
                    next.isr.removeAll { $0 == broker }
                    next.version += 1
                    return .writePartition(id, previous: state, next: next)
                }
                return nil
            }
        case .partitionObserved(let id, let state):
            partitions[id] = state
            guard !liveBrokers.isEmpty, state.leader != -1 else { return [] }
            // A record naming a dead leader (the controller was down when it died).
            if !liveBrokers.contains(state.leader) {
                return [elect(id, state, removing: state.leader)].compactMap { $0 }
            }
            // Or dead followers still in the ISR (expired while no controller ran).
            let alive = state.isr.filter { liveBrokers.contains($0) }
            if alive.count < state.isr.count {
                var next = state
                next.isr = alive
                next.version += 1
                return [.writePartition(id, previous: state, next: next)]
            }
            return []
        case .topicObserved(let assignment):
            assignments[assignment.name] = assignment
            return []
        case .topicDeleted(let name):
            assignments[name] = nil
            partitions = partitions.filter { $0.key.topic != name }
            return []
        }
    }

    /// A new leader for a partition: the first live ISR member in the
    /// assignment's preference order; with unclean election, any live
    /// replica. None: the partition goes offline (leader -1), keeping its
    /// last ISR so that the next live ISR member can take it back safely.
    private func elect(_ id: PartitionID, _ state: PartitionState, removing gone: Int32? = nil) -> Action? {
        let preference = assignments[id.topic].flatMap { Int(id.index) < $0.replicas.count ? $0.replicas[Int(id.index)] : nil } ?? state.isr
        var isr = state.isr
        if let gone, isr.count > 1 { isr.removeAll { $0 == gone } }
        let candidates = preference.filter { liveBrokers.contains($0) && $0 != gone }
        var next = state
        if let leader = candidates.first(where: { isr.contains($0) }) {
            next.leader = leader
            next.isr = isr
        } else if uncleanElection, let leader = candidates.first {
            // Whatever the old ISR had and this replica lacks is lost: the price of availability.
            next.leader = leader
            next.isr = [leader]
        } else {
            guard state.leader != -1 else { return nil }
            next.leader = -1
            next.isr = isr
        }
        guard next.leader != state.leader || next.isr != state.isr else { return nil }
        if next.leader != state.leader { next.leaderEpoch += 1 }
        next.version += 1
        return .writePartition(id, previous: state, next: next)
    }

    /// Records that a write succeeded (the driver calls this after its compare-and-swap).
    public mutating func applied(_ action: Action) {
        switch action {
        case .writePartition(let id, _, let next): partitions[id] = next
        }
    }
}
