import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// The one place log store errors become Kafka error codes.
extension Broker {
    /// The Kafka error code for a log store error: mapped once, here.
    public static func errorCode(for error: LogStoreError) -> ErrorCode {
        switch error.code {
        case .batchRefused(let reason): ErrorCode(rawValue: reason.kafkaErrorCode) ?? .invalidRecord
        case .outOfOrderSequence: .outOfOrderSequenceNumber
        case .producerFenced: .invalidProducerEpoch
        case .unknownTopic, .unknownPartition: .unknownTopicOrPartition
        case .offsetOutOfRange: .offsetOutOfRange
        case .staleLeaderEpoch: .fencedLeaderEpoch
        case .replicaFenced: .notLeaderOrFollower
        case .storage, .io, .storageFailed, .closed: .kafkaStorageError
        case .corrupt: .corruptMessage
        case .topicAlreadyExists: .topicAlreadyExists
        case .invalidTopicName: .invalidTopicException
        case .invalidConfiguration: .invalidConfig
        }
    }
}
