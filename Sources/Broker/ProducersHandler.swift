import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// InitProducerId, FindCoordinator and OffsetForLeaderEpoch.
extension Broker {
    func initProducerID(_ request: InitProducerIdRequest) async -> InitProducerIdResponse {
        if let cluster, request.transactionalID == nil {
            do {
                return InitProducerIdResponse(errorCode: 0, producerID: try await cluster.allocateProducerID(), producerEpoch: 0)
            } catch {
                logger.error("cannot allocate a producer id block", metadata: ["error": "\(error)"])
                return InitProducerIdResponse(errorCode: ErrorCode.coordinatorNotAvailable.rawValue, producerID: -1, producerEpoch: -1)
            }
        }
        guard request.transactionalID == nil else {
            // Transactions are not supported; an idempotent producer sends no id.
            return InitProducerIdResponse(errorCode: ErrorCode.invalidRequest.rawValue, producerID: -1, producerEpoch: -1)
        }
        do {
            return InitProducerIdResponse(errorCode: 0, producerID: try store.allocateProducerID(), producerEpoch: 0)
        } catch {
            logger.error("cannot allocate a producer id", metadata: ["error": "\(error)"])
            return InitProducerIdResponse(errorCode: ErrorCode.kafkaStorageError.rawValue, producerID: -1, producerEpoch: -1)
        }
    }

    func findCoordinator(_ request: FindCoordinatorRequest, listener: Listener) -> FindCoordinatorResponse {
        guard request.keyType == 0 else {
            return FindCoordinatorResponse(errorCode: ErrorCode.coordinatorNotAvailable.rawValue, errorMessage: "transactions are not supported", nodeID: -1, host: "", port: -1)
        }
        if let cluster {
            // A group's coordinator is the leader of its partition of __consumer_offsets.
            func unavailable(_ why: String) -> FindCoordinatorResponse {
                FindCoordinatorResponse(errorCode: ErrorCode.coordinatorNotAvailable.rawValue, errorMessage: why, nodeID: -1, host: "", port: -1)
            }
            let snapshot = cluster.view.snapshot
            guard snapshot.assignments[OffsetsTopic.name] != nil else {
                cluster.ensureOffsetsTopic()
                return unavailable("\(OffsetsTopic.name) is being created")
            }
            let id = PartitionID(topic: OffsetsTopic.name, index: offsets.partition(for: request.key))
            guard let leader = snapshot.records[id]?.state.leader, leader >= 0, let address = snapshot.endpoints[leader]?.address(for: listener.name) else {
                return unavailable("\(id) has no leader")
            }
            let (host, port) = Self.hostAndPort(address) ?? ("", -1)
            return FindCoordinatorResponse(errorCode: 0, errorMessage: nil, nodeID: leader, host: host, port: port)
        }
        return FindCoordinatorResponse(errorCode: 0, errorMessage: nil, nodeID: configuration.nodeID, host: listener.advertisedHost, port: Int32(listener.advertisedPort))
    }

    func offsetForLeaderEpoch(_ request: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
        OffsetForLeaderEpochResponse(topics: request.topics.map { topic in
            .init(name: topic.name, partitions: topic.partitions.map { requested in
                guard let partition = try? store.partition(topic: topic.name, index: requested.index) else {
                    return .init(errorCode: ErrorCode.unknownTopicOrPartition.rawValue, index: requested.index, leaderEpoch: -1, endOffset: -1)
                }
                let current = partition.currentLeaderEpoch ?? leaderEpoch
                if requested.currentLeaderEpoch >= 0 {
                    if requested.currentLeaderEpoch < current { return .init(errorCode: ErrorCode.fencedLeaderEpoch.rawValue, index: requested.index, leaderEpoch: -1, endOffset: -1) }
                    if requested.currentLeaderEpoch > current { return .init(errorCode: ErrorCode.unknownLeaderEpoch.rawValue, index: requested.index, leaderEpoch: -1, endOffset: -1) }
                }
                guard let (epoch, end) = partition.endOffset(forLeaderEpoch: requested.leaderEpoch) else {
                    // Nothing appended yet: the current epoch ends at the (empty) log end.
                    return .init(errorCode: 0, index: requested.index, leaderEpoch: current, endOffset: partition.logEndOffset)
                }
                return .init(errorCode: 0, index: requested.index, leaderEpoch: epoch, endOffset: end)
            })
        })
    }
}
