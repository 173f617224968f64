import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// CreateTopics and DeleteTopics, and how topic configs become a TopicConfiguration.
extension Broker {
    func createTopics(_ request: CreateTopicsRequest) async -> CreateTopicsResponse {
        if let cluster {
            var results: [CreateTopicsResponse.Result] = []
            for topic in request.topics {
                do {
                    let local = try topicConfiguration(name: topic.name, partitionCount: topic.partitionCount == -1 ? configuration.defaultPartitionCount : topic.partitionCount,
                                                       configs: topic.configs)
                    guard topic.assignmentsCount == 0 else { throw TopicRequestError(code: .invalidReplicaAssignment, message: "manual replica assignment is not supported") }
                    if !request.validateOnly {
                        var configs: [String: String] = [:]
                        for (name, value) in topic.configs { if let value { configs[name] = value } }
                        _ = try await cluster.createTopic(topic.name, partitionCount: Int(local.partitionCount), replicationFactor: Int(topic.replicationFactor), configs: configs)
                    }
                    results.append(.init(name: topic.name, errorCode: 0, errorMessage: nil))
                } catch let error as TopicRequestError {
                    results.append(.init(name: topic.name, errorCode: error.code.rawValue, errorMessage: error.message))
                } catch let error as ControllerError {
                    results.append(.init(name: topic.name, errorCode: ErrorCode.invalidReplicationFactor.rawValue, errorMessage: error.description))
                } catch CoordinationError.refused(let message) where message.contains("already exists") {
                    results.append(.init(name: topic.name, errorCode: ErrorCode.topicAlreadyExists.rawValue, errorMessage: message))
                } catch {
                    logger.warning("creating a topic in the cluster failed", metadata: ["topic": "\(topic.name)", "error": "\(error)"])
                    results.append(.init(name: topic.name, errorCode: ErrorCode.unknownServerError.rawValue, errorMessage: "\(error)"))
                }
            }
            return CreateTopicsResponse(topics: results)
        }
        return CreateTopicsResponse(topics: request.topics.map { topic in
            do {
                let configuration = try topicConfiguration(topic)
                if request.validateOnly {
                    if store.topic(named: topic.name) != nil { return .init(name: topic.name, errorCode: ErrorCode.topicAlreadyExists.rawValue, errorMessage: "topic \(topic.name) already exists") }
                } else {
                    try store.createTopic(topic.name, configuration: configuration)
                    logger.info("created topic", metadata: ["topic": "\(topic.name)", "partitions": "\(configuration.partitionCount)", "conversationIndex": "\(configuration.conversationIndex)"])
                }
                return .init(name: topic.name, errorCode: 0, errorMessage: nil)
            } catch let error as LogStoreError {
                return .init(name: topic.name, errorCode: Self.errorCode(for: error).rawValue, errorMessage: error.message)
            } catch let error as TopicRequestError {
                return .init(name: topic.name, errorCode: error.code.rawValue, errorMessage: error.message)
            } catch {
                return .init(name: topic.name, errorCode: ErrorCode.unknownServerError.rawValue, errorMessage: "\(error)")
            }
        })
    }

    struct TopicRequestError: Error {
        var code: ErrorCode
        var message: String
    }

    /// A topic's configuration from CreateTopics: the count (-1 for the
    /// default), a replication factor a single node can honour, and the
    /// topic configs Postduif understands. Anything else is refused rather
    /// than ignored.
    func topicConfiguration(_ topic: CreateTopicsRequest.Topic) throws -> TopicConfiguration {
        let count = topic.partitionCount == -1 ? configuration.defaultPartitionCount : topic.partitionCount
        guard topic.replicationFactor == 1 || topic.replicationFactor == -1 else {
            throw TopicRequestError(code: .invalidReplicationFactor, message: "replication factor \(topic.replicationFactor): this single node holds one replica")
        }
        guard topic.assignmentsCount == 0 else { throw TopicRequestError(code: .invalidReplicaAssignment, message: "manual replica assignment is not supported") }
        return try topicConfiguration(name: topic.name, partitionCount: count, configs: topic.configs)
    }

    /// A topic's local configuration from its partition count and configs
    /// (also how each broker of a cluster makes its replica of a topic).
    /// Anything unknown or invalid is refused with INVALID_CONFIG.
    func topicConfiguration(name: String, partitionCount count: Int32, configs: [(String, String?)]) throws -> TopicConfiguration {
        guard count >= 1 else { throw TopicRequestError(code: .invalidPartitions, message: "partition count \(count) must be positive") }
        var overrides: [String: String] = [:]
        for (name, value) in configs { if let value { overrides[name] = value } }
        return try topicDefaults.configuration(name: name, partitionCount: count, overrides: overrides,
                                               conversationIndexed: configuration.conversationIndexedTopics.contains(name))
    }

    func deleteTopics(_ request: DeleteTopicsRequest) async -> DeleteTopicsResponse {
        if let cluster {
            // The cluster's records go; every broker's watch deletes its replica.
            var results: [(name: String, errorCode: Int16)] = []
            for name in request.topicNames {
                do {
                    try await cluster.deleteTopic(name)
                    logger.info("deleted topic from the cluster", metadata: ["topic": "\(name)"])
                    results.append((name, 0))
                } catch CoordinationError.refused(let reason) where reason.contains("does not exist") {
                    results.append((name, ErrorCode.unknownTopicOrPartition.rawValue))
                } catch {
                    logger.warning("cannot delete a topic", metadata: ["topic": "\(name)", "error": "\(error)"])
                    results.append((name, ErrorCode.requestTimedOut.rawValue))
                }
            }
            return DeleteTopicsResponse(results: results)
        }
        return DeleteTopicsResponse(results: request.topicNames.map { name in
            do {
                try store.deleteTopic(name)
                logger.info("deleted topic", metadata: ["topic": "\(name)"])
                return (name, 0)
            } catch let error as LogStoreError {
                return (name, Self.errorCode(for: error).rawValue)
            } catch {
                return (name, ErrorCode.unknownServerError.rawValue)
            }
        })
    }

    /// A new topic's configuration with no configs of its own (auto-creation).
    func defaultConfiguration(name: String, partitionCount: Int32) -> TopicConfiguration {
        // The defaults were checked when they were set; should they fail
        // anyway, the built-in settings are the safe ones.
        (try? topicConfiguration(name: name, partitionCount: partitionCount, configs: []))
            ?? TopicConfiguration(partitionCount: partitionCount, conversationIndex: configuration.conversationIndexedTopics.contains(name))
    }
}
