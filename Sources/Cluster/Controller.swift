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
    /// Partitions moving to other replicas (AlterPartitionReassignments).
    /// While a move is under way the partition's `replicas` are the move's
    /// `replicas` (target and leaving alike), so the added ones copy from
    /// the leader and the leaving ones keep serving until it ends.
    public var moves: [PartitionMove]

    public init(name: String, replicas: [[Int32]], configs: [String: String] = [:], topicID: String? = nil, moves: [PartitionMove] = []) {
        self.name = name
        self.replicas = replicas
        self.configs = configs
        self.topicID = topicID
        self.moves = moves
    }

    public func move(of partition: Int32) -> PartitionMove? {
        moves.first { $0.partition == partition }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        replicas = try container.decode([[Int32]].self, forKey: .replicas)
        configs = try container.decodeIfPresent([String: String].self, forKey: .configs) ?? [:]
        topicID = try container.decodeIfPresent(String.self, forKey: .topicID)
        moves = try container.decodeIfPresent([PartitionMove].self, forKey: .moves) ?? []
    }
}

/// A partition on its way from one replica set to another, as Kafka's
/// reassignments go: the added replicas copy from the leader until all are
/// in the ISR; then the partition's replicas become the target, a leader
/// outside it hands over to one inside, and the removed replicas delete
/// their copies.
public struct PartitionMove: Codable, Sendable, Equatable {
    public var partition: Int32
    /// The replicas before the move (a cancelled move returns to them).
    public var original: [Int32]
    public var target: [Int32]

    public init(partition: Int32, original: [Int32], target: [Int32]) {
        self.partition = partition
        self.original = original
        self.target = target
    }

    public var adding: [Int32] { target.filter { !original.contains($0) } }
    public var removing: [Int32] { original.filter { !target.contains($0) } }
    /// The partition's replicas while the move is under way: the target's
    /// (so the preferred leader is the target's first), then those leaving.
    public var replicas: [Int32] { target + removing }
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
    /// A reassignment's target names no broker, one twice, or one not registered.
    case invalidReplicaAssignment(String)
    case noReassignmentInProgress(PartitionID)
    case unknownPartition(PartitionID)

