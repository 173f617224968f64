import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
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
enum Reply: Sendable {
    case ready([UInt8]?)
    case pending(@Sendable () async -> [UInt8]?)
}

/// What one connection has established: its peer and, with SASL, who it is.
struct ClientSession {
    var client: String
    var authenticatedUser: String? = nil
    var sasl: SaslServer? = nil
    /// Set when the response must be the connection's last (a failed SASL exchange).
    var closeAfterResponse = false

    init(client: String) {
        self.client = client
    }
}

/// The Kafka request handlers of a single node, over a log store. Protocol
/// in, protocol out: sockets live in `KafkaServer`.
public final class Broker: Sendable {
    public let store: LogStore
    public let configuration: BrokerConfiguration
    let logger: Logger
    let notifier = DataNotifier()
    let groups: GroupCoordinator
    /// Groups' committed offsets in a cluster (unused on a single node,
    /// which keeps them in its own store).
    let offsets: OffsetsTopic
    let metrics = BrokerMetrics()
    let listening = Mutex(false)
    /// Partitions led with followers; nil on a single node.
    public let replication: ReplicationState?
    /// The node's cluster side, once attached (`attach`); nil on a single node.
    let clusterNode = Mutex<ClusterNode?>(nil)
    var cluster: ClusterNode? { clusterNode.withLock { $0 } }
    /// The chat fan-out, once made (`makeFanOut`); GatewayPoll needs it.
    let fanOutSlot = Mutex<FanOut?>(nil)

    /// Makes this node's fan-out; its `run` must be started by the caller.
    public func makeFanOut() -> FanOut {
        let made = FanOut(broker: self, logger: logger)
        fanOutSlot.withLock { $0 = made }
        return made
    }

    /// Joins a cluster: Metadata, leadership checks, topic creation and
    /// producer ids go through `node` from now on.
    public func attach(_ node: ClusterNode) {
        clusterNode.withLock { $0 = node }
    }

    /// True while the Kafka listener is bound (for `/ready`).
    public var isListening: Bool { listening.withLock { $0 } }
    /// The leader epoch a single node stamps; a cluster's controller bumps it.
    let leaderEpoch: Int32 = 0

    public init(store: LogStore, configuration: BrokerConfiguration, logger: Logger, replication: ReplicationState? = nil) {
        self.replication = replication
        self.store = store
        self.configuration = configuration
        self.logger = logger
        groups = GroupCoordinator(initialRebalanceDelay: configuration.initialRebalanceDelay, logger: logger)
        offsets = OffsetsTopic(partitionCount: configuration.offsetsTopicPartitions)
        // On a single node everything the log holds at start survived as
        // written: acknowledged batches were synced, and a batch written but
        // not yet acknowledged when the process died is kept, as Kafka keeps it.
        for partition in store.allPartitions {
            try? partition.advanceHighWatermark(to: partition.logEndOffset)
        }
    }

    /// Answers one request frame (without its size prefix). Returns the
    /// framed response, or nil when the request gets none (Produce acks=0).
    func handle(frame: [UInt8], client: String) async throws(CloseConnection) -> [UInt8]? {
        var session = ClientSession(client: client)
        return try await handle(frame: frame, session: &session)
    }

    func handle(frame: [UInt8], session: inout ClientSession) async throws(CloseConnection) -> [UInt8]? {
        switch try await stage(frame: frame, session: &session) {
        case .ready(let response): response
        case .pending(let finish): await finish()
        }
    }

