import KafkaNIO
import KafkaWire

/// Where a client finds the cluster and how it proves itself.
public struct ClientConfiguration: Sendable {
    /// host:port of one or more brokers; Metadata gives the rest.
    public var bootstrap: [String]
    public var clientID: String
    /// TLS and SASL PLAIN for every connection.
    public var security: KafkaClientSecurity
    /// A broker in this process: addresses it says are its own are asked
    /// without a socket (the HTTP proxy inside the broker).
    public var local: (any KafkaLocalBroker)?
    /// How often a request refused with a retriable error (leadership
    /// moving, a topic just made) is asked again before the error is
    /// given to the caller.
    public var retries: Int

    public init(bootstrap: [String], clientID: String = "postduif-client", security: KafkaClientSecurity = .none,
                local: (any KafkaLocalBroker)? = nil, retries: Int = 20) {
        self.bootstrap = bootstrap
        self.clientID = clientID
        self.security = security
        self.local = local
        self.retries = retries
    }
}

/// A refusal the caller can act on: the Kafka error code where the broker
/// gave one (`ErrorCode`'s names), else nil with what went wrong.
public struct ClientError: Error, Sendable, CustomStringConvertible {
    public var code: Int16?
    public var message: String

    public init(code: Int16? = nil, _ message: String) {
        self.code = code
        self.message = message
    }

    public var errorCode: ErrorCode? { code.flatMap(ErrorCode.init(rawValue:)) }

    public var description: String {
        guard let code else { return message }
        return "\(message) (Kafka error \(code)\(errorCode.map { " \($0)" } ?? ""))"
    }

    /// Errors that pass by themselves: leadership moving, replicas
    /// catching up, a topic just created, a coordinator loading.
    public static let retriableCodes: Set<ErrorCode> = [
        .notLeaderOrFollower, .leaderNotAvailable, .notEnoughReplicas, .notEnoughReplicasAfterAppend, .requestTimedOut,
        .unknownTopicOrPartition, .coordinatorLoadInProgress, .coordinatorNotAvailable, .notCoordinator,
    ]

    public var isRetriable: Bool { code == nil || errorCode.map(Self.retriableCodes.contains) == true }
}

/// A topic's partition.
public struct TopicPartition: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(_ topic: String, _ partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public static func < (lhs: TopicPartition, rhs: TopicPartition) -> Bool {
        (lhs.topic, lhs.partition) < (rhs.topic, rhs.partition)
    }

    public var description: String { "\(topic)/\(partition)" }
}