    public var description: String {
        switch self {
        case .invalidPartitionCount(let reason), .invalidReplicaAssignment(let reason): reason
        case .noReassignmentInProgress(let id): "no reassignment of \(id) is under way"
        case .unknownPartition(let id): "no partition \(id)"
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
        /// A broker announced a controlled shutdown (`shutting-down/<id>`):
        /// its leaderships go to in-sync followers before it stops.
        case brokerShuttingDown(Int32)
        /// Its announcement went (the broker stopped, or came back).
        case brokerShutdownEnded(Int32)
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
        /// Compare-and-swap the topic's record to this assignment (a move ends).
        case writeTopic(TopicAssignment)
    }

    /// How ElectLeaders chooses (Kafka's election types).
    public enum ElectionType: Int8, Sendable {
        /// The preferred replica (the first of the partition's replicas), when in sync.
        case preferred = 0
        /// Any live replica, for a partition with no leader and no live ISR
        /// member: whatever the ISR had and it lacks is lost.
        case unclean = 1
    }

    /// Why ElectLeaders elected nobody for a partition (Kafka's codes).
    public enum ElectionRefusal: Error, Equatable, Sendable {
        case notNeeded
        case preferredLeaderNotAvailable
        case eligibleLeadersNotAvailable
        case unknownPartition
    }

    public private(set) var liveBrokers: Set<Int32> = []
    /// Brokers in a controlled shutdown: led by nobody new, their leaderships moving away.
    public private(set) var shuttingDown: Set<Int32> = []
    public private(set) var partitions: [PartitionID: PartitionState] = [:]
    public private(set) var assignments: [String: TopicAssignment] = [:]
    /// Off by default: a replica outside the ISR may miss acknowledged writes.
    public let uncleanElection: Bool
    /// Brokers' racks, from their registrations.
    public var racks: [Int32: String] = [:]

    public init(uncleanElection: Bool = false) {
        self.uncleanElection = uncleanElection
    }

    /// The partition's replicas in preference order, per its assignment.
    public func replicas(of id: PartitionID) -> [Int32]? {
        assignments[id.topic].flatMap { Int(id.index) < $0.replicas.count ? $0.replicas[Int(id.index)] : nil }
    }

    /// Replicas for a new topic: partition p's replicas are the live brokers
    /// starting at position p, so leaders and followers spread evenly. With
    /// racks, the brokers are ordered taking each rack in turn (as Kafka's
    /// rack-aware assignment), so consecutive replicas sit on different
    /// racks while there are racks enough.
    public func assign(topic: String, partitionCount: Int, replicationFactor: Int) throws(ControllerError) -> TopicAssignment {
        guard replicationFactor > 0 else { throw .invalidReplicationFactor(replicationFactor) }
        let brokers = rackAlternating(liveBrokers.sorted())
        guard brokers.count >= replicationFactor else { throw .notEnoughBrokers(needed: replicationFactor, alive: brokers.count) }
        let replicas = (0..<partitionCount).map { partition in
            (0..<replicationFactor).map { brokers[(partition + $0) % brokers.count] }
        }
        return TopicAssignment(name: topic, replicas: replicas)
    }

    /// Brokers ordered so that racks alternate: the first of each rack (in
    /// rack order), then the second of each, and so on; brokers without a
    /// rack count as a rack of their own each.
    func rackAlternating(_ brokers: [Int32]) -> [Int32] {
        guard brokers.contains(where: { racks[$0] != nil }) else { return brokers }
        let byRack = Dictionary(grouping: brokers) { racks[$0] ?? "#\($0)" }
        let rackNames = byRack.keys.sorted()
        let depth = byRack.values.map(\.count).max() ?? 0
        return (0..<depth).flatMap { level in rackNames.compactMap { level < byRack[$0]!.count ? byRack[$0]!.sorted()[level] : nil } }
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
            shuttingDown.remove(broker)
            // New leaders first: those partitions take no produce until
            // written, while an ISR that still names the dead follower only
            // delays acks=all (Docs/scale.md: a failover's writes go one by one).
            let ids = partitions.keys.sorted()
            let elections = ids.compactMap { id -> Action? in
                let state = partitions[id]!
                return state.leader == broker ? elect(id, state, removing: broker) : nil
            }
            let shrinks = ids.compactMap { id -> Action? in
                let state = partitions[id]!
                guard state.leader != broker, state.isr.contains(broker), state.isr.count > 1 else { return nil }
                var next = state
                next.isr.removeAll { $0 == broker }
                next.version += 1
                return .writePartition(id, previous: state, next: next)
            }
            return elections + shrinks
        case .brokerShuttingDown(let broker):
            shuttingDown.insert(broker)
            // Its leaderships go to in-sync followers now, while it still
            // serves; it stays in the ISRs (it copies until it stops, and its
            // lease's end takes it out). A partition whose ISR is this broker
            // alone keeps it as leader: there is nobody to hand over to.
            return partitions.keys.sorted().compactMap { id in
                let state = partitions[id]!
                guard state.leader == broker else { return nil }
                return handOver(id, state)
            }
        case .brokerShutdownEnded(let broker):
            shuttingDown.remove(broker)
            return []
        case .partitionObserved(let id, let state):
            partitions[id] = state
            guard !liveBrokers.isEmpty else { return [] }
            // A leaderless record seen after its in-sync replica came back:
            // that broker's registration found the partition still led (the
            // record taking its leader away was not seen yet), so this is
            // the moment it takes the partition back, or nobody ever does.
            if state.leader == -1 { return [elect(id, state)].compactMap { $0 } }
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
            // A leader that announced its shutdown after this record was written.
            if shuttingDown.contains(state.leader), let action = handOver(id, state) { return [action] }
            return conform(id, state)
        case .topicObserved(let assignment):
            assignments[assignment.name] = assignment
            return (0..<Int32(assignment.replicas.count)).flatMap { index -> [Action] in
                let id = PartitionID(topic: assignment.name, index: index)
                guard let state = partitions[id], state.leader != -1, liveBrokers.contains(state.leader) else { return [] }
                return conform(id, state)
            }
        case .topicDeleted(let name):
            assignments[name] = nil
            partitions = partitions.filter { $0.key.topic != name }
            return []
        }
    }

    /// What a partition's record needs once its assignment changed: a move
    /// whose target is all in sync ends (the record first, then the topic:
    /// a controller that fails between the two ends it again on reload);
    /// without a move, a leader or ISR members outside the replicas (a
    /// cancelled move) leave.
    private func conform(_ id: PartitionID, _ state: PartitionState) -> [Action] {
        guard let assignment = assignments[id.topic], Int(id.index) < assignment.replicas.count else { return [] }
        if let move = assignment.move(of: id.index) {
            guard Set(move.target).isSubset(of: state.isr) else { return [] }
            var actions: [Action] = []
            if let next = restricted(state, to: move.target) {
                guard next.leader != -1 else { return [] }
                actions.append(.writePartition(id, previous: state, next: next))
            }
            var ended = assignment
            ended.replicas[Int(id.index)] = move.target
            ended.moves.removeAll { $0.partition == id.index }
            actions.append(.writeTopic(ended))
            return actions
        }
        guard let next = restricted(state, to: assignment.replicas[Int(id.index)]), next.leader != -1 else { return [] }
        return [.writePartition(id, previous: state, next: next)]
    }

    /// The record with its leader and ISR inside `replicas`, or nil when
    /// they already are. A leader outside hands over to the first in-sync
    /// replica inside (leader -1 when there is none).
    private func restricted(_ state: PartitionState, to replicas: [Int32]) -> PartitionState? {
        var next = state
        next.isr = state.isr.filter { replicas.contains($0) }
        if !replicas.contains(state.leader) {
            let eligible = replicas.filter { next.isr.contains($0) && liveBrokers.contains($0) }
            next.leader = eligible.first { !shuttingDown.contains($0) } ?? eligible.first ?? -1
            if next.leader == -1 { next.isr = state.isr }
            next.leaderEpoch += 1
        }
        guard next != state else { return nil }
        next.version += 1
        return next
    }

