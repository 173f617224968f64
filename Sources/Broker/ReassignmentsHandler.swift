import Cluster
import KafkaWire
import LogStore

/// ElectLeaders, AlterPartitionReassignments and ListPartitionReassignments.
/// In a cluster any broker takes them: the changes are compare-and-swap
/// writes to etcd that the controller carries through. A single node leads
/// every partition of its own and has nowhere to move one.
extension Broker {
    /// ElectLeaders: a leader per partition, preferred or unclean; every
    /// partition when `topics` is nil (then only the ones elected or refused
    /// for another reason than "not needed" are reported, as Kafka does).
    func electLeaders(_ request: ElectLeadersRequest, version: Int16) async -> ElectLeadersResponse {
        guard let type = Controller.ElectionType(rawValue: version >= 1 ? request.electionType : 0) else {
            return ElectLeadersResponse(errorCode: ErrorCode.invalidRequest.rawValue, topics: [])
        }
        let everything = request.topics == nil
        let ids = request.topics.map { topics in
            topics.flatMap { topic in topic.partitions.map { PartitionID(topic: topic.name, index: $0) } }
        } ?? knownPartitions()
        var outcomes: [PartitionID: Controller.ElectionRefusal?] = [:]
        if let cluster {
            do {
                outcomes = try await cluster.electLeaders(ids, type: type)
            } catch {
                logger.warning("ElectLeaders failed", metadata: ["error": "\(error)"])
                let failed = ids.map { ($0, PartitionOutcome(index: $0.index, errorCode: ErrorCode.requestTimedOut.rawValue, errorMessage: "the cluster's store did not answer: \(error)")) }
                return ElectLeadersResponse(topics: Self.byTopic(failed))
            }
        } else {
            for id in ids { outcomes[id] = .some((try? store.partition(topic: id.topic, index: id.index)) == nil ? .unknownPartition : .notNeeded) }
        }
        let answered = ids.compactMap { id -> (PartitionID, PartitionOutcome)? in
            let refusal = outcomes[id] ?? .some(.unknownPartition)
            if everything && refusal == .notNeeded { return nil }
            if let refusal {
                let (code, message): (ErrorCode, String) = switch refusal {
                case .notNeeded: (.electionNotNeeded, "the preferred replica leads already")
                case .preferredLeaderNotAvailable: (.preferredLeaderNotAvailable, "the preferred replica is not alive and in sync")
                case .eligibleLeadersNotAvailable: (.eligibleLeadersNotAvailable, "no live replica to elect")
                case .unknownPartition: (.unknownTopicOrPartition, "no such partition")
                }
                return (id, PartitionOutcome(index: id.index, errorCode: code.rawValue, errorMessage: message))
            }
            logger.info("elected a leader", metadata: ["partition": "\(id)", "election": "\(type)"])
            return (id, PartitionOutcome(index: id.index))
        }
        return ElectLeadersResponse(topics: Self.byTopic(answered))
    }

    /// AlterPartitionReassignments: each partition's move begins (or is
    /// replaced, or cancelled with a null target).
    func alterPartitionReassignments(_ request: AlterPartitionReassignmentsRequest) async -> AlterPartitionReassignmentsResponse {
        let requested = request.topics.flatMap { topic in topic.partitions.map { (PartitionID(topic: topic.name, index: $0.index), $0.replicas) } }
        var refused: [PartitionID: ControllerError] = [:]
        if let cluster {
            do {
                refused = try await cluster.reassign(Dictionary(requested, uniquingKeysWith: { _, last in last }))
            } catch {
                logger.warning("AlterPartitionReassignments failed", metadata: ["error": "\(error)"])
                return AlterPartitionReassignmentsResponse(errorCode: ErrorCode.requestTimedOut.rawValue, errorMessage: "the cluster's store did not answer: \(error)", topics: [])
            }
        } else {
            for (id, target) in requested {
                if (try? store.partition(topic: id.topic, index: id.index)) == nil {
                    refused[id] = .unknownPartition(id)
                } else if target == nil {
                    refused[id] = .noReassignmentInProgress(id)
                } else if target != [configuration.nodeID] {
                    refused[id] = .invalidReplicaAssignment("a single node has only broker \(configuration.nodeID)")
                }
            }
        }
        let answered = requested.map { id, target -> (PartitionID, PartitionOutcome) in
            guard let error = refused[id] else {
                logger.info("reassignment", metadata: ["partition": "\(id)", "target": "\(target.map { "\($0)" } ?? "cancelled")"])
                return (id, PartitionOutcome(index: id.index))
            }
            let code: ErrorCode = switch error {
            case .unknownPartition: .unknownTopicOrPartition
            case .noReassignmentInProgress: .noReassignmentInProgress
            default: .invalidReplicaAssignment
            }
            return (id, PartitionOutcome(index: id.index, errorCode: code.rawValue, errorMessage: error.description))
        }
        return AlterPartitionReassignmentsResponse(topics: Self.byTopic(answered))
    }

    /// ListPartitionReassignments: the moves under way (of the named
    /// partitions, or all), with each one's adding and removing replicas.
    func listPartitionReassignments(_ request: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
        let wanted = request.topics.map { Set($0.flatMap { topic in topic.partitions.map { PartitionID(topic: topic.name, index: $0) } }) }
        let assignments = cluster?.view.snapshot.assignments ?? [:]
        let moving = assignments.values.flatMap { assignment in
            assignment.moves.map { (PartitionID(topic: assignment.name, index: $0.partition), $0) }
        }.filter { wanted?.contains($0.0) ?? true }
        return ListPartitionReassignmentsResponse(topics: Self.byTopic(moving.map { id, move in
            (id, ListPartitionReassignmentsResponse.Partition(index: id.index, replicas: move.replicas, adding: move.adding, removing: move.removing))
        }))
    }

    /// Every partition this broker knows of: the cluster's, or its own.
    private func knownPartitions() -> [PartitionID] {
        if let cluster { return cluster.view.snapshot.records.keys.sorted() }
        return store.topicDescriptors.flatMap { topic in (0..<topic.configuration.partitionCount).map { PartitionID(topic: topic.name, index: $0) } }
    }

    /// Answers grouped by topic, topics and partitions in order.
    static func byTopic<Answer>(_ answers: [(PartitionID, Answer)]) -> [TopicPartitions<Answer>] {
        Dictionary(grouping: answers, by: \.0.topic).sorted { $0.key < $1.key }.map { topic, entries in
            TopicPartitions(name: topic, partitions: entries.sorted { $0.0.index < $1.0.index }.map(\.1))
        }
    }
}
