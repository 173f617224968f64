import Coordination
import Foundation

/// A deleted topic's record (`deleted-topics/<id>`): its name and id.
public struct DeletedTopic: Codable, Sendable, Equatable {
    public var name: String
    public var topicID: String?
    /// The brokers that held a replica when it was deleted. Each says when
    /// its replica is gone (`deleted-topic-replicas/<id>/<broker>`); once
    /// all have, the controller removes the record. Nil in records made
    /// before holders were recorded (they stay).
    public var holders: [Int32]?
    /// The etcd lease the record and the holders' words are attached to:
    /// it ends `--deleted-topic-retention-ms` after the deletion, so the
    /// record of a topic whose holder never returns goes too.
    public var lease: Int64?

    public init(name: String, topicID: String?, holders: [Int32]? = nil, lease: Int64? = nil) {
        self.name = name
        self.topicID = topicID
        self.holders = holders
        self.lease = lease
    }

    /// The key under `deleted-topics/` (and `deleted-topic-replicas/`).
    public static func key(name: String, topicID: String?) -> String {
        topicID ?? "name-" + name
    }
}

/// Runs the `Controller` state machine against the coordination store:
/// feeds it what etcd holds and how it changes, and applies its actions as
/// compare-and-swap writes. A write that loses a race (another writer
/// changed the record first) re-reads the record and lets the controller
/// decide again.
public actor ControllerDriver {
    public let membership: Membership
    private var controller: Controller
    /// The modRevision of each partition record as last read or written.
    private var revisions: [PartitionID: Int64] = [:]
    /// The modRevision of each topic record as last read or written.
    private var topicRevisions: [String: Int64] = [:]
    /// The etcd revision of the last reassignment or election this driver
    /// wrote: the broker that took the request waits for its own view to
    /// reach it, so what it answers next already shows the change.
    public private(set) var lastWrittenRevision: Int64 = 0

    public init(membership: Membership, uncleanElection: Bool = false) {
        self.membership = membership
        controller = Controller(uncleanElection: uncleanElection)
    }

    var coordination: any Coordination { membership.coordination }
    var topicsPrefix: String { membership.root + "topics/" }
    var deletedTopicsPrefix: String { membership.root + "deleted-topics/" }
    var deletedReplicasPrefix: String { membership.root + "deleted-topic-replicas/" }
    var partitionsPrefix: String { membership.root + "partitions/" }
    var shuttingDownPrefix: String { membership.shuttingDownPrefix }

    func partitionKey(_ id: PartitionID) -> String { partitionsPrefix + "\(id.topic)/\(id.index)" }

    public var state: Controller { controller }

    /// Reads brokers, topics and partition records, and (`correct`) fixes
    /// what needs it (leaders that died while no controller ran). Returns
    /// the revision to watch from.
    ///
    /// One read of the whole cluster, at one revision: brokers read before
    /// the records (at an older revision) would leave out a broker that
    /// registered in between, and a record naming it as leader would look
    /// like one whose leader died.
    @discardableResult
    public func load(correct: Bool = true) async throws -> Int64 {
        let (keyValues, revision) = try await coordination.list(prefix: membership.root)
        var brokers: [Int32] = []
        var shuttingDown: [Int32] = []
        var topics: [TopicAssignment] = []
        var records: [(PartitionID, PartitionState, Int64)] = []
        for keyValue in keyValues {
            let key = keyValue.key
            if key.hasPrefix(membership.brokersPrefix) {
                guard let id = Int32(key.dropFirst(membership.brokersPrefix.count)) else { continue }
                controller.racks[id] = BrokerEndpoints(registration: keyValue.value).rack
                brokers.append(id)
            } else if key.hasPrefix(shuttingDownPrefix) {
                if let id = Int32(key.dropFirst(shuttingDownPrefix.count)) { shuttingDown.append(id) }
            } else if key.hasPrefix(topicsPrefix) {
                let assignment = try JSONDecoder().decode(TopicAssignment.self, from: Data(keyValue.value))
                topicRevisions[assignment.name] = keyValue.modRevision
                topics.append(assignment)
            } else if key.hasPrefix(partitionsPrefix), let id = partitionID(key) {
                records.append((id, try JSONDecoder().decode(PartitionState.self, from: Data(keyValue.value)), keyValue.modRevision))
            }
        }
        for broker in brokers.sorted() { _ = controller.handle(.brokerRegistered(broker)) }
        for broker in shuttingDown { _ = controller.handle(.brokerShuttingDown(broker)) }
        for assignment in topics { _ = controller.handle(.topicObserved(assignment)) }
        for (id, record, modRevision) in records {
            revisions[id] = modRevision
            let actions = controller.handle(.partitionObserved(id, record))
            if correct { try await apply(actions) }
        }
        // Moves that ended while no controller ran end now.
        if correct {
            for topic in topics { try await apply(controller.handle(.topicObserved(controller.assignments[topic.name] ?? topic))) }
        }
        return revision
    }

    func partitionID(_ key: String) -> PartitionID? {
        let rest = key.dropFirst(partitionsPrefix.count)
        guard let slash = rest.lastIndex(of: "/"), let index = Int32(rest[rest.index(after: slash)...]) else { return nil }
        return PartitionID(topic: String(rest[..<slash]), index: index)
    }

    /// Creates a topic: its assignment, then each partition's first record.
    public func createTopic(_ name: String, partitionCount: Int, replicationFactor: Int, configs: [String: String] = [:]) async throws -> TopicAssignment {
        var assignment = try controller.assign(topic: name, partitionCount: partitionCount, replicationFactor: replicationFactor)
        assignment.configs = configs
        assignment.topicID = UUID().uuidString
        let encoded = try JSONEncoder().encode(assignment)
        guard let revision = try await coordination.compareAndSwap(topicsPrefix + name, expected: 0, value: Array(encoded)) else {
            throw CoordinationError.refused("topic \(name) already exists")
        }
        topicRevisions[name] = revision
        _ = controller.handle(.topicObserved(assignment))
        try await apply(controller.initialStates(for: assignment))
        return assignment
    }

    /// Grows a topic to `count` partitions (CreatePartitions): the new
    /// partitions' replicas are chosen as a new topic's would be, with the
    /// topic's replication factor, written by compare-and-swap on the
    /// topic's record; then their first partition records.
    public func addPartitions(_ name: String, count: Int, validateOnly: Bool = false) async throws -> TopicAssignment {
        while true {
            guard let stored = try await coordination.get(topicsPrefix + name) else {
                throw CoordinationError.refused("topic \(name) does not exist")
            }
            let current = try JSONDecoder().decode(TopicAssignment.self, from: Data(stored.value))
            guard count > current.replicas.count else {
                throw ControllerError.invalidPartitionCount("topic \(name) has \(current.replicas.count) partitions; a topic only grows")
            }
            let factor = current.replicas.first?.count ?? 1
            let grown = try controller.assign(topic: name, partitionCount: count, replicationFactor: factor)
            var updated = current
            updated.replicas += grown.replicas[current.replicas.count...]
            if validateOnly { return updated }
            guard try await coordination.compareAndSwap(topicsPrefix + name, expected: stored.modRevision, value: Array(try JSONEncoder().encode(updated))) != nil else {
                continue
            }
            _ = controller.handle(.topicObserved(updated))
            try await apply(controller.initialStates(for: updated).suffix(count - current.replicas.count))
            return updated
        }
    }

    /// Deletes a topic from the cluster (DeleteTopics): first a record in
    /// `deleted-topics/` naming its id and the brokers holding a replica,
    /// so a broker that was down deletes its replica when it returns; then
    /// the topic's record and its partitions' records. Every broker's watch
    /// deletes its replica. The record lives under a lease of `retention`:
    /// the controller revokes it once every holder has said its replica is
    /// gone (`pruneDeletedTopics`), else etcd ends it then.
    public func deleteTopic(_ name: String, retention: Duration = .seconds(7 * 24 * 3600)) async throws {
        guard let stored = try await coordination.get(topicsPrefix + name) else {
            throw CoordinationError.refused("topic \(name) does not exist")
        }
        let assignment = try JSONDecoder().decode(TopicAssignment.self, from: Data(stored.value))
        let lease = try await coordination.grantLease(ttlSeconds: max(1, Int64((retention + .milliseconds(999)) / .seconds(1))))
        let tombstone = DeletedTopic(name: name, topicID: assignment.topicID, holders: Set(assignment.replicas.joined()).sorted(), lease: lease)
        _ = try await coordination.put(deletedTopicsPrefix + DeletedTopic.key(name: name, topicID: assignment.topicID), Array(try JSONEncoder().encode(tombstone)), lease: lease)
        guard try await coordination.compareAndDelete(topicsPrefix + name, expected: stored.modRevision) else {
            throw CoordinationError.refused("topic \(name) changed while being deleted; try again")
        }
        for index in 0..<assignment.replicas.count {
            let key = partitionsPrefix + name + "/" + String(index)
            while let record = try await coordination.get(key) {
                if try await coordination.compareAndDelete(key, expected: record.modRevision) { break }
            }
        }
        _ = controller.handle(.topicDeleted(name))
    }

    /// Removes the record of each deleted topic whose holders have all said
    /// their replica is gone: revoking its lease removes the record and
    /// their words at once. Returns the keys removed.
    @discardableResult
    public func pruneDeletedTopics() async throws -> [String] {
        let (records, _) = try await coordination.list(prefix: deletedTopicsPrefix)
        let (words, _) = try await coordination.list(prefix: deletedReplicasPrefix)
        var gone: [String: Set<Int32>] = [:]
        for word in words {
            let rest = word.key.dropFirst(deletedReplicasPrefix.count)
            guard let slash = rest.lastIndex(of: "/"), let broker = Int32(rest[rest.index(after: slash)...]) else { continue }
            gone[String(rest[..<slash]), default: []].insert(broker)
        }
        var removed: [String] = []
        for record in records {
            let key = String(record.key.dropFirst(deletedTopicsPrefix.count))
            guard let tombstone = try? JSONDecoder().decode(DeletedTopic.self, from: Data(record.value)),
                  let holders = tombstone.holders, let lease = tombstone.lease,
                  Set(holders).isSubset(of: gone[key, default: []]) else { continue }
            do {
                try await coordination.revokeLease(lease)
            } catch CoordinationError.leaseNotFound {
                // Ended on its own meanwhile: the keys went with it.
            }
            removed.append(key)
        }
        return removed
    }

    /// Begins, changes or cancels (nil target) partition moves
    /// (AlterPartitionReassignments): the topic's record changes by
    /// compare-and-swap; the controller, watching it, ends each move once
    /// its target is in sync, here or after a failover. Per partition, the
    /// error that refused it.
    public func reassign(_ requested: [PartitionID: [Int32]?]) async throws -> [PartitionID: ControllerError] {
        var refused: [PartitionID: ControllerError] = [:]
        for (topic, entries) in Dictionary(grouping: requested, by: \.key.topic) {
            while true {
                guard let stored = try await coordination.get(topicsPrefix + topic) else {
                    for entry in entries { refused[entry.key] = .unknownPartition(entry.key) }
                    break
                }
                var assignment = try JSONDecoder().decode(TopicAssignment.self, from: Data(stored.value))
                topicRevisions[topic] = stored.modRevision
                _ = controller.handle(.topicObserved(assignment))
                for (id, target) in entries.sorted(by: { $0.key < $1.key }) {
                    do {
                        assignment = try controller.reassign(id, to: target)
                        _ = controller.handle(.topicObserved(assignment))
                    } catch {
                        refused[id] = error
                    }
                }
                guard let revision = try await coordination.compareAndSwap(topicsPrefix + topic, expected: stored.modRevision, value: Array(try JSONEncoder().encode(assignment))) else {
                    for entry in entries { refused[entry.key] = nil }
                    continue
                }
                topicRevisions[topic] = revision
                lastWrittenRevision = max(lastWrittenRevision, revision)
                break
            }
        }
        return refused
    }

    /// ElectLeaders: per partition, the refusal, or nil when elected.
    public func electLeaders(_ ids: [PartitionID], type: Controller.ElectionType) async throws -> [PartitionID: Controller.ElectionRefusal?] {
        var outcome: [PartitionID: Controller.ElectionRefusal?] = [:]
        for id in ids {
            switch controller.electLeader(id, type: type) {
            case .failure(let refusal):
                outcome[id] = .some(refusal)
            case .success(let action):
                guard case .writePartition(_, _, let next) = action else { continue }
                if let revision = try await coordination.compareAndSwap(partitionKey(id), expected: revisions[id] ?? 0, value: Array(try JSONEncoder().encode(next))) {
                    revisions[id] = revision
                    lastWrittenRevision = max(lastWrittenRevision, revision)
                    controller.applied(action)
                    outcome[id] = .some(nil)
                } else {
                    // The record changed meanwhile (an ISR change): the client retries.
                    outcome[id] = .some(.preferredLeaderNotAvailable)
                }
            }
        }
        return outcome
    }

    /// Kafka's automatic leader rebalance: preferred replicas back in sync lead again.
    public func rebalanceLeaders() async throws {
        try await apply(controller.preferredLeaderElections())
    }

    /// Takes in one event and applies what it calls for.
    public func handle(_ event: Controller.Event) async throws {
        try await apply(controller.handle(event))
    }

    /// Follows the cluster from `revision`: broker registrations and
    /// expiries, topic and partition records written by others (topics
    /// created on other brokers, leaders' ISR changes), shutdowns.
    ///
    /// One watch, so events come in etcd's order. With brokers on a watch
    /// of their own, a topic's first records could arrive before the
    /// registrations that came before them, and a partition whose leader
    /// had registered was elected away from it as if that leader had died
    /// (with no other replica known to be live: left without a leader).
    public func follow(fromRevision revision: Int64) async throws {
        for try await event in coordination.watch(prefix: membership.root, fromRevision: revision) {
            let key = event.keyValue.key
            if let brokerEvent = membership.brokerEvent(event) {
                if case .brokerRegistered(let id) = brokerEvent { controller.racks[id] = BrokerEndpoints(registration: event.keyValue.value).rack }
                try await handle(brokerEvent)
                continue
            }
            if key.hasPrefix(deletedReplicasPrefix) {
                // A holder's replica of a deleted topic is gone: the last one ends the record.
                if event.kind == .put { try await pruneDeletedTopics() }
                continue
            }
            if key.hasPrefix(shuttingDownPrefix), let id = Int32(key.dropFirst(shuttingDownPrefix.count)) {
                try await handle(event.kind == .delete ? .brokerShutdownEnded(id) : .brokerShuttingDown(id))
                continue
            }
            if event.kind == .delete {
                if key.hasPrefix(topicsPrefix) { try await handle(.topicDeleted(String(key.dropFirst(topicsPrefix.count)))) }
                continue
            }
            if key.hasPrefix(topicsPrefix) {
                let assignment = try JSONDecoder().decode(TopicAssignment.self, from: Data(event.keyValue.value))
                guard event.keyValue.modRevision > (topicRevisions[assignment.name] ?? 0) else { continue }
                topicRevisions[assignment.name] = event.keyValue.modRevision
                try await handle(.topicObserved(assignment))
            } else if key.hasPrefix(partitionsPrefix), let id = partitionID(key) {
                guard event.keyValue.modRevision > (revisions[id] ?? 0) else { continue }
                revisions[id] = event.keyValue.modRevision
                let record = try JSONDecoder().decode(PartitionState.self, from: Data(event.keyValue.value))
                try await handle(.partitionObserved(id, record))
            }
        }
    }

    /// Partition records written in one etcd transaction at most (etcd's
    /// `--max-txn-ops` default).
    static let transactionWritesMax = 128

    private func apply(_ actions: [Controller.Action]) async throws {
        // Each write compares with the revision of the record its decision
        // was made from, taken now, before the first await. This is an
        // actor: at every await it may take in other events, among them
        // the watch's newer records (a leader's ISR change), and a write
        // compared with the revision read at its own turn put a decision
        // made from the older record over the newer one. The fault
        // campaign found this (seed 20261207, round 687): an ISR of one
        // leader, written from a record two versions old, let it commit
        // two chat messages that no follower held, and they were lost at
        // the next handover (ADR 0032).
        var decidedAt = DecidedRevisions()
        for action in actions {
            switch action {
            case .writePartition(let id, _, _):
                if decidedAt.partitions[id] == nil { decidedAt.partitions[id] = revisions[id] ?? 0 }
            case .writeTopic(let assignment):
                // Likewise a topic write (a move's end) with its record's revision.
                if decidedAt.topics[assignment.name] == nil { decidedAt.topics[assignment.name] = topicRevisions[assignment.name] ?? 0 }
            }
        }
        // A partition write that lost its race makes the rest of its batch
        // stale: the topic write of an ending move waits for the new decision.
        var lost: Set<String> = []
        // Runs of partition writes (a broker's death: a leadership or an
        // ISR shrink for each of its partitions) go in transactions of up to
        // 128, one round trip each instead of one per record; a transaction
        // whose comparison fails (a leader changed its ISR meanwhile) is
        // written one record at a time, as below, each race decided again.
        var pending: [Controller.Action] = []
        for action in actions {
            guard case .writePartition(let id, _, _) = action else {
                try await applyTogether(pending, decidedAt: &decidedAt, lost: &lost)
                pending = []
                try await applyOne(action, decidedAt: &decidedAt, lost: &lost)
                continue
            }
            // One record per transaction (etcd refuses a key twice).
            if pending.count == Self.transactionWritesMax || pending.contains(where: { if case .writePartition(let other, _, _) = $0 { other == id } else { false } }) {
                try await applyTogether(pending, decidedAt: &decidedAt, lost: &lost)
                pending = []
            }
            pending.append(action)
        }
        try await applyTogether(pending, decidedAt: &decidedAt, lost: &lost)
    }

    /// Partition writes of distinct records in one transaction; one at a
    /// time when a comparison fails (or there is only one).
    private func applyTogether(_ pending: [Controller.Action], decidedAt: inout DecidedRevisions, lost: inout Set<String>) async throws {
        guard pending.count > 1 else {
            if let only = pending.first { try await applyOne(only, decidedAt: &decidedAt, lost: &lost) }
            return
        }
        var writes: [CompareAndSwap] = []
        for case .writePartition(let id, let previous, let next) in pending {
            writes.append(CompareAndSwap(partitionKey(id), expected: previous == nil ? 0 : (decidedAt.partitions[id] ?? 0), value: Array(try JSONEncoder().encode(next))))
        }
        if let revision = try await coordination.compareAndSwapAll(writes) {
            for action in pending {
                guard case .writePartition(let id, _, _) = action else { continue }
                revisions[id] = revision
                // A later action of this batch for the same record was decided after this one.
                decidedAt.partitions[id] = revision
                controller.applied(action)
            }
        } else {
            for action in pending { try await applyOne(action, decidedAt: &decidedAt, lost: &lost) }
        }
    }

    private func applyOne(_ action: Controller.Action, decidedAt: inout DecidedRevisions, lost: inout Set<String>) async throws {
        switch action {
        case .writePartition(let id, let previous, let next):
            let expected = previous == nil ? 0 : (decidedAt.partitions[id] ?? revisions[id] ?? 0)
            let value = try JSONEncoder().encode(next)
            if let revision = try await coordination.compareAndSwap(partitionKey(id), expected: expected, value: Array(value)) {
                revisions[id] = revision
                decidedAt.partitions[id] = revision
                controller.applied(action)
            } else if let current = try await coordination.get(partitionKey(id)) {
                // Lost a race (a leader changed its ISR first): decide again
                // on what is there, unless the watch has taken in that
                // record (or a newer one) meanwhile and decided already.
                lost.insert(id.topic)
                guard current.modRevision > (revisions[id] ?? 0) else { return }
                revisions[id] = current.modRevision
                let record = try JSONDecoder().decode(PartitionState.self, from: Data(current.value))
                try await apply(controller.handle(.partitionObserved(id, record)))
            }
        case .writeTopic(let assignment):
            guard !lost.contains(assignment.name) else { return }
            let key = topicsPrefix + assignment.name
            let expected = decidedAt.topics[assignment.name] ?? topicRevisions[assignment.name] ?? 0
            if let revision = try await coordination.compareAndSwap(key, expected: expected, value: Array(try JSONEncoder().encode(assignment))) {
                topicRevisions[assignment.name] = revision
                decidedAt.topics[assignment.name] = revision
                controller.applied(action)
            } else if let current = try await coordination.get(key) {
                // Changed meanwhile (its configs, another move): decide again,
                // unless the watch has taken that record in already.
                guard current.modRevision > (topicRevisions[assignment.name] ?? 0) else { return }
                topicRevisions[assignment.name] = current.modRevision
                try await apply(controller.handle(.topicObserved(try JSONDecoder().decode(TopicAssignment.self, from: Data(current.value)))))
            }
        }
    }

    /// A partition record as etcd holds it now.
    public func record(_ id: PartitionID) async throws -> PartitionState? {
        try await coordination.get(partitionKey(id)).map { try JSONDecoder().decode(PartitionState.self, from: Data($0.value)) }
    }
}

/// The etcd revisions of the records an `apply`'s actions were decided
/// from, taken before its first await.
struct DecidedRevisions {
    var partitions: [PartitionID: Int64] = [:]
    var topics: [String: Int64] = [:]
}