    /// Leadership of a partition whose leader is shutting down, to the
    /// first live in-sync replica in preference order that is not; nil when
    /// there is none.
    private func handOver(_ id: PartitionID, _ state: PartitionState) -> Action? {
        let preference = replicas(of: id) ?? state.isr
        guard let leader = preference.first(where: {
            $0 != state.leader && state.isr.contains($0) && liveBrokers.contains($0) && !shuttingDown.contains($0)
        }) else { return nil }
        var next = state
        next.leader = leader
        next.leaderEpoch += 1
        next.version += 1
        return .writePartition(id, previous: state, next: next)
    }

    /// A new leader for a partition: the first live ISR member in the
    /// assignment's preference order (one not shutting down, if any); with
    /// unclean election, any live replica. None: the partition goes offline
    /// (leader -1), keeping its last ISR so that the next live ISR member
    /// can take it back safely.
    private func elect(_ id: PartitionID, _ state: PartitionState, removing gone: Int32? = nil) -> Action? {
        let preference = replicas(of: id) ?? state.isr
        var isr = state.isr
        if let gone, isr.count > 1 { isr.removeAll { $0 == gone } }
        let candidates = preference.filter { liveBrokers.contains($0) && $0 != gone }
        let inSync = candidates.filter { isr.contains($0) }
        var next = state
        if let leader = inSync.first(where: { !shuttingDown.contains($0) }) ?? inSync.first {
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

    /// ElectLeaders for one partition. Preferred: the first replica leads
    /// when it is live and in sync. Unclean: a partition without a leader
    /// gets its first live replica, in sync or not.
    public func electLeader(_ id: PartitionID, type: ElectionType) -> Result<Action, ElectionRefusal> {
        guard let state = partitions[id], let replicas = replicas(of: id), let preferred = replicas.first else { return .failure(.unknownPartition) }
        var next = state
        switch type {
        case .preferred:
            guard state.leader != preferred else { return .failure(.notNeeded) }
            guard liveBrokers.contains(preferred), !shuttingDown.contains(preferred), state.isr.contains(preferred) else {
                return .failure(.preferredLeaderNotAvailable)
            }
            next.leader = preferred
        case .unclean:
            guard state.leader == -1 || !liveBrokers.contains(state.leader) else { return .failure(.notNeeded) }
            let live = replicas.filter { liveBrokers.contains($0) }
            guard let leader = live.first(where: { state.isr.contains($0) }) ?? live.first else { return .failure(.eligibleLeadersNotAvailable) }
            next.leader = leader
            if !state.isr.contains(leader) { next.isr = [leader] }
        }
        next.leaderEpoch += 1
        next.version += 1
        return .success(.writePartition(id, previous: state, next: next))
    }

    /// Preferred-leader elections for every partition whose preferred
    /// replica is back in sync but does not lead (after a broker returned),
    /// as Kafka's automatic leader rebalance; partitions mid-move wait.
    public func preferredLeaderElections() -> [Action] {
        partitions.keys.sorted().compactMap { id in
            guard let state = partitions[id], state.leader != -1, liveBrokers.contains(state.leader),
                  assignments[id.topic]?.move(of: id.index) == nil,
                  case .success(let action) = electLeader(id, type: .preferred) else { return nil }
            return action
        }
    }

    /// A reassignment of one partition (nil target: cancel the one under
    /// way): the topic's assignment with the move begun, changed or undone.
    public func reassign(_ id: PartitionID, to target: [Int32]?) throws(ControllerError) -> TopicAssignment {
        guard var assignment = assignments[id.topic], Int(id.index) < assignment.replicas.count else { throw .unknownPartition(id) }
        let index = Int(id.index)
        let current = assignment.move(of: id.index)
        assignment.moves.removeAll { $0.partition == id.index }
        guard let target else {
            guard let current else { throw .noReassignmentInProgress(id) }
            assignment.replicas[index] = current.original
            return assignment
        }
        guard !target.isEmpty else { throw .invalidReplicaAssignment("the target replicas of \(id) are empty") }
        guard Set(target).count == target.count else { throw .invalidReplicaAssignment("the target replicas of \(id) name a broker twice") }
        if let unknown = target.first(where: { !liveBrokers.contains($0) }) {
            throw .invalidReplicaAssignment("broker \(unknown) is not registered in the cluster")
        }
        let original = current?.original ?? assignment.replicas[index]
        guard target != original else {
            assignment.replicas[index] = original
            return assignment
        }
        let move = PartitionMove(partition: id.index, original: original, target: target)
        assignment.moves.append(move)
        assignment.moves.sort { $0.partition < $1.partition }
        assignment.replicas[index] = move.replicas
        return assignment
    }

    /// Records that a write succeeded (the driver calls this after its compare-and-swap).
    public mutating func applied(_ action: Action) {
        switch action {
        case .writePartition(let id, _, let next): partitions[id] = next
        case .writeTopic(let assignment): assignments[assignment.name] = assignment
        }
    }
}
