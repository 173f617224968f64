import Coordination
import Foundation

/// A deleted topic's record (`deleted-topics/<id>`): its name and id.
public struct DeletedTopic: Codable, Sendable, Equatable {
    public var name: String
    public var topicID: String?

    public init(name: String, topicID: String?) {
        self.name = name
        self.topicID = topicID
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

    public init(membership: Membership, uncleanElection: Bool = false) {
        self.membership = membership
        controller = Controller(uncleanElection: uncleanElection)
    }

    var coordination: any Coordination { membership.coordination }
    var topicsPrefix: String { membership.root + "topics/" }
    var partitionsPrefix: String { membership.root + "partitions/" }

    func partitionKey(_ id: PartitionID) -> String { partitionsPrefix + "\(id.topic)/\(id.index)" }

    public var state: Controller { controller }

    /// Reads brokers, topics and partition records, and (`correct`) fixes
    /// what needs it (leaders that died while no controller ran). Returns
    /// the revision to watch from.
    @discardableResult
    public func load(correct: Bool = true) async throws -> Int64 {
        let (brokers, revision) = try await membership.liveBrokers()
        for broker in brokers.keys.sorted() { _ = controller.handle(.brokerRegistered(broker)) }
        for keyValue in try await coordination.list(prefix: topicsPrefix).keyValues {
            let assignment = try JSONDecoder().decode(TopicAssignment.self, from: Data(keyValue.value))
            _ = controller.handle(.topicObserved(assignment))
        }
        for keyValue in try await coordination.list(prefix: partitionsPrefix).keyValues {
            guard let id = partitionID(keyValue.key) else { continue }
            let record = try JSONDecoder().decode(PartitionState.self, from: Data(keyValue.value))
            revisions[id] = keyValue.modRevision
            let actions = controller.handle(.partitionObserved(id, record))
            if correct { try await apply(actions) }
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
        guard try await coordination.compareAndSwap(topicsPrefix + name, expected: 0, value: Array(encoded)) != nil else {
            throw CoordinationError.refused("topic \(name) already exists")
        }
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
    /// `deleted-topics/` naming its id, so a broker that was down deletes
    /// its replica when it returns; then the topic's record and its
    /// partitions' records. Every broker's watch deletes its replica.
    public func deleteTopic(_ name: String) async throws {
        guard let stored = try await coordination.get(topicsPrefix + name) else {
            throw CoordinationError.refused("topic \(name) does not exist")
        }
        let assignment = try JSONDecoder().decode(TopicAssignment.self, from: Data(stored.value))
        let tombstone = DeletedTopic(name: name, topicID: assignment.topicID)
        _ = try await coordination.put(membership.root + "deleted-topics/" + (assignment.topicID ?? "name-" + name), Array(try JSONEncoder().encode(tombstone)))
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

    /// Takes in one event and applies what it calls for.
    public func handle(_ event: Controller.Event) async throws {
        try await apply(controller.handle(event))
    }

    /// Follows broker registrations and expiries from `revision` until the
    /// watch ends or the task is cancelled.
    public func follow(fromRevision revision: Int64) async throws {
        for try await event in membership.brokerEvents(fromRevision: revision) {
            guard let event else { continue }
            try await handle(event)
        }
    }

    /// Follows topic and partition records written by others (topics
    /// created on other brokers, leaders' ISR changes) from `revision`.
    public func followRecords(fromRevision revision: Int64) async throws {
        for try await event in coordination.watch(prefix: membership.root, fromRevision: revision) {
            let key = event.keyValue.key
            if event.kind == .delete {
                if key.hasPrefix(topicsPrefix) { try await handle(.topicDeleted(String(key.dropFirst(topicsPrefix.count)))) }
                continue
            }
            if key.hasPrefix(topicsPrefix) {
                let assignment = try JSONDecoder().decode(TopicAssignment.self, from: Data(event.keyValue.value))
                try await handle(.topicObserved(assignment))
            } else if key.hasPrefix(partitionsPrefix), let id = partitionID(key) {
                guard event.keyValue.modRevision > (revisions[id] ?? 0) else { continue }
                revisions[id] = event.keyValue.modRevision
                let record = try JSONDecoder().decode(PartitionState.self, from: Data(event.keyValue.value))
                try await handle(.partitionObserved(id, record))
            }
        }
    }

    private func apply(_ actions: [Controller.Action]) async throws {
        for action in actions {
            guard case .writePartition(let id, let previous, let next) = action else { continue }
            let expected = previous == nil ? 0 : (revisions[id] ?? 0)
            let value = try JSONEncoder().encode(next)
            if let revision = try await coordination.compareAndSwap(partitionKey(id), expected: expected, value: Array(value)) {
                revisions[id] = revision
                controller.applied(action)
            } else if let current = try await coordination.get(partitionKey(id)) {
                // Lost a race (a leader changed its ISR first): decide again on what is there.
                revisions[id] = current.modRevision
                let record = try JSONDecoder().decode(PartitionState.self, from: Data(current.value))
                try await apply(controller.handle(.partitionObserved(id, record)))
            }
        }
    }

    /// A partition record as etcd holds it now.
    public func record(_ id: PartitionID) async throws -> PartitionState? {
        try await coordination.get(partitionKey(id)).map { try JSONDecoder().decode(PartitionState.self, from: Data($0.value)) }
    }
}
