import KafkaWire

extension KafkaClientConnection {
    /// Each partition's leader (`host:port`) from Metadata v8, retried every
    /// 100 ms while a partition has none (a topic just made, a failover);
    /// nil when that does not settle within `attempts`.
    public func partitionLeaders(of topic: String, attempts: Int = 100) async throws -> [Int32: String]? {
        for _ in 0..<max(attempts, 1) {
            var reader = try await request(.metadata, version: 8) { writer in
                MetadataRequest(topics: [topic], allowAutoTopicCreation: false).encode(&writer, version: 8)
            }
            let response = try MetadataResponse.decode(&reader, version: 8)
            let brokers = Dictionary(uniqueKeysWithValues: response.brokers.map { ($0.nodeID, "\($0.host):\($0.port)") })
            if let found = response.topics.first(where: { $0.name == topic }), found.errorCode == 0, !found.partitions.isEmpty {
                var leaders: [Int32: String] = [:]
                for partition in found.partitions {
                    if let address = brokers[partition.leaderID] { leaders[partition.index] = address }
                }
                if leaders.count == found.partitions.count { return leaders }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }
}
