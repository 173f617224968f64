import KafkaWire

/// The APIs and versions this broker advertises in ApiVersions. Each one is
/// implemented and tested against real clients (Docs/compatibility.md):
/// librdkafka derives features from this list, so nothing unimplemented
/// may appear here.
enum SupportedAPIs {
    static let ranges: [ApiKey: ClosedRange<Int16>] = [
        // v0-2 are advertised but answered with UNSUPPORTED_VERSION: librdkafka
        // before 2.11.1 turns compression on only when Produce v0 is listed.
        .produce: 0...8,
        .fetch: 4...11,
        .listOffsets: 1...5,
        .metadata: 0...8,
        .findCoordinator: 0...2,
        .apiVersions: 0...4,
        .createTopics: 0...4,
        .deleteTopics: 0...3,
        .deleteRecords: 0...2,
        .createPartitions: 0...3,
        .deleteGroups: 0...2,
        .offsetDelete: 0...0,
        .describeLogDirs: 1...4,
        .describeCluster: 0...1,
        .describeProducers: 0...0,
        .electLeaders: 0...2,
        .alterPartitionReassignments: 0...0,
        .listPartitionReassignments: 0...0,
        .initProducerId: 0...1,
        .offsetForLeaderEpoch: 2...3,
        .joinGroup: 0...5,
        .syncGroup: 0...3,
        .heartbeat: 0...3,
        .leaveGroup: 0...2,
        .offsetCommit: 0...7,
        .offsetFetch: 0...5,
        .describeGroups: 0...4,
        .listGroups: 0...2,
        .describeConfigs: 0...4,
        .alterConfigs: 0...1,
        .incrementalAlterConfigs: 0...1,
        .describeAcls: 0...3,
        .createAcls: 0...3,
        .deleteAcls: 0...3,
    ]

    /// SaslHandshake v1 then SaslAuthenticate is what every client uses;
    /// v0 is listed because librdkafka 2.0.2 requires it in the range.
    static let saslRanges: [ApiKey: ClosedRange<Int16>] = [.saslHandshake: 0...1, .saslAuthenticate: 0...1]

    static let rangesWithSASL = ranges.merging(saslRanges) { first, _ in first }

    static func ranges(sasl: Bool) -> [ApiKey: ClosedRange<Int16>] {
        sasl ? rangesWithSASL : ranges
    }

    /// Produce versions listed for old clients' feature detection but refused.
    static let produceRefusedVersions: ClosedRange<Int16> = 0...2

    static func advertised(sasl: Bool) -> [ApiVersionRange] {
        let all = ranges(sasl: sasl)
        return all.keys.sorted { $0.rawValue < $1.rawValue }.map { key in
            ApiVersionRange(apiKey: key.rawValue, minVersion: all[key]!.lowerBound, maxVersion: all[key]!.upperBound)
        }
    }

    static func supports(_ key: ApiKey, version: Int16) -> Bool {
        ranges[key]?.contains(version) ?? false
    }
}
