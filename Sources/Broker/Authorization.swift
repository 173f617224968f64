import KafkaWire
import Security
import Synchronization

// Every API asks here whether the connection's principal may do what the
// request asks (ADR 0022). With the authorizer off (the embedded default
// of `make run`), everything is permitted. Refusals are Kafka's: a
// per-topic TOPIC_AUTHORIZATION_FAILED where a request names topics,
// GROUP_ or CLUSTER_AUTHORIZATION_FAILED for the whole request otherwise,
// and Metadata leaves out topics the principal may not describe.
/// The ACLs in force and their version: etcd's in a cluster (set by the
/// cluster node's watch), the store's on a single node. Each change makes
/// a new version, which empties every connection's cache of decisions.
final class AclState: Sendable {
    private let state: Mutex<(authorizer: Authorizer, version: UInt64)>
    /// The version alone, read without the lock on every decision.
    private let published = Atomic<UInt64>(1)

    init(_ bindings: [AclBinding], superUsers: Set<String>) {
        state = Mutex((Authorizer(bindings: bindings, superUsers: superUsers), 1))
    }

    var current: (authorizer: Authorizer, version: UInt64) { state.withLock { $0 } }
    var version: UInt64 { published.load(ordering: .acquiring) }

    func replace(_ bindings: [AclBinding]) {
        state.withLock { state in
            guard state.authorizer.bindings != bindings else { return }
            state = (Authorizer(bindings: bindings, superUsers: state.authorizer.superUsers), state.version + 1)
            published.store(state.version, ordering: .releasing)
        }
    }
}

/// One connection's decisions for the ACL version they were made under: a
/// Produce to the same topics asks the authorizer once, not per request.
final class AuthorizationCache: Sendable {
    struct Key: Hashable {
        var operation: AclOperation
        var type: ResourceType
        var name: String
    }

    private let state = Mutex<(version: UInt64, decisions: [Key: Bool])>((0, [:]))
    static let entriesMax = 1024

    func decision(_ key: Key, version: UInt64) -> Bool? {
        state.withLock { $0.version == version ? $0.decisions[key] : nil }
    }

    func remember(_ key: Key, _ allowed: Bool, version: UInt64) {
        state.withLock { state in
            if state.version != version || state.decisions.count >= Self.entriesMax { state = (version, [:]) }
            state.decisions[key] = allowed
        }
    }
}

extension Broker {
    /// The ACLs in force.
    var currentAcls: [AclBinding] { aclState.current.authorizer.bindings }

    var authorizer: Authorizer { aclState.current.authorizer }

    /// Whether the authorizer decides this session's requests: not with
    /// the authorizer off, nor for the broker's own process.
    func isChecked(_ session: ClientSession) -> Bool {
        configuration.authorizerEnabled && !session.inProcess
    }

    func permits(_ session: ClientSession, _ operation: AclOperation, _ type: ResourceType, _ name: String) -> Bool {
        guard isChecked(session) else { return true }
        let key = AuthorizationCache.Key(operation: operation, type: type, name: name)
        if let known = session.decisions.decision(key, version: aclState.version) { return known }
        let (authorizer, version) = aclState.current
        let allowed = authorizer.authorize(session.principal, host: session.host, operation, type, name)
        session.decisions.remember(key, allowed, version: version)
        if !allowed {
            logger.info("refused by the authorizer", metadata: [
                "principal": "\(session.principal)", "client": "\(session.client)", "operation": "\(operation)", "resource": "\(type):\(name)"])
        }
        return allowed
    }

    func permitsCluster(_ session: ClientSession, _ operation: AclOperation) -> Bool {
        permits(session, operation, .cluster, ResourceType.clusterName)
    }

    /// An idempotent producer: IdempotentWrite on the cluster, or Write on
    /// any topic (Kafka 2.8's rule).
    func permitsIdempotence(_ session: ClientSession) -> Bool {
        guard isChecked(session) else { return true }
        let authorizer = self.authorizer
        let host = session.host
        let allowed = authorizer.authorizeAny(session.principal, host: host, .idempotentWrite, .cluster)
            || authorizer.authorizeAny(session.principal, host: host, .write, .topic)
        if !allowed {
            logger.info("refused by the authorizer", metadata: [
                "principal": "\(session.principal)", "client": "\(session.client)", "operation": "idempotentWrite", "resource": "cluster (or Write on any topic)"])
        }
        return allowed
    }

