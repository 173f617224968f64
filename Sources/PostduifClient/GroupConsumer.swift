import KafkaNIO
import KafkaWire

/// A record read from a partition.
public struct ConsumedRecord: Sendable, Equatable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var timestamp: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [RecordHeader]
}

/// Where a consumer without a committed offset starts.
public enum OffsetReset: String, Sendable {
    case earliest, latest
}

/// A member of a consumer group in Kafka's classic protocol (JoinGroup,
/// SyncGroup, Heartbeat, OffsetCommit), with the "consumer" protocol's
/// range and round-robin assignors: one group may hold these members and
/// those of any Kafka client. Records come from `poll`; a caller that
/// polls less often than the session timeout calls `maintain` from a
/// loop of its own so the membership lives (the HTTP proxy does).
public actor GroupConsumer {
    public struct Configuration: Sendable {
        public var group: String
        public var sessionTimeoutMilliseconds: Int32 = 10_000
        public var rebalanceTimeoutMilliseconds: Int32 = 30_000
        public var heartbeatIntervalMilliseconds: Int64 = 3_000
        public var offsetReset: OffsetReset = .latest
        public var fetchBytesMax: Int32 = 8 << 20
        /// How often a subscription by pattern looks for topics that came
        /// or went (Kafka's clients do it on their metadata refresh).
        public var patternRefreshMilliseconds: Int64 = 5_000

        public init(group: String) {
            self.group = group
        }
    }

    /// What a rebalance did to this member's partitions.
    public enum Rebalance: Sendable, Equatable {
        case revoked([TopicPartition])
        case assigned([TopicPartition])
    }

    public nonisolated let client: KafkaClient
    public let configuration: Configuration
    private let onRebalance: (@Sendable (Rebalance) async -> Void)?
    private let clock: @Sendable () -> Int64

    public private(set) var subscription: [String] = []
    /// A subscription by pattern: `subscription` is then the topics whose
    /// whole names match it, as last looked up.
    public private(set) var subscribedPattern: String?
    private var pattern: Regex<AnyRegexOutput>?
    private var patternCheckedAt: Int64?
    public private(set) var assignment: [TopicPartition] = []
    private var memberID = ""
    private var generation: Int32 = -1
    private var needsJoin = true
    private var lastHeartbeat: Int64 = 0
    /// The next offset to read per assigned partition.
    private var positions: [TopicPartition: Int64] = [:]
    /// Offsets last committed by this member (to skip unchanged commits).
    private var committed: [TopicPartition: Int64] = [:]
    private var closed = false
    /// A JoinGroup/SyncGroup exchange is under way (an actor is reentrant:
    /// a second caller must not start another).
    private var joining = false
    /// Partitions given by `assign`, read without a group membership.
    private var manual = false
    /// The coordinator answered that it is not (any more) the group's.
    private var coordinatorMoved = false

    static let joinVersion: Int16 = 5
    static let syncVersion: Int16 = 3
    static let heartbeatVersion: Int16 = 3
    static let leaveVersion: Int16 = 2
    static let commitVersion: Int16 = 7
    static let offsetFetchVersion: Int16 = 5
    static let listOffsetsVersion: Int16 = 2
    static let fetchVersion: Int16 = 11

    /// `clock`: a monotonic clock in milliseconds, for heartbeats.
    public init(client: KafkaClient, configuration: Configuration, clock: @escaping @Sendable () -> Int64,
                onRebalance: (@Sendable (Rebalance) async -> Void)? = nil) {
        self.client = client
        self.configuration = configuration
        self.clock = clock
        self.onRebalance = onRebalance
    }

    public var memberIdentifier: String { memberID }
    public var generationID: Int32 { generation }

    /// Subscribes to `topics` (replacing the last subscription); the next
    /// poll joins or rejoins the group.
    public func subscribe(_ topics: [String]) {
        subscription = Array(Set(topics)).sorted()
        forgetPattern()
        manual = false
        needsJoin = true
    }

    /// Subscribes to every topic whose whole name matches `source` (a
    /// regular expression, as Kafka's `subscribe(Pattern)`), now and as
    /// topics are made or deleted: each `maintain` looks again once
    /// `patternRefreshMilliseconds` have passed, and a change rejoins the
    /// group, whose members send the topics they matched (as Kafka's
    /// clients do). Internal topics never match. Throws when `source` is
    /// not a regular expression.
    public func subscribe(pattern source: String) throws {
        pattern = try Regex(source)
        subscribedPattern = source
        patternCheckedAt = nil
        subscription = []
        manual = false
        needsJoin = true
    }

    private func forgetPattern() {
        pattern = nil
        subscribedPattern = nil
        patternCheckedAt = nil
    }

    /// Looks up the topics the pattern matches when it is time to; a new
    /// set rejoins the group, an empty one leaves it.
    private func refreshPatternTopics() async throws {
        guard let pattern else { return }
        let now = clock()
        if let checked = patternCheckedAt, now - checked < configuration.patternRefreshMilliseconds { return }
        patternCheckedAt = now
        let response = try await client.metadata(nil)
        let matched = response.topics.filter { $0.errorCode == 0 && !$0.isInternal && $0.name.wholeMatch(of: pattern) != nil }.map(\.name).sorted()
        guard matched != subscription else { return }
        subscription = matched
        if matched.isEmpty {
            if !memberID.isEmpty { await leave() }
            assignment = []
            positions = [:]
        } else {
            needsJoin = true
        }
    }

    /// Reads `partitions` from the given offsets without joining the group
    /// (nil offset: the committed one, else the reset policy); commits
    /// still go to the group. Ends a subscription.
    public func assign(_ partitions: [TopicPartition: Int64?]) async throws {
        if !subscription.isEmpty && !memberID.isEmpty { await leave() }
        subscription = []
        forgetPattern()
        manual = true
        needsJoin = false
        assignment = partitions.keys.sorted()
        let committedNow = try await committedOffsets(partitions.filter { $0.value == nil }.map(\.key))
        positions = [:]
        for (partition, offset) in partitions {
            if let offset {
                positions[partition] = offset
            } else if let found = committedNow[partition], found >= 0 {
                positions[partition] = found
            } else {
                positions[partition] = try await listOffset(partition, earliest: configuration.offsetReset == .earliest)
            }
        }
    }

    /// Ends the subscription or assignment (and the membership).
    public func unsubscribe() async {
        if !memberID.isEmpty { await leave() }
        subscription = []
        forgetPattern()
        assignment = []
        positions = [:]
        manual = false
    }

    private func leave() async {
        let request = LeaveGroupRequest(groupID: configuration.group, memberID: memberID)
        _ = try? await coordinatorCall(.leaveGroup, version: Self.leaveVersion, { request.encode(&$0, version: Self.leaveVersion) },
                                       decode: { try ErrorOnlyResponse.decode(&$0, version: Self.leaveVersion) })
        memberID = ""
        generation = -1
    }

    /// The next offset to read per assigned partition.
    public var currentPositions: [TopicPartition: Int64] { positions }

    /// Moves a partition's position (seek).
    public func seek(_ partition: TopicPartition, to offset: Int64) {
        if assignment.contains(partition) { positions[partition] = offset }
    }

    /// Moves assigned partitions to their first or next offset.
    public func seek(_ partitions: [TopicPartition], toEnd: Bool) async throws {
        for partition in partitions where assignment.contains(partition) {
            positions[partition] = try await listOffset(partition, earliest: !toEnd)
        }
    }

    // MARK: Membership

    /// Keeps the membership alive: a heartbeat when one is due, a rejoin
    /// when the coordinator asks for one.
    public func maintain() async throws {
        guard !closed, !manual, !joining else { return }
        try await refreshPatternTopics()
        guard !subscription.isEmpty else { return }
        if needsJoin {
            joining = true
            defer { joining = false }
            try await join()
            return
        }
        let now = clock()
        guard now - lastHeartbeat >= configuration.heartbeatIntervalMilliseconds else { return }
        lastHeartbeat = now
        let request = HeartbeatRequest(groupID: configuration.group, generationID: generation, memberID: memberID)
        let code = try await coordinatorCall(.heartbeat, version: Self.heartbeatVersion, { request.encode(&$0, version: Self.heartbeatVersion) },
                                             decode: { try ErrorOnlyResponse.decode(&$0, version: Self.heartbeatVersion).errorCode })
        try handleMembershipError(code, "heartbeat")
        if needsJoin, !joining {
            joining = true
            defer { joining = false }
            try await join()
        }
    }

    private func handleMembershipError(_ code: Int16, _ what: String) throws {
        switch ErrorCode(rawValue: code) {
        case .none?: return
        case .rebalanceInProgress?, .illegalGeneration?:
            needsJoin = true
        case .unknownMemberId?:
            memberID = ""
            needsJoin = true
        case .notCoordinator?, .coordinatorNotAvailable?:
            // The group moved (a new leader of its offsets partition):
            // the next request asks where it is.
            coordinatorMoved = true
            throw ClientError(code: code, "\(what) in group \(configuration.group)")
        default:
            throw ClientError(code: code, "\(what) in group \(configuration.group)")
        }
    }

    private func noteCoordinator(_ code: Int16) {
        if code == ErrorCode.notCoordinator.rawValue || code == ErrorCode.coordinatorNotAvailable.rawValue { coordinatorMoved = true }
    }

    /// A request to the group's coordinator; a moved coordinator is found again.
    private func coordinatorCall<Answer: Sendable>(_ api: ApiKey, version: Int16, _ encode: @Sendable (inout ByteWriter) -> Void,
                                                   decode: @Sendable (inout ByteReader) throws -> Answer) async throws -> Answer {
        var lastError: any Error = ClientError("no coordinator")
        for attempt in 0...3 {
            do {
                let address = try await client.coordinator(configuration.group, refresh: attempt > 0 || coordinatorMoved)
                coordinatorMoved = false
                return try await client.call(address, api, version: version, encode, decode: decode)
            } catch let error as ClientError where error.isRetriable {
                lastError = error
                await client.forgetCoordinator(configuration.group)
                try await Task.sleep(for: .milliseconds(100 * (attempt + 1)))
            }
        }
        throw lastError
    }

    /// JoinGroup and SyncGroup until a generation is joined: the leader
    /// computes everyone's partitions.
    private func join() async throws {
        if !assignment.isEmpty {
            // Commit before giving partitions up, as the Java client does.
            try? await commit()
            let revoked = assignment
            assignment = []
            positions = [:]
            await onRebalance?(.revoked(revoked))
        }
        for _ in 0..<10 {
            let request = JoinGroupRequest(
                groupID: configuration.group, sessionTimeoutMilliseconds: configuration.sessionTimeoutMilliseconds,
                rebalanceTimeoutMilliseconds: configuration.rebalanceTimeoutMilliseconds, memberID: memberID, protocolType: "consumer",
                protocols: [("range", ConsumerProtocol.subscription(topics: subscription)), ("roundrobin", ConsumerProtocol.subscription(topics: subscription))])
            let joined = try await coordinatorCall(.joinGroup, version: Self.joinVersion, { request.encode(&$0, version: Self.joinVersion) },
                                                   decode: { try JoinGroupResponse.decode(&$0, version: Self.joinVersion) })
            if joined.errorCode == ErrorCode.memberIdRequired.rawValue || joined.errorCode == ErrorCode.unknownMemberId.rawValue {
                memberID = joined.errorCode == ErrorCode.memberIdRequired.rawValue ? joined.memberID : ""
                continue
            }
            if joined.errorCode == ErrorCode.rebalanceInProgress.rawValue { continue }
            noteCoordinator(joined.errorCode)
            guard joined.errorCode == 0 else { throw ClientError(code: joined.errorCode, "joining group \(configuration.group)") }
            memberID = joined.memberID
            generation = joined.generationID
            var plan: [String: [UInt8]] = [:]
            if joined.leader == memberID {
                let members = Dictionary(joined.members.map { ($0.memberID, ConsumerProtocol.topics(ofSubscription: $0.metadata)) }, uniquingKeysWith: { first, _ in first })
                var counts: [String: Int32] = [:]
                for topic in Set(members.values.flatMap { $0 }) {
                    if let count = try? await client.partitionCount(topic) { counts[topic] = count }
                }
                let assigned = joined.protocolName == "roundrobin"
                    ? ConsumerProtocol.roundRobin(members: members, partitionCounts: counts)
                    : ConsumerProtocol.range(members: members, partitionCounts: counts)
                plan = assigned.mapValues(ConsumerProtocol.assignment)
            }
            let sync = SyncGroupRequest(groupID: configuration.group, generationID: generation, memberID: memberID, assignments: plan)
            let synced = try await coordinatorCall(.syncGroup, version: Self.syncVersion, { sync.encode(&$0, version: Self.syncVersion) },
                                                   decode: { try SyncGroupResponse.decode(&$0, version: Self.syncVersion) })
            if synced.errorCode == ErrorCode.rebalanceInProgress.rawValue || synced.errorCode == ErrorCode.illegalGeneration.rawValue { continue }
            if synced.errorCode == ErrorCode.unknownMemberId.rawValue {
                memberID = ""
                continue
            }
            noteCoordinator(synced.errorCode)
            guard synced.errorCode == 0 else { throw ClientError(code: synced.errorCode, "syncing group \(configuration.group)") }
            assignment = ConsumerProtocol.partitions(ofAssignment: synced.assignment).sorted()
            needsJoin = false
            lastHeartbeat = clock()
            try await loadPositions()
            await onRebalance?(.assigned(assignment))
            return
        }
        throw ClientError(code: ErrorCode.rebalanceInProgress.rawValue, "group \(configuration.group) kept rebalancing")
    }

    /// Committed offsets of the assignment, the reset policy where none.
    private func loadPositions() async throws {
        guard !assignment.isEmpty else { return }
        let found = try await committedOffsets(assignment).filter { $0.value >= 0 }
        positions = [:]
        committed = found
        for partition in assignment {
            if let offset = found[partition] {
                positions[partition] = offset
            } else {
                positions[partition] = try await listOffset(partition, earliest: configuration.offsetReset == .earliest)
            }
        }
    }

    private func listOffset(_ partition: TopicPartition, earliest: Bool) async throws -> Int64 {
        let request = ListOffsetsRequest(topics: [.init(name: partition.topic, partitions: [.init(index: partition.partition, timestamp: earliest ? -2 : -1)])])
        for attempt in 0...client.configuration.retries {
            let address = try await client.leader(partition, refresh: attempt > 0)
            let answer = try await client.call(address, .listOffsets, version: Self.listOffsetsVersion, { request.encode(&$0, version: Self.listOffsetsVersion) },
                                               decode: { try ListOffsetsResponse.decode(&$0, version: Self.listOffsetsVersion).topics.first?.partitions.first })
            guard let answer else { throw ClientError("no offsets for \(partition)") }
            if answer.errorCode == 0 { return answer.offset }
            let error = ClientError(code: answer.errorCode, "offsets of \(partition)")
            guard error.isRetriable else { throw error }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClientError(code: ErrorCode.leaderNotAvailable.rawValue, "offsets of \(partition)")
    }

    // MARK: Records

    /// Records from the assigned partitions, waiting up to `maxWait`
    /// milliseconds for some; joins the group first when needed. Positions
    /// move past what is returned.
    public func poll(maxWaitMilliseconds: Int32, bytesMax: Int32? = nil) async throws -> [ConsumedRecord] {
        guard !closed else { throw ClientError("the consumer is closed") }
        try await maintain()
        guard !assignment.isEmpty, !joining else {
            try await Task.sleep(for: .milliseconds(Int64(min(maxWaitMilliseconds, 200))))
            return []
        }
        let fetchGeneration = generation
        var byLeader: [String: [TopicPartition]] = [:]
        for partition in assignment {
            byLeader[try await client.leader(partition), default: []].append(partition)
        }
        let asked = positions
        let budget = bytesMax ?? configuration.fetchBytesMax
        let client = self.client
        let results = await withTaskGroup(of: (String, Result<FetchResponse, any Error>).self) { group in
            for (address, partitions) in byLeader {
                let topics = Dictionary(grouping: partitions, by: \.topic).map { topic, parts in
                    FetchRequest.Topic(name: topic, partitions: parts.map { .init(index: $0.partition, fetchOffset: asked[$0] ?? 0, partitionBytesMax: budget) })
                }
                let request = FetchRequest(maxWaitMilliseconds: maxWaitMilliseconds, minBytes: 1, maxBytes: budget, topics: topics)
                group.addTask {
                    do {
                        let response = try await client.call(address, .fetch, version: Self.fetchVersion, { request.encode(&$0, version: Self.fetchVersion) },
                                                             decode: { try FetchResponse.decode(&$0, version: Self.fetchVersion) })
                        return (address, .success(response))
                    } catch {
                        return (address, .failure(error))
                    }
                }
            }
            var all: [(String, Result<FetchResponse, any Error>)] = []
            for await result in group { all.append(result) }
            return all
        }
        // A rebalance while the fetch waited: its records are not ours to give.
        guard generation == fetchGeneration, !needsJoin else { return [] }
        var records: [ConsumedRecord] = []
        var refreshLeaders = false
        for (_, result) in results {
            guard case .success(let response) = result else {
                refreshLeaders = true
                continue
            }
            for topic in response.topics {
                for answer in topic.partitions {
                    let place = TopicPartition(topic.name, answer.index)
                    guard let from = positions[place], from == asked[place] else { continue }
                    switch ErrorCode(rawValue: answer.errorCode) {
                    case .none?:
                        var next = from
                        for blob in answer.batches {
                            for batch in try RecordBatch.split(stored: blob) where batch.lastOffset >= next {
                                if !batch.isControl {
                                    for record in try batch.records() {
                                        let offset = batch.baseOffset + Int64(record.offsetDelta)
                                        guard offset >= next else { continue }
                                        records.append(ConsumedRecord(topic: topic.name, partition: answer.index, offset: offset,
                                                                      timestamp: batch.baseTimestamp + record.timestampDelta,
                                                                      key: record.key, value: record.value, headers: record.headers))
                                    }
                                }
                                next = batch.nextOffset
                            }
                        }
                        positions[place] = next
                    case .offsetOutOfRange?:
                        positions[place] = try await listOffset(place, earliest: configuration.offsetReset == .earliest)
                    default:
                        refreshLeaders = true
                    }
                }
            }
        }
        if refreshLeaders { _ = try? await client.metadata(subscription) }
        return records
    }

    /// Commits `offsets` (the next offset to read, per partition), or
    /// the current positions when nil.
    public func commit(_ offsets: [TopicPartition: Int64]? = nil) async throws {
        let chosen = (offsets ?? positions).filter { committed[$0.key] != $0.value }
        guard !chosen.isEmpty else { return }
        guard generation >= 0 || offsets != nil || manual else { return }
        let topics = Dictionary(grouping: chosen, by: \.key.topic).map { topic, entries in
            (name: topic, partitions: entries.map { OffsetCommitRequest.Partition(index: $0.key.partition, offset: $0.value, metadata: nil) })
        }
        let request = OffsetCommitRequest(groupID: configuration.group, generationID: generation, memberID: memberID, topics: topics)
        let response = try await coordinatorCall(.offsetCommit, version: Self.commitVersion, { request.encode(&$0, version: Self.commitVersion) },
                                                 decode: { try OffsetCommitResponse.decode(&$0, version: Self.commitVersion) })
        for topic in response.topics {
            for partition in topic.partitions {
                if partition.errorCode != 0 {
                    try handleMembershipError(partition.errorCode, "committing \(topic.name)/\(partition.index)")
                    throw ClientError(code: partition.errorCode, "committing \(topic.name)/\(partition.index)")
                }
                let place = TopicPartition(topic.name, partition.index)
                committed[place] = chosen[place]
            }
        }
    }

    /// The group's committed offsets for `partitions`.
    public func committedOffsets(_ partitions: [TopicPartition]) async throws -> [TopicPartition: Int64] {
        // Nothing to ask (an `assign` with every offset given): no call, so
        // no coordinator, and no right to the group, is needed. (An empty
        // list would ask for every partition the group has.)
        guard !partitions.isEmpty else { return [:] }
        let byTopic = Dictionary(grouping: partitions, by: \.topic).map { (name: $0.key, partitions: $0.value.map(\.partition)) }
        let request = OffsetFetchRequest(groupID: configuration.group, topics: byTopic)
        let response = try await coordinatorCall(.offsetFetch, version: Self.offsetFetchVersion, { request.encode(&$0, version: Self.offsetFetchVersion) },
                                                 decode: { try OffsetFetchResponse.decode(&$0, version: Self.offsetFetchVersion) })
        noteCoordinator(response.errorCode)
        guard response.errorCode == 0 else { throw ClientError(code: response.errorCode, "reading the offsets of group \(configuration.group)") }
        var found: [TopicPartition: Int64] = [:]
        for topic in response.topics {
            for partition in topic.partitions where partition.errorCode == 0 { found[TopicPartition(topic.name, partition.index)] = partition.offset }
        }
        return found
    }

    /// Leaves the group (its partitions go to the others at once).
    public func close(commit shouldCommit: Bool = false) async {
        guard !closed else { return }
        if shouldCommit { try? await commit() }
        closed = true
        if !memberID.isEmpty { await leave() }
        assignment = []
        positions = [:]
    }

    public var isClosed: Bool { closed }

    /// Records as an async sequence: each step polls until some arrive;
    /// it ends when the consumer closes or the task is cancelled.
    public nonisolated func records(maxWaitMilliseconds: Int32 = 500) -> Records {
        Records(consumer: self, maxWaitMilliseconds: maxWaitMilliseconds)
    }

    public struct Records: AsyncSequence, Sendable {
        public typealias Element = ConsumedRecord
        let consumer: GroupConsumer
        let maxWaitMilliseconds: Int32

        public struct AsyncIterator: AsyncIteratorProtocol {
            let consumer: GroupConsumer
            let maxWaitMilliseconds: Int32
            var buffered: [ConsumedRecord] = []
            var next = 0

            public mutating func next() async throws -> ConsumedRecord? {
                while next == buffered.count {
                    if Task.isCancelled { return nil }
                    if await consumer.isClosed { return nil }
                    buffered = try await consumer.poll(maxWaitMilliseconds: maxWaitMilliseconds)
                    next = 0
                }
                defer { next += 1 }
                return buffered[next]
            }
        }

        public func makeAsyncIterator() -> AsyncIterator {
            AsyncIterator(consumer: consumer, maxWaitMilliseconds: maxWaitMilliseconds)
        }
    }
}
