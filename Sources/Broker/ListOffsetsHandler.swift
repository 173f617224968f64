import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// ListOffsets: earliest, latest and by-timestamp offsets.
extension Broker {
    func listOffsets(_ request: ListOffsetsRequest, version: Int16) -> ListOffsetsResponse {
        ListOffsetsResponse(topics: request.topics.map { topic in
            .init(name: topic.name, partitions: topic.partitions.map { requested in
                func answer(_ code: ErrorCode, timestamp: Int64 = -1, offset: Int64 = -1, epoch: Int32 = -1) -> ListOffsetsResponse.Partition {
                    .init(index: requested.index, errorCode: code.rawValue, timestamp: timestamp, offset: offset, leaderEpoch: epoch)
                }
                guard let partition = try? store.partition(topic: topic.name, index: requested.index) else {
                    return answer(.unknownTopicOrPartition)
                }
                let current = partition.currentLeaderEpoch ?? leaderEpoch
                if requested.currentLeaderEpoch >= 0 {
                    if requested.currentLeaderEpoch < current { return answer(.fencedLeaderEpoch) }
                    if requested.currentLeaderEpoch > current { return answer(.unknownLeaderEpoch) }
                }
                let highWatermark = partition.highWatermark
                switch requested.timestamp {
                case -1:
                    return answer(.none, offset: highWatermark, epoch: current)
                case -2:
                    let start = partition.logStartOffset
                    return answer(.none, offset: start, epoch: partition.leaderEpoch(containing: start) ?? current)
                case let timestamp where timestamp >= 0:
                    do {
                        guard let found = try partition.offset(forTimestamp: timestamp, maxOffset: highWatermark) else {
                            return answer(.none)
                        }
                        return answer(.none, timestamp: found.timestamp, offset: found.offset, epoch: partition.leaderEpoch(containing: found.offset) ?? current)
                    } catch let error as LogStoreError {
                        return answer(Self.errorCode(for: error))
                    } catch {
                        return answer(.unknownServerError)
                    }
                default:
                    return answer(.invalidRequest)
                }
            })
        })
    }
}
