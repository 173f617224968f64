import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Security
import Synchronization

/// Why a connection must close: the bytes cannot be answered in Kafka's
/// protocol (an unknown API key, an unsupported version, a malformed
/// request). Kafka brokers close the connection in these cases too.
struct CloseConnection: Error, CustomStringConvertible {
    var reason: String
    var description: String { reason }
}

/// A request's answer: ready now, or (a Produce) finished once its writes
/// are durable. Framed; nil when the request gets no answer (acks=0).
enum StagedAnswer: Sendable {
    case ready([UInt8]?)
    case pending(@Sendable () async -> [UInt8]?)
}

/// What one connection has established: its peer, the listener it came
/// in on and who it is (from SASL or its certificate).
struct ClientSession: Sendable {
    var client: String
    /// The client's IP address, as ACLs and the SASL limits name hosts.
    var host: String
    var listener: Listener
    /// The user SASL authenticated.
    var authenticatedUser: String? = nil
    /// The user its client certificate names, once TLS's handshake is done.
    var certificateUser: String? = nil
    /// Code in the broker's own process (the embedded gateway): there is no
    /// one to authenticate, and the authorizer permits it as the broker.
    var inProcess = false
    /// The authorizer's answers for this connection (Authorization.swift).
    let decisions = AuthorizationCache()
    var sasl: SaslServer? = nil
    /// Set when the response must be the connection's last (a failed SASL exchange).
    var closeAfterResponse = false

    init(client: String, host: String, listener: Listener) {
        self.client = client
        self.host = host
        self.listener = listener
    }

    var requiresSASL: Bool { listener.securityProtocol.requiresSASL }

    /// Whether requests other than the SASL exchange may be answered.
    var isAuthenticated: Bool { !requiresSASL || authenticatedUser != nil }

    /// Who the connection acts as: SASL's user first, then the
    /// certificate's, else anonymous.
    var principal: Principal {
        if let user = authenticatedUser ?? certificateUser { return Principal(name: user) }
        return .anonymous
    }
}

extension Broker {
    /// Answers one request frame (without its size prefix). Returns the
    /// framed response, or nil when the request gets none (Produce acks=0).
    func handle(frame: [UInt8], client: String) async throws(CloseConnection) -> [UInt8]? {
        var session = ClientSession(client: client, host: client, listener: configuration.effectiveInterBrokerListener)
        return try await handle(frame: frame, session: &session)
    }

    func handle(frame: [UInt8], session: inout ClientSession) async throws(CloseConnection) -> [UInt8]? {
        switch try await stage(frame: frame, session: &session) {
        case .ready(let response): response
        case .pending(let finish): await finish()
        }
    }

    /// A frame's request header; a malformed one closes the connection.
    static func requestHeader(_ reader: inout ByteReader) throws(CloseConnection) -> RequestHeader {
        do {
            return try RequestHeader.decode(&reader)
        } catch {
            throw CloseConnection(reason: "malformed request header: \(error)")
        }
    }

    /// A Produce, staged without a task: checked and written on the
    /// caller's thread (a connection's event loop), its framed answer (nil
    /// for acks=0) through `done` once durable, or in a cluster once
    /// committed as its acks ask. False when the frame is anything else, or
    /// a version outside the supported range: `stage` it.
    func stageProduceDirect(frame: [UInt8], session: ClientSession, done: @escaping @Sendable ([UInt8]?) -> Void) throws(CloseConnection) -> Bool {
        guard frame.count >= 2, frame[0] == 0, frame[1] == UInt8(ApiKey.produce.rawValue) else { return false }
        var reader = ByteReader(frame)
        let header = try Self.requestHeader(&reader)
        if !session.isAuthenticated {
            throw CloseConnection(reason: "\(ApiKey.produce) before SASL authentication")
        }
        let version = header.apiVersion
        // A version outside the range is `stage`'s: it answers Kafka's old
        // versions with UNSUPPORTED_VERSION in their own schema.
        guard supportedAPIs(session)[.produce]?.contains(version) == true else { return false }
        let flexible = version >= ApiKey.produce.firstFlexibleVersion
        var request: ProduceRequest
        do {
            if flexible { try reader.skipTaggedFields() }
            request = try ProduceRequest.decode(&reader, version: version)
        } catch {
            throw CloseConnection(reason: "malformed \(ApiKey.produce) v\(version) request: \(error)")
        }
        let refused = authorizeProduce(&request, session)
        let started = ContinuousClock.now
        let correlationID = header.correlationID
        let acks = request.acks
        produceDirect(request, version: version) { [self] response in
            var response = response
            response.topics += refused
            metrics.recordRequest(.produce, duration: ContinuousClock.now - started)
            // acks=0 gets no answer, but its batches still count once durable.
            guard acks != 0 else { return done(nil) }
            var body = ByteWriter(capacity: 64)
            response.encode(&body, version: version)
            done(frameResponse(correlationID: correlationID, flexibleHeader: flexible, body: body.bytes))
        }
        return true
    }