    /// The topics a request names that the principal may not act on.
    func refusedTopics(_ names: [String], _ session: ClientSession, _ operation: AclOperation) -> Set<String> {
        guard isChecked(session) else { return [] }
        return Set(names.filter { !permits(session, operation, .topic, $0) })
    }

    // MARK: Per API

    /// Produce: Write on each topic; the refused topics' partitions answer
    /// TOPIC_AUTHORIZATION_FAILED and are not written.
    func authorizeProduce(_ request: inout ProduceRequest, _ session: ClientSession) -> [ProduceResponse.TopicResponse] {
        guard configuration.authorizerEnabled else { return [] }
        if let transactionalID = request.transactionalID, !permits(session, .write, .transactionalId, transactionalID) {
            let refused = request.topics.map { topic in
                ProduceResponse.TopicResponse(name: topic.name, partitions: topic.partitions.map {
                    .init(index: $0.index, errorCode: ErrorCode.transactionalIdAuthorizationFailed.rawValue, baseOffset: -1)
                })
            }
            request.topics = []
            return refused
        }
        // Most Produce requests name one topic: no sets unless one is refused.
        var refused: Set<String> = []
        for topic in request.topics where !permits(session, .write, .topic, topic.name) { refused.insert(topic.name) }
        guard !refused.isEmpty else { return [] }
        let answers = request.topics.filter { refused.contains($0.name) }.map { topic in
            ProduceResponse.TopicResponse(name: topic.name, partitions: topic.partitions.map {
                .init(index: $0.index, errorCode: ErrorCode.topicAuthorizationFailed.rawValue, baseOffset: -1)
            })
        }
        request.topics.removeAll { refused.contains($0.name) }
        return answers
    }

    /// Fetch: a follower needs ClusterAction, a consumer Read on each topic.
    func authorizeFetch(_ request: inout FetchRequest, _ session: ClientSession) -> [FetchResponse.Topic] {
        guard configuration.authorizerEnabled else { return [] }
        if request.replicaID >= 0 && !permitsCluster(session, .clusterAction) {
            defer { request.topics = [] }
            return refusedFetch(request.topics)
        }
        let refused = refusedTopics(request.topics.map(\.name), session, .read)
        guard !refused.isEmpty else { return [] }
        defer { request.topics.removeAll { refused.contains($0.name) } }
        return refusedFetch(request.topics.filter { refused.contains($0.name) })
    }

    private func refusedFetch(_ topics: [FetchRequest.Topic]) -> [FetchResponse.Topic] {
        topics.map { topic in
            FetchResponse.Topic(name: topic.name, partitions: topic.partitions.map {
                .init(index: $0.index, errorCode: ErrorCode.topicAuthorizationFailed.rawValue, highWatermark: -1, lastStableOffset: -1, logStartOffset: -1, batches: [])
            })
        }
    }

    /// ListOffsets: Describe on each topic.
    func authorizeListOffsets(_ request: inout ListOffsetsRequest, _ session: ClientSession) -> [ListOffsetsResponse.Topic] {
        guard configuration.authorizerEnabled else { return [] }
        let refused = refusedTopics(request.topics.map(\.name), session, .describe)
        guard !refused.isEmpty else { return [] }
        defer { request.topics.removeAll { refused.contains($0.name) } }
        return request.topics.filter { refused.contains($0.name) }.map { topic in
            ListOffsetsResponse.Topic(name: topic.name, partitions: topic.partitions.map {
                .init(index: $0.index, errorCode: ErrorCode.topicAuthorizationFailed.rawValue, timestamp: -1, offset: -1, leaderEpoch: -1)
            })
        }
    }