/// The connections of one client to a cluster and what Metadata told it:
/// brokers, each partition's leader, group coordinators. Producers,
/// consumers and the admin calls share one.
public actor KafkaClient {
    public let configuration: ClientConfiguration
    private var connections: [String: KafkaClientConnection] = [:]
    private var brokers: [Int32: String] = [:]
    /// Each topic's partitions that have a leader, and where it is.
    private var layouts: [String: [Int32: String]] = [:]
    /// Each topic's partition count, leaders or not: a key's partition is
    /// its hash modulo this, never modulo the partitions that happen to
    /// have a leader (during an election a partition has none).
    private var partitionCounts: [String: Int32] = [:]
    private var coordinators: [String: String] = [:]

    public init(_ configuration: ClientConfiguration) {
        self.configuration = configuration
    }

    /// A connection to `address`, made when first asked for and shared by
    /// every request of this client to that broker.
    public func connection(_ address: String) async throws -> KafkaClientConnection {
        if let open = connections[address] { return open }
        let made = try await openConnection(address)
        // Another caller may have connected while this one waited.
        if let open = connections[address] {
            await made.close()
            return open
        }
        connections[address] = made
        return made
    }

    /// A connection of the caller's own, outside the shared ones, which the
    /// caller closes: for long polls, since a broker answers one
    /// connection's requests in order and a waiting Fetch would hold up
    /// every other request behind it.
    public nonisolated func openConnection(_ address: String) async throws -> KafkaClientConnection {
        if let local = configuration.local, local.isSelf(address) {
            return KafkaClientConnection(local: local, clientID: configuration.clientID)
        }
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            throw ClientError("not a host:port address: \(address)")
        }
        let host = String(address[..<colon].filter { $0 != "[" && $0 != "]" })
        return try await KafkaClientConnection.connect(host: host, port: port, clientID: configuration.clientID, security: configuration.security)
    }

    /// Drops a connection that failed; the next request opens a new one.
    public func forget(_ address: String) {
        connections.removeValue(forKey: address)?.closeNow()
    }

    /// One request to `address`, decoded; a broken connection is dropped
    /// and reported as a retriable `ClientError`.
    public func call<Answer: Sendable>(_ address: String, _ api: ApiKey, version: Int16, _ encode: @Sendable (inout ByteWriter) -> Void,
                                       decode: @Sendable (inout ByteReader) throws -> Answer) async throws -> Answer {
        do {
            let connection = try await connection(address)
            var reader = try await connection.request(api, version: version, encode)
            return try decode(&reader)
        } catch let error as ClientError {
            throw error
        } catch {
            forget(address)
            throw ClientError("\(api) to \(address): \(error)")
        }
    }

    /// One request that has no answer (Produce with acks=0), written to
    /// `address`; a broken connection is dropped and reported.
    public func send(_ address: String, _ api: ApiKey, version: Int16, _ encode: @Sendable (inout ByteWriter) -> Void) async throws {
        do {
            _ = try await connection(address).send(api, version: version, expectsResponse: false, encode).get()
        } catch {
            forget(address)
            throw ClientError("\(api) to \(address): \(error)")
        }
    }

    /// Any broker that answers: those Metadata named, then the bootstrap list.
    func anyBroker<Answer: Sendable>(_ ask: @Sendable (String) async throws -> Answer) async throws -> Answer {
        var lastError: any Error = ClientError("no broker to ask")
        for address in Array(brokers.values.sorted()) + configuration.bootstrap {
            do {
                return try await ask(address)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    static let metadataVersion: Int16 = 8

    /// Metadata of `topics` (nil: all), remembered for leader lookups.
    @discardableResult
    public func metadata(_ topics: [String]?, autoCreate: Bool = false) async throws -> MetadataResponse {
        let request = MetadataRequest(topics: topics, allowAutoTopicCreation: autoCreate)
        let response = try await anyBroker { address in
            try await self.call(address, .metadata, version: Self.metadataVersion, { request.encode(&$0, version: Self.metadataVersion) },
                           decode: { try MetadataResponse.decode(&$0, version: Self.metadataVersion) })
        }
        brokers = Dictionary(response.brokers.map { ($0.nodeID, "\($0.host):\($0.port)") }, uniquingKeysWith: { first, _ in first })
        for topic in response.topics where topic.errorCode == 0 {
            partitionCounts[topic.name] = Int32(topic.partitions.count)
            var leaders: [Int32: String] = [:]
            for partition in topic.partitions {
                if let address = brokers[partition.leaderID] { leaders[partition.index] = address }
            }
            layouts[topic.name] = leaders
        }
        return response
    }

    /// The address of the leader of `topic`/`partition`.
    public func leader(_ partition: TopicPartition, refresh: Bool = false) async throws -> String {
        if !refresh, let address = layouts[partition.topic]?[partition.partition] { return address }
        let response = try await metadata([partition.topic])
        guard let topic = response.topics.first(where: { $0.name == partition.topic }) else { throw ClientError(code: ErrorCode.unknownTopicOrPartition.rawValue, "no topic \(partition.topic)") }
        guard topic.errorCode == 0 else { throw ClientError(code: topic.errorCode, "metadata of \(partition.topic)") }
        guard let address = layouts[partition.topic]?[partition.partition] else {
            let known = topic.partitions.contains { $0.index == partition.partition }
            throw ClientError(code: (known ? ErrorCode.leaderNotAvailable : .unknownTopicOrPartition).rawValue, "no leader for \(partition)")
        }
        return address
    }

    /// Every partition's leader of `topic` (remembered until `refresh`),
    /// asked again every 100 ms while a partition has none (a topic just
    /// made, a failover), at most `attempts` times.
    public func leaders(of topic: String, refresh: Bool = false, attempts: Int = 100) async throws -> [Int32: String] {
        if !refresh, let known = layouts[topic], !known.isEmpty, Int32(known.count) == partitionCounts[topic] { return known }
        var lastError = ClientError(code: ErrorCode.leaderNotAvailable.rawValue, "\(topic) has partitions without a leader")
        for attempt in 0..<max(attempts, 1) {
            if attempt > 0 { try await Task.sleep(for: .milliseconds(100)) }
            let response = try await metadata([topic])
            guard let found = response.topics.first(where: { $0.name == topic }), !found.partitions.isEmpty else {
                lastError = ClientError(code: ErrorCode.unknownTopicOrPartition.rawValue, "no topic \(topic)")
                continue
            }
            guard found.errorCode == 0 else {
                lastError = ClientError(code: found.errorCode, "metadata of \(topic)")
                continue
            }
            if let leaders = layouts[topic], leaders.count == found.partitions.count { return leaders }
        }
        throw lastError
    }

    /// How many partitions `topic` has (Metadata, remembered). With
    /// `autoCreate`, a broker that creates topics on first use makes it (as
    /// Kafka's producers ask).
    public func partitionCount(_ topic: String, autoCreate: Bool = false) async throws -> Int32 {
        if let count = partitionCounts[topic], count > 0 { return count }
        let response = try await metadata([topic], autoCreate: autoCreate)
        guard let found = response.topics.first(where: { $0.name == topic }) else { throw ClientError(code: ErrorCode.unknownTopicOrPartition.rawValue, "no topic \(topic)") }
        guard found.errorCode == 0 else { throw ClientError(code: found.errorCode, "metadata of \(topic)") }
        return Int32(found.partitions.count)
    }

    static let findCoordinatorVersion: Int16 = 2

    /// The address of `group`'s coordinator (FindCoordinator, remembered
    /// until `refresh`).
    public func coordinator(_ group: String, refresh: Bool = false) async throws -> String {
        if !refresh, let address = coordinators[group] { return address }
        let request = FindCoordinatorRequest(key: group)
        let response = try await anyBroker { address in
            try await self.call(address, .findCoordinator, version: Self.findCoordinatorVersion, { request.encode(&$0, version: Self.findCoordinatorVersion) },
                           decode: { try FindCoordinatorResponse.decode(&$0, version: Self.findCoordinatorVersion) })
        }
        guard response.errorCode == 0 else { throw ClientError(code: response.errorCode, "finding the coordinator of group \(group)\(response.errorMessage.map { ": \($0)" } ?? "")") }
        let address = "\(response.host):\(response.port)"
        coordinators[group] = address
        return address
    }

    public func forgetCoordinator(_ group: String) {
        coordinators.removeValue(forKey: group)
    }

    /// Closes every connection.
    public func close() async {
        for connection in connections.values { await connection.close() }
        connections = [:]
    }
}