    /// Answers one request frame, or, for a Produce, writes its batches and
    /// returns what finishes the answer once they are durable. The caller
    /// may stage the next Produce of the connection before finishing this
    /// one; it must send the answers in the order of the requests.
    func stage(frame: [UInt8], session: inout ClientSession) async throws(CloseConnection) -> StagedAnswer {
        let client = session.client
        var reader = ByteReader(frame)
        let header = try Self.requestHeader(&reader)
        if header.apiKey == EnvelopeRequest.apiKey {
            return try await stageEnvelope(header: header, reader: &reader, session: session)
        }
        let supportedAPIs = supportedAPIs(session)
        guard let api = ApiKey(rawValue: header.apiKey), supportedAPIs[api] != nil else {
            guard let registered = extensions.withLock({ $0[header.apiKey] }) else {
                throw CloseConnection(reason: "unknown or unsupported API key \(header.apiKey)")
            }
            if !session.isAuthenticated {
                throw CloseConnection(reason: "\(registered.api.name) before SASL authentication")
            }
            if let topic = registered.api.readsTopic, !permits(session, .read, .topic, topic) {
                throw CloseConnection(reason: "\(registered.api.name) refused: \(session.principal) may not Read topic \(topic)")
            }
            if let operation = registered.api.clusterOperation, !permitsCluster(session, operation) {
                throw CloseConnection(reason: "\(registered.api.name) refused: \(session.principal) may not \(operation) the cluster")
            }
            return try await stageExtension(registered, header: header, reader: &reader)
        }
        if !session.isAuthenticated && ![.apiVersions, .saslHandshake, .saslAuthenticate].contains(api) {
            throw CloseConnection(reason: "\(api) before SASL authentication")
        }
        let version = header.apiVersion
        let started = ContinuousClock.now
        // A staged Produce records its time when its answer is finished.
        var timed = true
        defer { if timed { metrics.recordRequest(api, duration: ContinuousClock.now - started) } }
        if api == .apiVersions && !SupportedAPIs.supports(api, version: version) {
            // KIP-511: answer an unknown ApiVersions version with error 35 in
            // a v0 body listing ApiVersions, so the client retries lower.
            var writer = ByteWriter()
            ApiVersionsResponse(errorCode: ErrorCode.unsupportedVersion.rawValue, apiKeys: [ApiVersionRange(apiKey: ApiKey.apiVersions.rawValue, minVersion: 0, maxVersion: SupportedAPIs.ranges[.apiVersions]!.upperBound)]).encode(&writer, version: 0)
            return .ready(frameResponse(correlationID: header.correlationID, flexibleHeader: false, body: writer.bytes))
        }
        if let served = supportedAPIs[api], !served.contains(version) {
            // A version Kafka defines, below the range or above it, is
            // answered in its own schema with UNSUPPORTED_VERSION; one
            // without a schema closes.
            let answer: [UInt8]?
            do {
                if version < served.lowerBound {
                    answer = try OldVersionAnswer.body(api, version: version, request: &reader)
                } else {
                    let message = "\(api) v\(version) is not supported: this broker serves v\(served.lowerBound) to v\(served.upperBound)"
                    answer = try NewerVersionAnswer.body(api, version: version, message: message, request: &reader)
                }
            } catch {
                throw CloseConnection(reason: "malformed \(api) v\(version) request: \(error)")
            }
            guard let answer else { throw CloseConnection(reason: "\(api) version \(version) is not supported") }
            logger.info("answered an unsupported version with UNSUPPORTED_VERSION", metadata: ["client": "\(client)", "api": "\(api)", "version": "\(version)"])
            return .ready(frameResponse(correlationID: header.correlationID, flexibleHeader: version >= api.firstFlexibleVersion, body: answer))
        }
        let flexible = version >= api.firstFlexibleVersion
        var body = ByteWriter(capacity: 256)
        do {
            if flexible { try reader.skipTaggedFields() }
            switch api {
            case .apiVersions:
                _ = try ApiVersionsRequest.decode(&reader, version: version)
                ApiVersionsResponse(errorCode: 0, apiKeys: SupportedAPIs.advertised(sasl: session.requiresSASL)).encode(&body, version: version)
            case .saslHandshake:
                let request = try SaslHandshakeRequest.decode(&reader, version: version)
                session.sasl = SaslServer(mechanism: request.mechanism, users: users)
                let code: ErrorCode = session.authenticatedUser != nil ? .illegalSaslState : (session.sasl == nil ? .unsupportedSaslMechanism : .none)
                SaslHandshakeResponse(errorCode: code.rawValue, mechanisms: SaslServer.mechanisms).encode(&body, version: version)
            case .saslAuthenticate:
                let request = try SaslAuthenticateRequest.decode(&reader, version: version)
                await authenticate(request, session: &session).encode(&body, version: version)
            case .metadata:
                var request = try MetadataRequest.decode(&reader, version: version)
                let (refused, hidden) = authorizeMetadata(&request, session)
                var response = await metadata(request, listener: session.listener)
                response.topics.removeAll { hidden($0.name) }
                response.topics += refused.map { .init(errorCode: ErrorCode.topicAuthorizationFailed.rawValue, name: $0, partitions: []) }
                response.encode(&body, version: version)
            case .produce:
                var request = try ProduceRequest.decode(&reader, version: version)
                let refused = authorizeProduce(&request, session)
                let finish = await produce(request, version: version)
                let acks = request.acks
                let correlationID = header.correlationID
                timed = false
                return .pending { [self] in
                    var response = await finish()
                    response.topics += refused
                    metrics.recordRequest(api, duration: ContinuousClock.now - started)
                    // acks=0 gets no answer, but its batches still count once durable.
                    guard acks != 0 else { return nil }
                    var body = ByteWriter(capacity: 64)
                    response.encode(&body, version: version)
                    return frameResponse(correlationID: correlationID, flexibleHeader: flexible, body: body.bytes)
                }
            case .fetch:
                var request = try FetchRequest.decode(&reader, version: version)
                let refused = authorizeFetch(&request, session)
                var response = await fetch(request, version: version)
                response.topics += refused
                response.encode(&body, version: version)
            case .listOffsets:
                var request = try ListOffsetsRequest.decode(&reader, version: version)
                let refused = authorizeListOffsets(&request, session)
                var response = listOffsets(request, version: version)
                response.topics += refused
                response.encode(&body, version: version)
            case .createTopics:
                var request = try CreateTopicsRequest.decode(&reader, version: version)
                let refused = refusedCreations(&request, session)
                var response = await createTopics(request)
                response.topics += refused
                response.encode(&body, version: version)
            case .deleteTopics:
                var request = try DeleteTopicsRequest.decode(&reader, version: version)
                let refused = refusedDeletions(&request, session)
                var response = await deleteTopics(request)
                response.results += refused
                response.encode(&body, version: version)
            case .initProducerId:
                let request = try InitProducerIdRequest.decode(&reader, version: version)
                let allowed = if let transactionalID = request.transactionalID { permits(session, .write, .transactionalId, transactionalID) } else { permitsIdempotence(session) }
                if allowed {
                    await initProducerID(request).encode(&body, version: version)
                } else {
                    let code: ErrorCode = request.transactionalID == nil ? .clusterAuthorizationFailed : .transactionalIdAuthorizationFailed
                    InitProducerIdResponse(errorCode: code.rawValue, producerID: -1, producerEpoch: -1).encode(&body, version: version)
                }
            case .findCoordinator:
                let request = try FindCoordinatorRequest.decode(&reader, version: version)
                let type: ResourceType = request.keyType == 1 ? .transactionalId : .group
                if permits(session, .describe, type, request.key) {
                    findCoordinator(request, listener: session.listener).encode(&body, version: version)
                } else {
                    let code: ErrorCode = type == .group ? .groupAuthorizationFailed : .transactionalIdAuthorizationFailed
                    FindCoordinatorResponse(errorCode: code.rawValue, errorMessage: "not authorized", nodeID: -1, host: "", port: -1).encode(&body, version: version)
                }
            case .offsetForLeaderEpoch:
                var request = try OffsetForLeaderEpochRequest.decode(&reader, version: version)
                let refused = authorizeOffsetForLeaderEpoch(&request, session)
                var response = offsetForLeaderEpoch(request)
                response.topics += refused
                response.encode(&body, version: version)
            case .createAcls:
                await createAcls(try CreateAclsRequest.decode(&reader, version: version), session).encode(&body, version: version)
            case .describeAcls:
                describeAcls(try DescribeAclsRequest.decode(&reader, version: version), session).encode(&body, version: version)
            case .deleteAcls:
                await deleteAcls(try DeleteAclsRequest.decode(&reader, version: version), session).encode(&body, version: version)
            case .joinGroup:
                let request = try JoinGroupRequest.decode(&reader, version: version)
                if let refused = groupRefusal(request.groupID, session) ?? coordinatorRefusal(request.groupID) {
                    JoinGroupResponse(errorCode: refused.rawValue, memberID: request.memberID).encode(&body, version: version)
                } else {
                    await groups.join(request, clientID: header.clientID ?? "", clientHost: client).encode(&body, version: version)
                }
            case .syncGroup:
                let request = try SyncGroupRequest.decode(&reader, version: version)
                if let refused = groupRefusal(request.groupID, session) ?? coordinatorRefusal(request.groupID) {
                    SyncGroupResponse(errorCode: refused.rawValue, assignment: []).encode(&body, version: version)
                } else {
                    await groups.sync(request).encode(&body, version: version)
                }
            case .heartbeat:
                let request = try HeartbeatRequest.decode(&reader, version: version)
                let code = if let refused = groupRefusal(request.groupID, session) ?? coordinatorRefusal(request.groupID) { refused } else { await groups.heartbeat(request) }
                ErrorOnlyResponse(errorCode: code.rawValue).encode(&body, version: version)
            case .leaveGroup:
                let request = try LeaveGroupRequest.decode(&reader, version: version)
                let code = if let refused = groupRefusal(request.groupID, session) ?? coordinatorRefusal(request.groupID) { refused } else { await groups.leave(request) }
                ErrorOnlyResponse(errorCode: code.rawValue).encode(&body, version: version)
            case .offsetCommit:
                var request = try OffsetCommitRequest.decode(&reader, version: version)
                let refused = authorizeOffsetCommit(&request, session)
                var response = await offsetCommit(request)
                response.topics += refused
                response.encode(&body, version: version)
            case .offsetFetch:
                let request = try OffsetFetchRequest.decode(&reader, version: version)
                if let refused = groupRefusal(request.groupID, session, .describe) {
                    var response = offsetFetch(OffsetFetchRequest(groupID: request.groupID, topics: []))
                    response.errorCode = refused.rawValue
                    response.encode(&body, version: version)
                } else {
                    var response = offsetFetch(request)
                    // Offsets of topics the principal may not describe are not told.
                    for position in response.topics.indices where !permits(session, .describe, .topic, response.topics[position].name) {
                        for index in response.topics[position].partitions.indices {
                            response.topics[position].partitions[index] = .init(
                                index: response.topics[position].partitions[index].index, offset: -1, leaderEpoch: -1, metadata: nil,
                                errorCode: ErrorCode.topicAuthorizationFailed.rawValue)
                        }
                    }
                    response.encode(&body, version: version)
                }
            case .describeGroups:
                let request = try DescribeGroupsRequest.decode(&reader, version: version)
                var described = await groups.describe(request.groups)
                for position in described.indices {
                    if let refused = groupRefusal(described[position].groupID, session, .describe) ?? coordinatorRefusal(described[position].groupID) {
                        described[position].errorCode = refused.rawValue
                    }
                }
                DescribeGroupsResponse(groups: described).encode(&body, version: version)
            case .describeConfigs:
                var request = try DescribeConfigsRequest.decode(&reader, version: version)
                // Topics (2) need DescribeConfigs on the topic, brokers (4) on the cluster.
                let refused = request.resources.filter { resource in
                    resource.type == 2 ? !permits(session, .describeConfigs, .topic, resource.name) : !permitsCluster(session, .describeConfigs)
                }
                request.resources.removeAll { refused.contains($0) }
                var response = describeConfigs(request)
                let code: (Int8) -> ErrorCode = { $0 == 2 ? .topicAuthorizationFailed : .clusterAuthorizationFailed }
                response.results += refused.map { DescribeConfigsResponse.Result(errorCode: code($0.type).rawValue, errorMessage: "not authorized", resourceType: $0.type, resourceName: $0.name, configs: []) }
                response.encode(&body, version: version)
            case .alterConfigs, .incrementalAlterConfigs:
                let incremental = api == .incrementalAlterConfigs
                var request = try AlterConfigsRequest.decode(&reader, version: version, incremental: incremental)
                // Topics need AlterConfigs on the topic, brokers on the cluster.
                let refused = request.resources.filter { resource in
                    resource.type == Self.resourceTopic ? !permits(session, .alterConfigs, .topic, resource.name) : !permitsCluster(session, .alterConfigs)
                }
                request.resources.removeAll { refused.contains($0) }
                var response = await alterConfigs(request)
                response.results += refused.map { resource in
                    let code: ErrorCode = resource.type == Self.resourceTopic ? .topicAuthorizationFailed : .clusterAuthorizationFailed
                    return .init(errorCode: code.rawValue, errorMessage: "not authorized", resourceType: resource.type, resourceName: resource.name)
                }
                response.encode(&body, version: version, incremental: incremental)
            case .deleteRecords:
                var request = try DeleteRecordsRequest.decode(&reader, version: version)
                // Delete on each topic, as Kafka asks.
                let refused = Set(request.topics.map(\.name).filter { !permits(session, .delete, .topic, $0) })
                let answered = request.topics.filter { refused.contains($0.name) }.map { topic in
                    TopicPartitions(name: topic.name, partitions: topic.partitions.map {
                        DeleteRecordsResponse.Partition(index: $0.index, lowWatermark: -1, errorCode: ErrorCode.topicAuthorizationFailed.rawValue)
                    })
                }
                request.topics.removeAll { refused.contains($0.name) }
                var response = deleteRecords(request)
                response.topics += answered
                response.encode(&body, version: version)
            case .createPartitions:
                var request = try CreatePartitionsRequest.decode(&reader, version: version)
                // Alter on each topic.
                let refused = Set(request.topics.map(\.name).filter { !permits(session, .alter, .topic, $0) })
                request.topics.removeAll { refused.contains($0.name) }
                var response = await createPartitions(request)
                response.results += refused.sorted().map { .init(name: $0, errorCode: ErrorCode.topicAuthorizationFailed.rawValue, errorMessage: "not authorized") }
                response.encode(&body, version: version, withMessages: true)
            case .deleteGroups:
                var request = try DeleteGroupsRequest.decode(&reader, version: version)
                // Delete on each group.
                let refused = Set(request.groupIDs.filter { !permits(session, .delete, .group, $0) })
                request.groupIDs.removeAll { refused.contains($0) }
                var response = await deleteGroups(request)
                response.results += refused.sorted().map { .init(name: $0, errorCode: ErrorCode.groupAuthorizationFailed.rawValue) }
                response.encode(&body, version: version, withMessages: false)
            case .offsetDelete:
                let request = try OffsetDeleteRequest.decode(&reader, version: version)
                // Delete on the group, then Read on each topic.
                if !permits(session, .delete, .group, request.groupID) {
                    OffsetDeleteResponse(errorCode: ErrorCode.groupAuthorizationFailed.rawValue, topics: []).encode(&body, version: version)
                } else {
                    var allowed = request
                    let refused = Set(request.topics.map(\.name).filter { !permits(session, .read, .topic, $0) })
                    allowed.topics.removeAll { refused.contains($0.name) }
                    var response = await offsetDelete(allowed)
                    response.topics += request.topics.filter { refused.contains($0.name) }.map { topic in
                        TopicPartitions(name: topic.name, partitions: topic.partitions.map { .init(index: $0, errorCode: ErrorCode.topicAuthorizationFailed.rawValue) })
                    }
                    response.encode(&body, version: version)
                }
            case .describeLogDirs:
                let request = try DescribeLogDirsRequest.decode(&reader, version: version)
                // Describe on the cluster, as Kafka asks.
                if permitsCluster(session, .describe) {
                    describeLogDirs(request).encode(&body, version: version)
                } else {
                    DescribeLogDirsResponse(errorCode: ErrorCode.clusterAuthorizationFailed.rawValue, logDirs: []).encode(&body, version: version)
                }
            case .describeCluster:
                let request = try DescribeClusterRequest.decode(&reader, version: version)
                var response = await describeCluster(listener: session.listener)
                response.endpointType = request.endpointType
                if request.endpointType != 1 {
                    response.errorCode = ErrorCode.invalidRequest.rawValue
                    response.errorMessage = "only broker endpoints are served"
                    response.brokers = []
                }
                response.encode(&body, version: version)
            case .electLeaders:
                let request = try ElectLeadersRequest.decode(&reader, version: version)
                // Alter on the cluster, as Kafka asks.
                if permitsCluster(session, .alter) {
                    await electLeaders(request, version: version).encode(&body, version: version)
                } else {
                    // v0 has no top-level code: the refusal goes in every partition.
                    let refused = (request.topics ?? []).map { topic in
                        TopicPartitions(name: topic.name, partitions: topic.partitions.map { PartitionOutcome(index: $0, errorCode: ErrorCode.clusterAuthorizationFailed.rawValue) })
                    }
                    ElectLeadersResponse(errorCode: ErrorCode.clusterAuthorizationFailed.rawValue, topics: version >= 1 ? [] : refused).encode(&body, version: version)
                }
            case .alterPartitionReassignments:
                let request = try AlterPartitionReassignmentsRequest.decode(&reader, version: version)
                // Alter on the cluster.
                if permitsCluster(session, .alter) {
                    await alterPartitionReassignments(request).encode(&body, version: version)
                } else {
                    AlterPartitionReassignmentsResponse(errorCode: ErrorCode.clusterAuthorizationFailed.rawValue, errorMessage: "not authorized", topics: []).encode(&body, version: version)
                }
            case .listPartitionReassignments:
                let request = try ListPartitionReassignmentsRequest.decode(&reader, version: version)
                // Describe on the cluster.
                if permitsCluster(session, .describe) {
                    listPartitionReassignments(request).encode(&body, version: version)
                } else {
                    ListPartitionReassignmentsResponse(errorCode: ErrorCode.clusterAuthorizationFailed.rawValue, errorMessage: "not authorized", topics: []).encode(&body, version: version)
                }
            case .describeProducers:
                var request = try DescribeProducersRequest.decode(&reader, version: version)
                // Read on each topic.
                let refused = Set(request.topics.map(\.name).filter { !permits(session, .read, .topic, $0) })
                let refusedTopics = request.topics.filter { refused.contains($0.name) }
                request.topics.removeAll { refused.contains($0.name) }
                var response = describeProducers(request)
                response.topics += refusedTopics.map { topic in
                    TopicPartitions(name: topic.name, partitions: topic.partitions.map { .init(index: $0, errorCode: ErrorCode.topicAuthorizationFailed.rawValue, producers: []) })
                }
                response.encode(&body, version: version)
            case .listGroups:
                // Kafka lists the groups the principal may describe (all with Describe on the cluster).
                let listed = await groups.list().filter { permitsCluster(session, .describe) || permits(session, .describe, .group, $0.groupID) }
                ListGroupsResponse(errorCode: 0, groups: listed).encode(&body, version: version)
            }
        } catch {
            throw CloseConnection(reason: "malformed \(api) v\(version) request: \(error)")
        }
        return .ready(frameResponse(correlationID: header.correlationID, flexibleHeader: flexible && api != .apiVersions, body: body.bytes))
    }
}