    /// OffsetForLeaderEpoch: ClusterAction from a follower, Describe on
    /// each topic from a consumer.
    func authorizeOffsetForLeaderEpoch(_ request: inout OffsetForLeaderEpochRequest, _ session: ClientSession) -> [OffsetForLeaderEpochResponse.Topic] {
        guard configuration.authorizerEnabled else { return [] }
        let refused: Set<String> = request.replicaID >= 0
            ? (permitsCluster(session, .clusterAction) ? [] : Set(request.topics.map(\.name)))
            : refusedTopics(request.topics.map(\.name), session, .describe)
        guard !refused.isEmpty else { return [] }
        defer { request.topics.removeAll { refused.contains($0.name) } }
        return request.topics.filter { refused.contains($0.name) }.map { topic in
            OffsetForLeaderEpochResponse.Topic(name: topic.name, partitions: topic.partitions.map {
                .init(errorCode: ErrorCode.topicAuthorizationFailed.rawValue, index: $0.index, leaderEpoch: -1, endOffset: -1)
            })
        }
    }

    /// Metadata: topics the principal may not describe are left out of a
    /// listing of all and refused when named; naming an unknown topic
    /// creates it only with Create on the cluster or the topic.
    func authorizeMetadata(_ request: inout MetadataRequest, _ session: ClientSession) -> (refused: [String], hidden: @Sendable (String) -> Bool) {
        guard isChecked(session) else { return ([], { _ in false }) }
        let authorizer = self.authorizer
        let principal = session.principal
        let host = session.host
        let hidden: @Sendable (String) -> Bool = { !authorizer.authorize(principal, host: host, .describe, .topic, $0) }
        guard let names = request.topics else { return ([], hidden) }
        let refused = names.filter(hidden)
        request.topics = names.filter { !hidden($0) }
        if request.allowAutoTopicCreation && !permitsCluster(session, .create) {
            // Creation by naming needs Create; without it, unknown topics stay unknown.
            request.allowAutoTopicCreation = request.topics?.allSatisfy { permits(session, .create, .topic, $0) } ?? false
        }
        return (refused, hidden)
    }

    /// CreateTopics: Create on the cluster or on each topic.
    func refusedCreations(_ request: inout CreateTopicsRequest, _ session: ClientSession) -> [CreateTopicsResponse.Result] {
        guard configuration.authorizerEnabled, !permitsCluster(session, .create) else { return [] }
        let refused = Set(request.topics.map(\.name).filter { !permits(session, .create, .topic, $0) })
        request.topics.removeAll { refused.contains($0.name) }
        return refused.sorted().map { .init(name: $0, errorCode: ErrorCode.topicAuthorizationFailed.rawValue, errorMessage: "not authorized to create \($0)") }
    }

    /// DeleteTopics: Delete on each topic.
    func refusedDeletions(_ request: inout DeleteTopicsRequest, _ session: ClientSession) -> [(name: String, errorCode: Int16)] {
        guard configuration.authorizerEnabled else { return [] }
        let refused = refusedTopics(request.topicNames, session, .delete)
        request.topicNames.removeAll { refused.contains($0) }
        return refused.sorted().map { ($0, ErrorCode.topicAuthorizationFailed.rawValue) }
    }

    /// OffsetCommit: Read on the group, then Read on each topic.
    func authorizeOffsetCommit(_ request: inout OffsetCommitRequest, _ session: ClientSession) -> [(name: String, partitions: [(index: Int32, errorCode: Int16)])] {
        guard configuration.authorizerEnabled else { return [] }
        let groupAllowed = permits(session, .read, .group, request.groupID)
        let refused = groupAllowed ? refusedTopics(request.topics.map(\.name), session, .read) : Set(request.topics.map(\.name))
        let code = groupAllowed ? ErrorCode.topicAuthorizationFailed : .groupAuthorizationFailed
        defer { request.topics.removeAll { refused.contains($0.name) } }
        return request.topics.filter { refused.contains($0.name) }.map { topic in
            (topic.name, topic.partitions.map { ($0.index, code.rawValue) })
        }
    }

    /// The groups a principal may read (join, sync, heartbeat, leave) or describe.
    func groupRefusal(_ group: String, _ session: ClientSession, _ operation: AclOperation = .read) -> ErrorCode? {
        permits(session, operation, .group, group) ? nil : .groupAuthorizationFailed
    }
}
