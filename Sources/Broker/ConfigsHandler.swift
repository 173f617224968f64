import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// DescribeConfigs: topic and broker settings as Kafka tools name them.
extension Broker {
    /// Topic settings (resource type 2) and this node's settings (type 4),
    /// as names Kafka tools know.
    func describeConfigs(_ request: DescribeConfigsRequest) -> DescribeConfigsResponse {
        DescribeConfigsResponse(results: request.resources.map { resource in
            var configs: [DescribeConfigsResponse.Config]
            switch resource.type {
            case 2:
                guard let topic = store.topic(named: resource.name) else {
                    return .init(errorCode: ErrorCode.unknownTopicOrPartition.rawValue, errorMessage: "topic \(resource.name) does not exist", resourceType: 2, resourceName: resource.name, configs: [])
                }
                let settings = topic.configuration
                let defaults = topicDefaults(name: topic.name, partitionCount: settings.partitionCount)
                func milliseconds(_ duration: Duration?) -> String {
                    guard let duration else { return "-1" }
                    let (seconds, attoseconds) = duration.components
                    return String(seconds * 1000 + attoseconds / 1_000_000_000_000_000)
                }
                configs = [
                    .init(name: "retention.ms", value: milliseconds(settings.retentionTime), readOnly: false, isDefault: settings.retentionTime == defaults.retentionTime),
                    .init(name: "retention.bytes", value: String(settings.retentionBytes ?? -1), readOnly: false, isDefault: settings.retentionBytes == defaults.retentionBytes),
                    .init(name: "max.message.bytes", value: String(settings.batchBytesMax), readOnly: false, isDefault: settings.batchBytesMax == defaults.batchBytesMax),
                    .init(name: "cleanup.policy", value: "delete", readOnly: true, isDefault: true),
                    .init(name: "compression.type", value: "producer", readOnly: true, isDefault: true),
                    .init(name: "message.timestamp.type", value: "CreateTime", readOnly: true, isDefault: true),
                    .init(name: "postduif.conversation.index", value: String(settings.conversationIndex), readOnly: false, isDefault: settings.conversationIndex == defaults.conversationIndex),
                ]
            case 4:
                configs = [
                    .init(name: "broker.id", value: String(configuration.nodeID), readOnly: true, isDefault: false),
                    .init(name: "num.partitions", value: String(configuration.defaultPartitionCount), readOnly: true, isDefault: false),
                    .init(name: "auto.create.topics.enable", value: String(configuration.autoCreateTopics), readOnly: true, isDefault: false),
                    .init(name: "log.dirs", value: configuration.dataDirectory, readOnly: true, isDefault: false),
                    .init(name: "postduif.durability", value: configuration.durability.rawValue, readOnly: true, isDefault: false),
                ]
            default:
                return .init(errorCode: ErrorCode.invalidRequest.rawValue, errorMessage: "resource type \(resource.type) is not described", resourceType: resource.type, resourceName: resource.name, configs: [])
            }
            if let keys = resource.keys { configs = configs.filter { keys.contains($0.name) } }
            return .init(errorCode: 0, errorMessage: nil, resourceType: resource.type, resourceName: resource.name, configs: configs)
        })
    }
}
