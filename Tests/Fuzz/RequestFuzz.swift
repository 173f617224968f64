// libFuzzer target for the Kafka request decoder: a frame body as it
// arrives after the size prefix. Any bytes must decode or be refused with
// an error; never a crash, a hang or an allocation the input cannot pay for
// (array counts are checked against the bytes that remain).
//
// Compiled together with Sources/Core, Sources/KafkaWire and Sources/ChatWire
// (see run.sh).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var reader = ByteReader(Array(UnsafeBufferPointer(start: data, count: size)))
    guard let header = try? RequestHeader.decode(&reader) else { return 0 }
    // Postduif's chat APIs (ChatWire, compiled in for this target): no flexible versions.
    switch ChatApiKey(rawValue: header.apiKey) {
    case .conversationHistory: _ = try? ConversationHistoryRequest.decode(&reader, version: header.apiVersion)
    case .gatewayPoll: _ = try? GatewayPollRequest.decode(&reader, version: header.apiVersion)
    case nil: break
    }
    guard let api = ApiKey(rawValue: header.apiKey) else { return 0 }
    let version = header.apiVersion
    guard version >= 0 && version < 20 else { return 0 }
    if version >= api.firstFlexibleVersion {
        guard (try? reader.skipTaggedFields()) != nil else { return 0 }
    }
    switch api {
    case .apiVersions: _ = try? ApiVersionsRequest.decode(&reader, version: version)
    case .metadata: _ = try? MetadataRequest.decode(&reader, version: version)
    case .produce: _ = try? ProduceRequest.decode(&reader, version: version)
    case .fetch: _ = try? FetchRequest.decode(&reader, version: version)
    case .listOffsets: _ = try? ListOffsetsRequest.decode(&reader, version: version)
    case .createTopics: _ = try? CreateTopicsRequest.decode(&reader, version: version)
    case .deleteTopics: _ = try? DeleteTopicsRequest.decode(&reader, version: version)
    case .initProducerId: _ = try? InitProducerIdRequest.decode(&reader, version: version)
    case .findCoordinator: _ = try? FindCoordinatorRequest.decode(&reader, version: version)
    case .offsetForLeaderEpoch: _ = try? OffsetForLeaderEpochRequest.decode(&reader, version: version)
    case .joinGroup: _ = try? JoinGroupRequest.decode(&reader, version: version)
    case .syncGroup: _ = try? SyncGroupRequest.decode(&reader, version: version)
    case .heartbeat: _ = try? HeartbeatRequest.decode(&reader, version: version)
    case .leaveGroup: _ = try? LeaveGroupRequest.decode(&reader, version: version)
    case .offsetCommit: _ = try? OffsetCommitRequest.decode(&reader, version: version)
    case .offsetFetch: _ = try? OffsetFetchRequest.decode(&reader, version: version)
    case .describeGroups: _ = try? DescribeGroupsRequest.decode(&reader, version: version)
    case .saslHandshake: _ = try? SaslHandshakeRequest.decode(&reader, version: version)
    case .saslAuthenticate: _ = try? SaslAuthenticateRequest.decode(&reader, version: version)
    default: break
    }
    return 0
}
