import Foundation
import KafkaNIO
import LogStore
import Security

/// A broker's settings. The defaults here are the one source of truth:
/// flags, environment variables and the config file only override them
/// (Docs/operations.md lists each).
public struct BrokerConfiguration: Sendable {
    /// The address the Kafka listener binds to.
    public var host = "127.0.0.1"
    public var port = 9092
    /// The address clients are told to connect to (Metadata, FindCoordinator).
    public var advertisedHost: String? = nil
    public var advertisedPort: Int? = nil
    public var nodeID: Int32 = 1
    public var dataDirectory = "./data"
    public var durability: Durability = .fsync
    /// Partitions of a topic created without a count (auto-creation, or -1).
    public var defaultPartitionCount: Int32 = 1
    /// Create a topic when a client's Metadata request names an unknown one
    /// and allows it (Kafka's `auto.create.topics.enable`).
    public var autoCreateTopics = true
    /// Topics that keep the conversation index (`postduif.conversation.index`)
    /// unless their creation says otherwise; the composition root names the
    /// chat's conversations topic here, so neither the broker nor the log
    /// store decides by a topic's name.
    public var conversationIndexedTopics: Set<String> = []
    /// Topics whose records are state by key, compacted unless their own
    /// `cleanup.policy` says otherwise (`__consumer_offsets` always; the
    /// composition root adds the chat's accounts, sessions, state and read
    /// markers).
    public var compactedTopics: Set<String> = [OffsetsTopic.name]
    /// The largest request frame accepted; bigger frames close the connection.
    public var requestBytesMax = 100 << 20
    /// The longest a Fetch may wait for data, whatever the client asks.
    public var fetchWaitMax: Duration = .seconds(30)
    /// How long a new consumer group waits for more members before its first
    /// generation (Kafka's group.initial.rebalance.delay.ms, 3 s there).
    public var initialRebalanceDelay: Duration = .milliseconds(500)

    /// etcd's client URLs; empty runs a single node without etcd.
    public var etcdEndpoints: [String] = []
    /// The cluster's name: its keys live under /postduif/<name>/ in etcd.
    public var clusterName = "postduif"
    /// Replicas of a topic created without a factor, at most the live brokers (cluster only).
    public var defaultReplicationFactor: Int16 = 3
    /// Fewer in-sync replicas than this refuse acks=all (Kafka's min.insync.replicas).
    public var minInsyncReplicas = 1
    /// A follower not caught up for this long leaves the ISR (replica.lag.time.max.ms).
    public var replicaLagMax: Duration = .seconds(30)
    /// Bytes per second a replica being added by a reassignment copies at
    /// most (Kafka's follower.replication.throttled.rate); nil: no limit.
    public var reassignmentThrottleBytesPerSecond: Int64?
    /// This broker's rack (Kafka's broker.rack): replicas spread across racks.
    public var rack: String?
    /// How often the controller gives leadership back to preferred replicas
    /// in sync (Kafka's leader.imbalance.check.interval.seconds); nil: never.
    public var leaderRebalanceInterval: Duration? = .seconds(10)
    /// How long a deleted topic's record stays in etcd at most, for a
    /// broker that held a replica and is away: it deletes its replica when
    /// it returns. The record goes sooner once every holder has said so.
    public var deletedTopicRetention: Duration = .seconds(7 * 24 * 3600)
    /// On SIGTERM, how long a broker waits for its leaderships to move to
    /// in-sync followers before it stops anyway (controlled shutdown).
    public var controlledShutdownTimeout: Duration = .seconds(10)
    /// Partitions of `__consumer_offsets`, which holds groups' committed
    /// offsets in a cluster (Kafka's offsets.topic.num.partitions, 50 there;
    /// fewer here, since each replicated partition costs a fetcher).
    public var offsetsTopicPartitions: Int32 = 10

    /// Topic defaults from this broker's flags, by Kafka's broker names
    /// (`log.retention.ms`, `log.cleanup.policy`, ...): the static layer
    /// under the cluster's dynamic defaults (Docs/operations.md).
    public var topicDefaults: [String: String] = [:]
    /// The static topic defaults with `minInsyncReplicas` among them.
    public var staticTopicDefaults: [String: String] {
        var defaults = topicDefaults
        if minInsyncReplicas != 1, defaults["min.insync.replicas"] == nil { defaults["min.insync.replicas"] = String(minInsyncReplicas) }
        return defaults
    }
    /// How often retention and compaction look at every partition.
    public var retentionCheckInterval: Duration = .seconds(10)
    /// Compaction reads and writes at most this many bytes a second (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`), so produce latency holds.
    public var cleanerBytesPerSecond: Double = 32 * 1_048_576

    public var isClustered: Bool { !etcdEndpoints.isEmpty }

    /// Require SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) before any other request.
    public var saslEnabled = false
    /// The user file `postduif user` manages; defaults to `users.json` in the data directory.
    public var usersFile: String? = nil

    /// Named listeners (`--listeners`); nil: one listener on `host`:`port`,
    /// PLAINTEXT, or SASL_PLAINTEXT with `saslEnabled`, as before listeners.
    public var listeners: [Listener]? = nil
    /// The listener other brokers and the embedded gateway use.
    public var interBrokerListener: String? = nil
    /// The certificate, key and CAs of TLS listeners.
    public var tls: TLSFiles? = nil
    /// How a client certificate's subject becomes a user name.
    public var principalMapping = PrincipalMapping.standard
    /// Decide every request by the ACLs (`--authorizer`); off, everyone
    /// who connects (and authenticates, where asked) may do anything.
    public var authorizerEnabled = false
    /// Principals the authorizer always permits (`User:admin`), the
    /// brokers' own among them.
    public var superUsers: Set<String> = []
    /// How this broker proves itself to others' inter-broker listener
    /// (followers to leaders, the embedded gateway to other brokers).
    public var interBrokerClient = KafkaClientSecurity.none
    /// A TLS handshake not done by then closes the connection.
    public var tlsHandshakeTimeout: Duration = .seconds(10)

    public init() {}

    /// Every listener the broker serves.
    public var effectiveListeners: [Listener] {
        listeners ?? [Listener(name: saslEnabled ? SecurityProtocol.saslPlaintext.rawValue : SecurityProtocol.plaintext.rawValue,
                               securityProtocol: saslEnabled ? .saslPlaintext : .plaintext, host: host, port: port,
                               advertisedHost: advertisedHost, advertisedPort: advertisedPort)]
    }

    /// The listener brokers reach each other on: the one named, else the first.
    public var effectiveInterBrokerListener: Listener {
        let all = effectiveListeners
        return all.first { $0.name == interBrokerListener } ?? all[0]
    }

    /// Refuses settings the listeners cannot run with.
    public func checkListeners() throws(ListenerError) {
        let all = effectiveListeners
        if let interBrokerListener, !all.contains(where: { $0.name == interBrokerListener }) {
            throw ListenerError(description: "--inter-broker-listener \(interBrokerListener) is not among the listeners (\(all.map(\.name).joined(separator: ", ")))")
        }
        if all.contains(where: \.securityProtocol.usesTLS) && tls == nil {
            throw ListenerError(description: "an SSL or SASL_SSL listener needs --tls-cert-file and --tls-key-file")
        }
    }

    public var effectiveUsersFile: String { usersFile ?? (dataDirectory as NSString).appendingPathComponent("users.json") }

    /// Where the embedded gateway and other brokers reach this one.
    public var effectiveAdvertisedHost: String { effectiveInterBrokerListener.advertisedHost }
    public var effectiveAdvertisedPort: Int { effectiveInterBrokerListener.advertisedPort }
}