    /// Answers one request frame, or, for a Produce, writes its batches and
    /// returns what finishes the answer once they are durable. The caller
    /// may stage the next Produce of the connection before finishing this
    /// one; it must send the answers in the order of the requests.
    func stage(frame: [UInt8], session: inout ClientSession) async throws(CloseConnection) -> Reply {
        let client = session.client
        var reader = ByteReader(frame)
        let header: RequestHeader
        do {
            header = try RequestHeader.decode(&reader)
        } catch {
            throw CloseConnection(reason: "malformed request header: \(error)")
        }
        guard let api = ApiKey(rawValue: header.apiKey), supportedAPIs[api] != nil else {
            throw CloseConnection(reason: "unknown or unsupported API key \(header.apiKey)")
        }
        if configuration.saslEnabled && session.authenticatedUser == nil && ![.apiVersions, .saslHandshake, .saslAuthenticate].contains(api) {
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
        guard supportedAPIs[api]?.contains(version) == true else {
            throw CloseConnection(reason: "\(api) version \(version) is not supported")
        }
        let flexible = version >= api.firstFlexibleVersion
        var body = ByteWriter(capacity: 256)
        do {
            if flexible { try reader.skipTaggedFields() }
            switch api {
            case .apiVersions:
                _ = try ApiVersionsRequest.decode(&reader, version: version)
                ApiVersionsResponse(errorCode: 0, apiKeys: SupportedAPIs.advertised(sasl: configuration.saslEnabled)).encode(&body, version: version)
            case .saslHandshake:
                let request = try SaslHandshakeRequest.decode(&reader, version: version)
                session.sasl = SaslServer(mechanism: request.mechanism, users: users)
                let code: ErrorCode = session.authenticatedUser != nil ? .illegalSaslState : (session.sasl == nil ? .unsupportedSaslMechanism : .none)
                SaslHandshakeResponse(errorCode: code.rawValue, mechanisms: SaslServer.mechanisms).encode(&body, version: version)
            case .saslAuthenticate:
                let request = try SaslAuthenticateRequest.decode(&reader, version: version)
                authenticate(request, session: &session).encode(&body, version: version)
            case .metadata:
                await metadata(try MetadataRequest.decode(&reader, version: version)).encode(&body, version: version)
            case .produce:
                let request = try ProduceRequest.decode(&reader, version: version)
                let finish = await produce(request, version: version)
                let correlationID = header.correlationID
                timed = false
                return .pending { [self] in
                    let response = await finish()
                    metrics.recordRequest(api, duration: ContinuousClock.now - started)
                    // acks=0 gets no answer, but its batches still count once durable.
                    guard request.acks != 0 else { return nil }
                    var body = ByteWriter(capacity: 64)
                    response.encode(&body, version: version)
                    return frameResponse(correlationID: correlationID, flexibleHeader: flexible, body: body.bytes)
                }
            case .fetch:
                await fetch(try FetchRequest.decode(&reader, version: version), version: version).encode(&body, version: version)
            case .listOffsets:
                listOffsets(try ListOffsetsRequest.decode(&reader, version: version), version: version).encode(&body, version: version)
            case .createTopics:
                await createTopics(try CreateTopicsRequest.decode(&reader, version: version)).encode(&body, version: version)
            case .deleteTopics:
                deleteTopics(try DeleteTopicsRequest.decode(&reader, version: version)).encode(&body, version: version)
            case .initProducerId:
                await initProducerID(try InitProducerIdRequest.decode(&reader, version: version)).encode(&body, version: version)
            case .findCoordinator:
                findCoordinator(try FindCoordinatorRequest.decode(&reader, version: version)).encode(&body, version: version)
            case .offsetForLeaderEpoch:
                offsetForLeaderEpoch(try OffsetForLeaderEpochRequest.decode(&reader, version: version)).encode(&body, version: version)
            case .joinGroup:
                let request = try JoinGroupRequest.decode(&reader, version: version)
                if let refused = coordinatorRefusal(request.groupID) {
                    JoinGroupResponse(errorCode: refused.rawValue, memberID: request.memberID).encode(&body, version: version)
                } else {
                    await groups.join(request, clientID: header.clientID ?? "", clientHost: client).encode(&body, version: version)
                }
            case .syncGroup:
                let request = try SyncGroupRequest.decode(&reader, version: version)
                if let refused = coordinatorRefusal(request.groupID) {
                    SyncGroupResponse(errorCode: refused.rawValue, assignment: []).encode(&body, version: version)
                } else {
                    await groups.sync(request).encode(&body, version: version)
                }
            case .heartbeat:
                let request = try HeartbeatRequest.decode(&reader, version: version)
                let code = if let refused = coordinatorRefusal(request.groupID) { refused } else { await groups.heartbeat(request) }
                ErrorOnlyResponse(errorCode: code.rawValue).encode(&body, version: version)
            case .leaveGroup:
                let request = try LeaveGroupRequest.decode(&reader, version: version)
                let code = if let refused = coordinatorRefusal(request.groupID) { refused } else { await groups.leave(request) }
                ErrorOnlyResponse(errorCode: code.rawValue).encode(&body, version: version)
            case .offsetCommit:
                await offsetCommit(try OffsetCommitRequest.decode(&reader, version: version)).encode(&body, version: version)
            case .offsetFetch:
                offsetFetch(try OffsetFetchRequest.decode(&reader, version: version)).encode(&body, version: version)
            case .describeGroups:
                let request = try DescribeGroupsRequest.decode(&reader, version: version)
                var described = await groups.describe(request.groups)
                for position in described.indices {
                    if let refused = coordinatorRefusal(described[position].groupID) { described[position].errorCode = refused.rawValue }
                }
                DescribeGroupsResponse(groups: described).encode(&body, version: version)
            case .describeConfigs:
                describeConfigs(try DescribeConfigsRequest.decode(&reader, version: version)).encode(&body, version: version)
            case .listGroups:
                ListGroupsResponse(errorCode: 0, groups: await groups.list()).encode(&body, version: version)
            case .conversationHistory:
                conversationHistory(try ConversationHistoryRequest.decode(&reader, version: version)).encode(&body, version: version)
            case .gatewayPoll:
                let request = try GatewayPollRequest.decode(&reader, version: version)
                if let fanOut = fanOutSlot.withLock({ $0 }) {
                    await fanOut.poll(request).encode(&body, version: version)
                } else {
                    GatewayPollResponse(errorCode: ErrorCode.invalidRequest.rawValue, partitions: [], deliveries: []).encode(&body, version: version)
                }
            }
        } catch {
            throw CloseConnection(reason: "malformed \(api) v\(version) request: \(error)")
        }
        return .ready(frameResponse(correlationID: header.correlationID, flexibleHeader: flexible && api != .apiVersions, body: body.bytes))
    }

    /// The APIs this node advertises: SASL's only when SASL is on.
    var supportedAPIs: [ApiKey: ClosedRange<Int16>] {
        SupportedAPIs.ranges(sasl: configuration.saslEnabled).merging(SupportedAPIs.extensionRanges) { first, _ in first }
    }

    var users: UserStore { UserStore(path: configuration.effectiveUsersFile) }

    // MARK: SASL

    func authenticate(_ request: SaslAuthenticateRequest, session: inout ClientSession) -> SaslAuthenticateResponse {
        guard session.authenticatedUser == nil, var sasl = session.sasl else {
            session.closeAfterResponse = true
            return SaslAuthenticateResponse(errorCode: ErrorCode.illegalSaslState.rawValue, errorMessage: "SaslAuthenticate without a SaslHandshake", authBytes: [])
        }
        let step = sasl.receive(request.authBytes)
        session.sasl = sasl
        switch step {
        case .challenge(let bytes):
            return SaslAuthenticateResponse(errorCode: 0, errorMessage: nil, authBytes: bytes)
        case .success(let user, let final):
            session.authenticatedUser = user
            session.sasl = nil
            logger.info("client authenticated", metadata: ["client": "\(session.client)", "user": "\(user)", "mechanism": "\(sasl.mechanism)"])
            return SaslAuthenticateResponse(errorCode: 0, errorMessage: nil, authBytes: final)
        case .failure(let reason):
            session.closeAfterResponse = true
            logger.warning("authentication failed", metadata: ["client": "\(session.client)", "mechanism": "\(sasl.mechanism)", "reason": "\(reason)"])
            return SaslAuthenticateResponse(errorCode: ErrorCode.saslAuthenticationFailed.rawValue, errorMessage: "authentication failed", authBytes: [])
        }
    }

    // MARK: Metadata

    func metadata(_ request: MetadataRequest) async -> MetadataResponse {
        if let cluster { return await clusterMetadata(request, cluster) }
        let names = request.topics ?? store.topicDescriptors.map(\.name)
        var topics: [MetadataResponse.Topic] = []
        for name in names {
            if store.topic(named: name) == nil {
                guard request.allowAutoTopicCreation && configuration.autoCreateTopics else {
                    topics.append(.init(errorCode: ErrorCode.unknownTopicOrPartition.rawValue, name: name, partitions: []))
                    continue
                }
                do {
                    try store.createTopic(name, configuration: .defaults(forTopicNamed: name, partitionCount: configuration.defaultPartitionCount))
                    logger.info("auto-created topic", metadata: ["topic": "\(name)", "partitions": "\(configuration.defaultPartitionCount)"])
                } catch let error where error.code == .topicAlreadyExists {
                    // Another connection created it first: fine.
                } catch {
                    let code: ErrorCode = error.code == .invalidTopicName ? .invalidTopicException : .unknownTopicOrPartition
                    topics.append(.init(errorCode: code.rawValue, name: name, partitions: []))
                    continue
                }
            }
            guard let descriptor = store.topic(named: name) else {
                topics.append(.init(errorCode: ErrorCode.unknownTopicOrPartition.rawValue, name: name, partitions: []))
                continue
            }
            let partitions = (0..<descriptor.configuration.partitionCount).map { index in
                let epoch = (try? store.partition(topic: name, index: index))?.currentLeaderEpoch ?? leaderEpoch
                return MetadataResponse.Partition(
                    index: index, leaderID: configuration.nodeID, leaderEpoch: epoch,
                    replicaNodes: [configuration.nodeID], isrNodes: [configuration.nodeID])
            }
            topics.append(.init(errorCode: 0, name: name, partitions: partitions))
        }
        let broker = MetadataResponse.Broker(nodeID: configuration.nodeID, host: configuration.effectiveAdvertisedHost, port: Int32(configuration.effectiveAdvertisedPort))
        return MetadataResponse(brokers: [broker], clusterID: store.clusterID, controllerID: configuration.nodeID, topics: topics)
    }

    /// Metadata from the cluster's view: every live broker, each
    /// partition's leader, replicas and ISR as etcd holds them.
    func clusterMetadata(_ request: MetadataRequest, _ cluster: ClusterNode) async -> MetadataResponse {
        // Right after start the election may not have happened yet; clients
        // (librdkafka's admin) wait long for a controller they were told is
        // missing, so give the election a moment first.
        for _ in 0..<60 where cluster.view.snapshot.controller == nil {
            try? await Task.sleep(for: .milliseconds(50))
        }
        var snapshot = cluster.view.snapshot
        if let names = request.topics, request.allowAutoTopicCreation && configuration.autoCreateTopics {
            for name in names where snapshot.assignments[name] == nil {
                do {
                    _ = try await cluster.createTopic(name, partitionCount: Int(configuration.defaultPartitionCount), replicationFactor: -1, configs: [:])
                    logger.info("auto-created topic", metadata: ["topic": "\(name)"])
                } catch {
                    logger.debug("auto-creation did not happen here", metadata: ["topic": "\(name)", "reason": "\(error)"])
                }
            }
            snapshot = cluster.view.snapshot
        }
        let brokers = snapshot.brokers.keys.sorted().compactMap { id -> MetadataResponse.Broker? in
            let parts = snapshot.brokers[id]!.split(separator: ":")
            guard parts.count == 2, let port = Int32(parts[1]) else { return nil }
            return MetadataResponse.Broker(nodeID: id, host: String(parts[0]), port: port)
        }
        let names = request.topics ?? snapshot.assignments.keys.sorted()
        let topics = names.map { name -> MetadataResponse.Topic in
            guard let assignment = snapshot.assignments[name] else {
                // Being created (or not at all): clients retry on this code.
                let code: ErrorCode = request.allowAutoTopicCreation && configuration.autoCreateTopics ? .leaderNotAvailable : .unknownTopicOrPartition
                return .init(errorCode: code.rawValue, name: name, partitions: [])
            }
            let partitions = assignment.replicas.enumerated().map { index, replicas -> MetadataResponse.Partition in
                let record = snapshot.records[PartitionID(topic: name, index: Int32(index))]?.state
                var partition = MetadataResponse.Partition(
                    index: Int32(index), leaderID: record?.leader ?? -1, leaderEpoch: record?.leaderEpoch ?? -1,
                    replicaNodes: replicas, isrNodes: record?.isr ?? [])
                if partition.leaderID < 0 { partition.errorCode = ErrorCode.leaderNotAvailable.rawValue }
                partition.offlineReplicas = replicas.filter { snapshot.brokers[$0] == nil }
                return partition
            }
            var topic = MetadataResponse.Topic(errorCode: 0, name: name, partitions: partitions)
            topic.isInternal = name == OffsetsTopic.name
            return topic
        }
        return MetadataResponse(brokers: brokers, clusterID: configuration.clusterName, controllerID: snapshot.controller ?? -1, topics: topics)
    }

    /// A partition's high watermark moved to `committed` (a follower's fetch
    /// or an ISR change): record it and wake the fetches waiting for data.
    func committed(_ log: PartitionLog, upTo committed: Int64) {
        try? log.advanceHighWatermark(to: committed)
        notifier.notify(PartitionID(topic: log.topicName, index: log.index))
    }

    /// In a cluster, only the leader takes produces and consumer fetches.
    func leads(topic: String, index: Int32) -> Bool {
        guard cluster != nil else { return true }
        return replication?.leaderEpoch(PartitionID(topic: topic, index: index)) != nil
    }

    // MARK: Produce

    /// Writes a Produce request's batches (every partition at once) and
    /// returns what waits for their durability and builds the answer; all
    /// partitions of the request share one group-commit sync.
    func produce(_ request: ProduceRequest, version: Int16) async -> @Sendable () async -> ProduceResponse {
        let refusal: ErrorCode?
        if SupportedAPIs.produceRefusedVersions.contains(version) {
            refusal = .unsupportedVersion
        } else if ![0, 1, -1].contains(request.acks) {
            refusal = .invalidRequiredAcks
        } else if request.transactionalID != nil {
            refusal = .invalidTransactionState
        } else {
            refusal = nil
        }
        if let refusal {
            let response = ProduceResponse(topics: request.topics.map { topic in
                .init(name: topic.name, partitions: topic.partitions.map { .init(index: $0.index, errorCode: refusal.rawValue, baseOffset: -1) })
            })
            return { response }
        }
        let timeout = Duration.milliseconds(Int64(max(request.timeoutMilliseconds, 0)))
        // One partition (the common case: a producer's linger batch for one
        // key, the chat gateway's coalesced records) is written right here;
        // a child task would cost a hand-off to another thread and back.
        if request.topics.count == 1, let topic = request.topics.first, topic.partitions.count == 1 {
            let staged = writeOne(topic: topic.name, topic.partitions[0], version: version, acks: request.acks)
            return { [self] in
                let answer = await finishOne(topic: topic.name, staged, acks: request.acks, timeout: timeout)
                return ProduceResponse(topics: [.init(name: topic.name, partitions: [answer])])
            }
        }
        let written = await withTaskGroup(of: (Int, Int, StagedAppend).self) { group in
            for (topicPosition, topic) in request.topics.enumerated() {
                for (partitionPosition, partition) in topic.partitions.enumerated() {
                    group.addTask {
                        (topicPosition, partitionPosition, self.writeOne(topic: topic.name, partition, version: version, acks: request.acks))
                    }
                }
            }
            var written: [Int: [Int: StagedAppend]] = [:]
            for await (topicPosition, partitionPosition, staged) in group {
                written[topicPosition, default: [:]][partitionPosition] = staged
            }
            return written
        }
        let topics = request.topics.enumerated().map { topicPosition, topic in
            (name: topic.name, partitions: topic.partitions.indices.map { written[topicPosition]![$0]! })
        }
        return { [self] in
            var response = ProduceResponse(topics: [])
            for topic in topics {
                var partitions: [ProduceResponse.PartitionResponse] = []
                for staged in topic.partitions {
                    partitions.append(await finishOne(topic: topic.name, staged, acks: request.acks, timeout: timeout))
                }
                response.topics.append(.init(name: topic.name, partitions: partitions))
            }
            return response
        }
    }

    /// One partition of a Produce after its write: refused, or written and
    /// waiting for durability.
    enum StagedAppend: Sendable {
        case refused(ProduceResponse.PartitionResponse)
        case written(PartitionLog, PendingAppend, index: Int32)
    }

    private func refusal(topic: String, index: Int32, _ code: ErrorCode, _ message: String) -> ProduceResponse.PartitionResponse {
        logger.debug("produce refused", metadata: ["topic": "\(topic)", "partition": "\(index)", "error": "\(code)", "reason": "\(message)"])
        return .init(index: index, errorCode: code.rawValue, baseOffset: -1, errorMessage: message)
    }

    func writeOne(topic: String, _ data: ProduceRequest.PartitionData, version: Int16, acks: Int16) -> StagedAppend {
        func failure(_ code: ErrorCode, _ message: String) -> StagedAppend {
            .refused(refusal(topic: topic, index: data.index, code, message))
        }
        guard let records = data.records, !records.isEmpty else { return failure(.corruptMessage, "no records") }
        let partition: PartitionLog
        do {
            partition = try store.partition(topic: topic, index: data.index)
        } catch {
            return failure(.unknownTopicOrPartition, error.message)
        }
        // zstd needs Produce v7 or later (KIP-110).
        if version < 7 && records.count > 22 && records[22] & 0x07 == UInt8(CompressionCodec.zstd.rawValue) {
            return failure(.unsupportedCompressionType, "zstd needs Produce v7 or later")
        }
        if !leads(topic: topic, index: data.index) {
            return failure(.notLeaderOrFollower, "this broker does not lead \(topic)/\(data.index)")
        }
        if acks == -1, let replication, !replication.acceptsAcksAll(PartitionID(topic: topic, index: data.index)) {
            return failure(.notEnoughReplicas, "fewer in-sync replicas than min.insync.replicas=\(replication.minInsyncReplicas)")
        }
        do {
            let epoch = replication?.leaderEpoch(PartitionID(topic: topic, index: data.index)) ?? partition.currentLeaderEpoch ?? leaderEpoch
            return .written(partition, try partition.write(records, leaderEpoch: epoch), index: data.index)
        } catch {
            return .refused(appendFailure(topic: topic, index: data.index, error))
        }
    }

    func finishOne(topic: String, _ staged: StagedAppend, acks: Int16, timeout: Duration) async -> ProduceResponse.PartitionResponse {
        guard case .written(let partition, let pending, let index) = staged else {
            if case .refused(let response) = staged { return response }
            preconditionFailure("unreachable")
        }
        do {
            let result = try await pending.durable()
            let id = PartitionID(topic: topic, index: index)
            if let replication, replication.isReplicated(id) {
                // With followers, the high watermark is the ISR's smallest log end.
                if let committed = replication.leaderAppended(id, logEnd: result.lastOffset + 1) {
                    try partition.advanceHighWatermark(to: committed)
                }
                // Followers long-polling at the old log end have something to copy.
                notifier.notify(id)
                if acks == -1 {
                    guard await replication.waitForHighWatermark(id, offset: result.lastOffset + 1, timeout: timeout) else {
                        return refusal(topic: topic, index: index, .requestTimedOut, "the in-sync replicas did not copy the batch within \(timeout)")
                    }
                    if !replication.acceptsAcksAll(id) {
                        return refusal(topic: topic, index: index, .notEnoughReplicasAfterAppend, "the ISR shrank below min.insync.replicas=\(replication.minInsyncReplicas) after the append")
                    }
                }
                metrics.recordOffsets(topic: topic, partition: index, logEndOffset: partition.logEndOffset, highWatermark: partition.highWatermark)
            } else {
                try commitAlone(topic: topic, partition, index: index, result)
            }
            return .init(index: index, errorCode: 0, baseOffset: result.baseOffset, logStartOffset: result.logStartOffset)
        } catch {
            return appendFailure(topic: topic, index: index, error)
        }
    }

    /// A partition without followers commits what is durable under the
    /// store's durability mode: its high watermark moves up to the append,
    /// and whoever waits for it (fetches, the fan-out) is told.
    func commitAlone(topic: String, _ partition: PartitionLog, index: Int32, _ result: AppendResult) throws(LogStoreError) {
        try partition.advanceHighWatermark(to: result.lastOffset + 1)
        notifier.notify(PartitionID(topic: topic, index: index))
        metrics.recordOffsets(topic: topic, partition: index, logEndOffset: partition.logEndOffset, highWatermark: partition.highWatermark)
    }

    func appendFailure(topic: String, index: Int32, _ error: any Error) -> ProduceResponse.PartitionResponse {
        guard let error = error as? LogStoreError else {
            return refusal(topic: topic, index: index, .unknownServerError, "\(error)")
        }
        let code = Self.errorCode(for: error)
        if code == .kafkaStorageError {
            logger.error("append failed", metadata: ["topic": "\(topic)", "partition": "\(index)", "error": "\(error)"])
        }
        return refusal(topic: topic, index: index, code, error.message)
    }

    /// The Kafka error code for a log store error: mapped once, here.
    static func errorCode(for error: LogStoreError) -> ErrorCode {
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

    // MARK: Fetch

    func fetch(_ request: FetchRequest, version: Int16) async -> FetchResponse {
        if request.sessionID != 0 {
            // Fetch sessions (KIP-227) are declined: every fetch is a full one.
            return FetchResponse(errorCode: ErrorCode.fetchSessionIdNotFound.rawValue, topics: [])
        }
        let wait = min(Duration.milliseconds(max(0, Int64(request.maxWaitMilliseconds))), configuration.fetchWaitMax)
        let clock = ContinuousClock()
        let deadline = clock.now + wait
        let partitions = request.topics.flatMap { topic in topic.partitions.map { PartitionID(topic: topic.name, index: $0.index) } }
        while true {
            let generation = notifier.generation(of: partitions)
            let (response, bytesCount, failed) = readFetch(request, version: version)
            let now = clock.now
            if bytesCount >= Int(request.minBytes) || failed || now >= deadline || Task.isCancelled {
                return response
            }
            await notifier.wait(on: partitions, afterGeneration: generation, timeout: deadline - now)
        }
    }

    private func readFetch(_ request: FetchRequest, version: Int16) -> (FetchResponse, Int, Bool) {
        var total = 0
        var failed = false
        let responseBytesMax = Int(max(request.maxBytes, 0))
        let topics = request.topics.map { topic in
            FetchResponse.Topic(name: topic.name, partitions: topic.partitions.map { requested in
                let (partition, bytes, error) = readPartition(topic: topic.name, requested, version: version, responseBytesMax: responseBytesMax, alreadyCount: total, replicaID: request.replicaID)
                total += bytes
                failed = failed || error
                return partition
            })
        }
        return (FetchResponse(topics: topics), total, failed)
    }

    /// `replicaID` ≥ 0: a follower's fetch, which reads up to the log end
    /// rather than the high watermark (it must copy what is not yet
    /// committed for the high watermark to move) and reports the follower's
    /// log end (its fetch offset) to the partition's tracker.
    private func readPartition(topic: String, _ requested: FetchRequest.Partition, version: Int16, responseBytesMax: Int, alreadyCount: Int, replicaID: Int32 = -1) -> (FetchResponse.Partition, Int, Bool) {
        let replica = replicaID >= 0
        func failure(_ code: ErrorCode, highWatermark: Int64 = -1, logStartOffset: Int64 = -1) -> (FetchResponse.Partition, Int, Bool) {
            // HW, LSO and log start offset are filled on error paths too: clients read them.
            (FetchResponse.Partition(index: requested.index, errorCode: code.rawValue, highWatermark: highWatermark, lastStableOffset: highWatermark, logStartOffset: logStartOffset, batches: []), 0, true)
        }
        guard let partition = try? store.partition(topic: topic, index: requested.index) else {
            return failure(cluster != nil ? .notLeaderOrFollower : .unknownTopicOrPartition)
        }
        if !leads(topic: topic, index: requested.index) {
            return failure(.notLeaderOrFollower)
        }
        if replica, let replication {
            // The follower's fetch offset is its log end: it may move the high watermark.
            if let committed = replication.followerFetched(PartitionID(topic: topic, index: requested.index), replica: replicaID, offset: requested.fetchOffset) {
                self.committed(partition, upTo: committed)
            }
        }
        let highWatermark = partition.highWatermark
        let logStart = partition.logStartOffset
        if requested.currentLeaderEpoch >= 0 {
            let current = partition.currentLeaderEpoch ?? leaderEpoch
            if requested.currentLeaderEpoch < current { return failure(.fencedLeaderEpoch, highWatermark: highWatermark, logStartOffset: logStart) }
            if requested.currentLeaderEpoch > current { return failure(.unknownLeaderEpoch, highWatermark: highWatermark, logStartOffset: logStart) }
        }
        let readable = replica ? partition.logEndOffset : highWatermark
        guard requested.fetchOffset >= logStart && requested.fetchOffset <= readable else {
            return failure(.offsetOutOfRange, highWatermark: highWatermark, logStartOffset: logStart)
        }
        let remaining = responseBytesMax - alreadyCount
        var batches: [[UInt8]] = []
        if requested.fetchOffset < readable && (remaining > 0 || alreadyCount == 0) {
            let limit = max(1, min(Int(max(requested.partitionBytesMax, 0)), max(remaining, 0)))
            do {
                batches = try partition.read(from: requested.fetchOffset, bytesMax: limit, maxOffset: readable).batches
            } catch {
                return failure(Self.errorCode(for: error), highWatermark: highWatermark, logStartOffset: logStart)
            }
            // KIP-74: only the response's first batch may exceed the limits.
            if alreadyCount > 0, let first = batches.first, first.count > remaining { batches = [] }
        }
        if version < 10 && batches.contains(where: { $0.count > 22 && $0[22] & 0x07 == UInt8(CompressionCodec.zstd.rawValue) }) {
            return failure(.unsupportedCompressionType, highWatermark: highWatermark, logStartOffset: logStart)
        }
        let bytes = batches.reduce(0) { $0 + $1.count }
        return (FetchResponse.Partition(index: requested.index, errorCode: 0, highWatermark: highWatermark, lastStableOffset: highWatermark, logStartOffset: logStart, batches: batches), bytes, false)
    }

    // MARK: ListOffsets

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

    // MARK: Topics

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
    func topicConfiguration(name: String, partitionCount count: Int32, configs: [(String, String?)]) throws -> TopicConfiguration {
        guard count >= 1 else { throw TopicRequestError(code: .invalidPartitions, message: "partition count \(count) must be positive") }
        var result = TopicConfiguration.defaults(forTopicNamed: name, partitionCount: count)
        for (name, value) in configs {
            guard let value else { continue }
            func bad() -> TopicRequestError { TopicRequestError(code: .invalidConfig, message: "invalid value '\(value)' for \(name)") }
            switch name {
            case "postduif.conversation.index":
                guard let flag = Bool(value) else { throw bad() }
                result.conversationIndex = flag
            case "retention.ms":
                guard let milliseconds = Int64(value) else { throw bad() }
                result.retentionTime = milliseconds < 0 ? nil : .milliseconds(milliseconds)
            case "retention.bytes":
                guard let bytes = Int64(value) else { throw bad() }
                result.retentionBytes = bytes < 0 ? nil : bytes
            case "max.message.bytes":
                guard let bytes = Int(value) else { throw bad() }
                result.batchBytesMax = bytes
            case "cleanup.policy":
                guard value == "delete" else { throw TopicRequestError(code: .invalidConfig, message: "cleanup.policy=\(value) is not supported; only delete") }
            default:
                throw TopicRequestError(code: .invalidConfig, message: "unknown topic config \(name)")
            }
        }
        return result
    }

    func deleteTopics(_ request: DeleteTopicsRequest) -> DeleteTopicsResponse {
        DeleteTopicsResponse(results: request.topicNames.map { name in
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

    // MARK: Configs

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
                let defaults = TopicConfiguration.defaults(forTopicNamed: topic.name, partitionCount: settings.partitionCount)
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

    // MARK: Group offsets

    func offsetCommit(_ request: OffsetCommitRequest) async -> OffsetCommitResponse {
        func everyPartition(_ code: ErrorCode) -> OffsetCommitResponse {
            OffsetCommitResponse(topics: request.topics.map { topic in (topic.name, topic.partitions.map { ($0.index, code.rawValue) }) })
        }
        if let refused = coordinatorRefusal(request.groupID) { return everyPartition(refused) }
        let verdict = await groups.validateCommit(groupID: request.groupID, generation: request.generationID, memberID: request.memberID)
        guard verdict == .none else { return everyPartition(verdict) }
        var entries: [GroupOffsetEntry] = []
        var results: [(name: String, partitions: [(index: Int32, errorCode: Int16)])] = []
        // A coordinator in a cluster need not hold the committed topic: the cluster's assignments say what exists.
        let assignments = cluster?.view.snapshot.assignments
        for topic in request.topics {
            var partitions: [(index: Int32, errorCode: Int16)] = []
            for partition in topic.partitions {
                let exists = if let assignments {
                    assignments[topic.name].map { partition.index >= 0 && Int(partition.index) < $0.replicas.count } ?? false
                } else {
                    (try? store.partition(topic: topic.name, index: partition.index)) != nil
                }
                if !exists {
                    partitions.append((partition.index, ErrorCode.unknownTopicOrPartition.rawValue))
                } else if (partition.metadata?.utf8.count ?? 0) > 4096 {
                    partitions.append((partition.index, ErrorCode.offsetMetadataTooLarge.rawValue))
                } else {
                    entries.append(GroupOffsetEntry(topic: topic.name, partition: partition.index, committed: CommittedOffset(offset: partition.offset, leaderEpoch: partition.leaderEpoch, metadata: partition.metadata)))
                    partitions.append((partition.index, 0))
                }
            }
            results.append((topic.name, partitions))
        }
        if cluster != nil {
            if let failed = await commitReplicated(group: request.groupID, entries) { return everyPartition(failed) }
            return OffsetCommitResponse(topics: results)
        }
        do {
            try await store.commitOffsets(group: request.groupID, entries)
        } catch {
            logger.error("cannot store committed offsets", metadata: ["group": "\(request.groupID)", "error": "\(error)"])
            return everyPartition(.kafkaStorageError)
        }
        return OffsetCommitResponse(topics: results)
    }

    func offsetFetch(_ request: OffsetFetchRequest) -> OffsetFetchResponse {
        if let refused = coordinatorRefusal(request.groupID) {
            return OffsetFetchResponse(topics: [], errorCode: refused.rawValue)
        }
        let committed: [GroupOffsetEntry]
        do {
            committed = try cluster != nil ? loadedOffsets(group: request.groupID) : store.committedOffsets(group: request.groupID)
        } catch {
            logger.error("cannot read committed offsets", metadata: ["group": "\(request.groupID)", "error": "\(error)"])
            return OffsetFetchResponse(topics: [], errorCode: ErrorCode.kafkaStorageError.rawValue)
        }
        var byPartition: [String: [Int32: CommittedOffset]] = [:]
        for entry in committed { byPartition[entry.topic, default: [:]][entry.partition] = entry.committed }
        let wanted = request.topics ?? byPartition.keys.sorted().map { ($0, byPartition[$0]!.keys.sorted()) }
        return OffsetFetchResponse(topics: wanted.map { topic in
            (topic.name, topic.partitions.map { index in
                // Never committed: offset -1 and empty metadata, no error.
                guard let found = byPartition[topic.name]?[index] else {
                    return .init(index: index, offset: -1, leaderEpoch: -1, metadata: "", errorCode: 0)
                }
                return .init(index: index, offset: found.offset, leaderEpoch: found.leaderEpoch, metadata: found.metadata, errorCode: 0)
            })
        })
    }

    /// In a cluster, a group's requests go to the leader of its partition of
    /// `__consumer_offsets`; any other broker answers NOT_COORDINATOR, and
    /// the client asks FindCoordinator again.
    func coordinatorRefusal(_ group: String) -> ErrorCode? {
        guard cluster != nil else { return nil }
        return leads(topic: OffsetsTopic.name, index: offsets.partition(for: group)) ? nil : .notCoordinator
    }

    /// This coordinator's view of the group's partition of
    /// `__consumer_offsets`, read from the log if it has just become its leader.
    private func offsetsView(group: String) throws -> (partition: Int32, epoch: Int32, log: PartitionLog)? {
        let index = offsets.partition(for: group)
        guard let epoch = replication?.leaderEpoch(PartitionID(topic: OffsetsTopic.name, index: index)) else { return nil }
        let log = try store.partition(topic: OffsetsTopic.name, index: index)
        try offsets.load(partition: index, epoch: epoch, log: log)
        return (index, epoch, log)
    }

    func loadedOffsets(group: String) throws -> [GroupOffsetEntry] {
        guard try offsetsView(group: group) != nil else { throw LogStoreError(.unknownPartition, "not the coordinator of \(group)") }
        return offsets.committed(group: group)
    }

    /// Appends a commit to the group's partition of `__consumer_offsets` and
    /// waits, as acks=all does, for the in-sync replicas; nil when it is
    /// committed, else the error for every partition of the request.
    func commitReplicated(group: String, _ entries: [GroupOffsetEntry]) async -> ErrorCode? {
        guard !entries.isEmpty else { return nil }
        let view: (partition: Int32, epoch: Int32, log: PartitionLog)
        let records: [UInt8]
        do {
            guard let found = try offsetsView(group: group) else { return .notCoordinator }
            view = found
            records = try OffsetsTopic.batch(group: group, entries, timestamp: Int64(Date().timeIntervalSince1970 * 1000))
        } catch {
            logger.error("cannot read the committed offsets", metadata: ["group": "\(group)", "error": "\(error)"])
            return .coordinatorNotAvailable
        }
        let staged = writeOne(topic: OffsetsTopic.name, ProduceRequest.PartitionData(index: view.partition, batch: records), version: 8, acks: -1)
        let answer = await finishOne(topic: OffsetsTopic.name, staged, acks: -1, timeout: .seconds(5))
        switch ErrorCode(rawValue: answer.errorCode) {
        case ErrorCode.none?:
            offsets.apply(partition: view.partition, epoch: view.epoch, group: group, entries, baseOffset: answer.baseOffset)
            return nil
        case .notLeaderOrFollower?, .fencedLeaderEpoch?:
            return .notCoordinator
        default:
            // As Kafka maps them: too few replicas or a timeout leave the coordinator unavailable for now.
            logger.warning("a commit was not replicated", metadata: ["group": "\(group)", "error": "\(answer.errorCode)", "reason": "\(answer.errorMessage ?? "")"])
            return .coordinatorNotAvailable
        }
    }

    // MARK: Conversations

    /// A page of one conversation from the index, committed messages only.
    func conversationHistory(_ request: ConversationHistoryRequest) -> ConversationHistoryResponse {
        func failure(_ code: ErrorCode) -> ConversationHistoryResponse {
            ConversationHistoryResponse(errorCode: code.rawValue, highWatermark: -1, messages: [])
        }
        guard let log = try? store.partition(topic: request.topic, index: request.partition) else { return failure(.unknownTopicOrPartition) }
        guard leads(topic: request.topic, index: request.partition) else { return failure(.notLeaderOrFollower) }
        let position: HistoryPosition = switch request.position {
        case .latest: .latest
        case .before(let sequence): .before(sequence: sequence)
        case .after(let sequence): .after(sequence: sequence)
        }
        let highWatermark = log.highWatermark
        let bound = request.maxOffset >= 0 ? min(request.maxOffset, highWatermark) : highWatermark
        do {
            let page = try log.history(conversation: request.conversation, from: position, limit: Int(max(request.limit, 0)), maxOffset: bound)
            return ConversationHistoryResponse(errorCode: 0, highWatermark: highWatermark, messages: page)
        } catch {
            return failure(Self.errorCode(for: error))
        }
    }

    // MARK: Producers, coordinators, epochs

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

    func findCoordinator(_ request: FindCoordinatorRequest) -> FindCoordinatorResponse {
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
            guard let leader = snapshot.records[id]?.state.leader, leader >= 0, let address = snapshot.brokers[leader] else {
                return unavailable("\(id) has no leader")
            }
            let parts = address.split(separator: ":")
            return FindCoordinatorResponse(errorCode: 0, errorMessage: nil, nodeID: leader, host: String(parts.first ?? ""), port: Int32(parts.last ?? "") ?? -1)
        }
        return FindCoordinatorResponse(errorCode: 0, errorMessage: nil, nodeID: configuration.nodeID, host: configuration.effectiveAdvertisedHost, port: Int32(configuration.effectiveAdvertisedPort))
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

/// The broker's metrics, through swift-metrics: whatever backend main
/// bootstraps (Prometheus in `postduif serve`) receives them.
final class BrokerMetrics: Sendable {
    private let requests: [ApiKey: (count: Counter, duration: Metrics.Timer)]
    let bytesIn = Counter(label: "postduif_bytes_in_total")
    let bytesOut = Counter(label: "postduif_bytes_out_total")
    private let connections = Gauge(label: "postduif_connections")
    private let connectionsCount = Mutex(0)

    init() {
        var requests: [ApiKey: (Counter, Metrics.Timer)] = [:]
        for api in ApiKey.allCases {
            let dimensions = [("api", api.description)]
            requests[api] = (Counter(label: "postduif_requests_total", dimensions: dimensions),
                             Metrics.Timer(label: "postduif_request_duration_seconds", dimensions: dimensions))
        }
        self.requests = requests
    }

    func recordRequest(_ api: ApiKey, duration: Duration) {
        guard let metrics = requests[api] else { return }
        metrics.count.increment()
        metrics.duration.record(duration: duration)
    }

    func connectionOpened() {
        connections.record(connectionsCount.withLock { $0 += 1; return $0 })
    }

    func connectionClosed() {
        connections.record(connectionsCount.withLock { $0 -= 1; return $0 })
    }

    /// Each partition's two gauges, made once: produce is the hot path, and
    /// making a metric asks the backend's registry under its lock.
    private let partitionGauges = Mutex<[String: (logEndOffset: Gauge, highWatermark: Gauge)]>([:])

    func recordOffsets(topic: String, partition: Int32, logEndOffset: Int64, highWatermark: Int64) {
        let gauges = partitionGauges.withLock { gauges in
            let key = "\(topic)/\(partition)"
            if let existing = gauges[key] { return existing }
            let dimensions = [("topic", topic), ("partition", String(partition))]
            let made = (Gauge(label: "postduif_partition_log_end_offset", dimensions: dimensions),
                        Gauge(label: "postduif_partition_high_watermark", dimensions: dimensions))
            gauges[key] = made
            return made
        }
        gauges.logEndOffset.record(logEndOffset)
        gauges.highWatermark.record(highWatermark)
    }
}
