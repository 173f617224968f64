import Foundation
import Testing

@testable import KafkaWire

/// Requests captured from kcat 1.7.1 and kafka-python 3.0.12 (see
/// Fixtures/capture_requests.py), named `<client>-<api>_request_v<N>.bin`.
/// Each must decode to the last byte, and encoding the decoded value must
/// give back the client's bytes exactly.
@Suite struct GoldenRequestTests {
    static let fixtures: [String] = {
        let directory = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/requests")
        return ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasSuffix(".bin") }.sorted()
    }()

    @Test func thereAreGoldenRequestsFromBothClients() {
        #expect(Self.fixtures.contains { $0.hasPrefix("kcat-") })
        #expect(Self.fixtures.contains { $0.hasPrefix("kafka-python-") })
        #expect(Self.fixtures.count >= 25)
    }

    @Test(arguments: fixtures)
    func decodesCompletelyAndReencodesToTheSameBytes(name: String) throws {
        let bytes = try fixture("requests/\(name)")
        var reader = ByteReader(bytes)
        let header = try RequestHeader.decode(&reader)
        let api = try #require(ApiKey(rawValue: header.apiKey))
        let version = header.apiVersion
        let flexible = version >= api.firstFlexibleVersion
        if flexible { try reader.skipTaggedFields() }
        var writer = ByteWriter()
        header.encode(&writer, flexible: flexible)
        switch api {
        case .apiVersions: try ApiVersionsRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .metadata: try MetadataRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .produce: try ProduceRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .fetch: try FetchRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .listOffsets: try ListOffsetsRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .createTopics: try CreateTopicsRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .deleteTopics: try DeleteTopicsRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .initProducerId: try InitProducerIdRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .findCoordinator: try FindCoordinatorRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .joinGroup: try JoinGroupRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .syncGroup: try SyncGroupRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .heartbeat: try HeartbeatRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .leaveGroup: try LeaveGroupRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .offsetCommit: try OffsetCommitRequest.decode(&reader, version: version).encode(&writer, version: version)
        case .offsetFetch: try OffsetFetchRequest.decode(&reader, version: version).encode(&writer, version: version)
        default:
            Issue.record("no decoder exercised for \(api)")
            return
        }
        #expect(reader.isAtEnd, "\(name): \(reader.remainingCount) bytes left undecoded")
        #expect(writer.bytes == bytes, "\(name): re-encoding differs from the client's bytes")
    }
}
