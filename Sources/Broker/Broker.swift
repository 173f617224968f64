import Cluster
import Coordination
import Core
import Foundation
import KafkaNIO
import KafkaWire
import LogStore
import Logging
import Metrics
import Security
import Synchronization

// Broker.swift holds the node's state; each API family answers in its
// own file (RequestRouter.swift dispatches to them).

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
    /// The one owner of every partition's high watermark on this node.
    public let highWatermarks: HighWatermarks
    /// The node's cluster side, once attached (`attach`); nil on a single node.
    let clusterNode = Mutex<ClusterNode?>(nil)
    var cluster: ClusterNode? { clusterNode.withLock { $0 } }
    /// APIs of the broker's own, registered by services above it (`register`).
    let extensions = Mutex<[Int16: RegisteredExtension]>([:])
    /// Failed SASL exchanges by client address, in the last minute.
    let saslFailures = Mutex(AttemptLimiter(limit: Limits.saslFailuresPerMinute, windowMilliseconds: 60_000))
    /// The time the SASL failure limits count by.
    let clock: any MonotonicClock = SystemClock()
    /// The ACLs in force (a single node's from its store, a cluster's from etcd).
    let aclState: AclState
    /// Serialises a single node's ACL changes.
    let aclWrites = Mutex(())
    /// Dynamic broker configs (AlterConfigs on a broker), by Kafka's broker
    /// names: a single node's from its store, a cluster's from etcd.
    let dynamicConfigs: Mutex<DynamicConfigs>
    /// Serialises a single node's changes of its dynamic defaults.
    let brokerConfigWrites = Mutex(())

    /// Joins a cluster: Metadata, leadership checks, topic creation and
    /// producer ids go through `node` from now on.
    public func attach(_ node: ClusterNode) {
        clusterNode.withLock { $0 = node }
    }

    /// True while the Kafka listener is bound (for `/ready`).
    public var isListening: Bool { listening.withLock { $0 } }
    /// True once the Kafka listener is bound and, in a cluster, the broker
    /// has registered and read the cluster (`/ready`): before that a
    /// CreateTopics it answered would not count it among the live brokers.
    public var isReady: Bool { isListening && cluster?.hasJoined != false }
    /// The leader epoch a single node stamps; a cluster's controller bumps it.
    let leaderEpoch: Int32 = 0

    public init(store: LogStore, configuration: BrokerConfiguration, logger: Logger, replication: ReplicationState? = nil) {
        self.replication = replication
        self.store = store
        self.configuration = configuration
        self.logger = logger
        aclState = AclState(Self.loadAcls(store, logger: logger), superUsers: configuration.superUsers)
        dynamicConfigs = Mutex(DynamicConfigs(
            broker: Self.loadBrokerConfigs(store, record: Self.ownConfigsRecord, logger: logger),
            cluster: Self.loadBrokerConfigs(store, record: Self.defaultConfigsRecord, logger: logger)))
        // Group deadlines are seconds apart; 20 ms is precise enough.
        groups = GroupCoordinator(initialRebalanceDelay: configuration.initialRebalanceDelay,
                                  deadlines: ParkedTimeouts(tick: .milliseconds(20)), logger: logger)
        offsets = OffsetsTopic(partitionCount: configuration.offsetsTopicPartitions)
        highWatermarks = replication?.highWatermarks ?? HighWatermarks()
        // Fetches and the fan-out waiting for committed data.
        highWatermarks.observe(readsLog: true) { [notifier] id, _ in notifier.notify(id) }
        // On a single node everything the log holds at start survived as
        // written: acknowledged batches were synced, and a batch written but
        // not yet acknowledged when the process died is kept, as Kafka keeps it.
        // Not in a cluster: there a batch the process wrote and no follower
        // copied before it died is not committed. Its high watermark starts
        // where the log's checkpoint left it and moves as the followers
        // fetch, once etcd says who leads (ReplicationState.lead). Taken
        // from the log end, a producer's retry of that batch, a duplicate,
        // was acknowledged at once, and the next leader cut the batch: the
        // fault campaign lost two acknowledged records so (seed 20261207
        // round 366, ADR 0032).
        if !configuration.isClustered {
            for partition in store.allPartitions {
                _ = try? highWatermarks.handle(.appendedDurably(logEndOffset: partition.logEndOffset), for: partition)
            }
        }
        // Defaults may have changed since the topics were stored (flags); a
        // cluster's node does this with etcd's configs once it reads them.
        if !configuration.isClustered { reconfigureTopics() }
    }

    /// The APIs a listener advertises: SASL's only where SASL is asked for.
    func supportedAPIs(_ session: ClientSession) -> [ApiKey: ClosedRange<Int16>] {
        SupportedAPIs.ranges(sasl: session.requiresSASL)
    }

    var users: UserStore { UserStore(path: configuration.effectiveUsersFile) }

    /// In a cluster, only the leader takes produces and consumer fetches.
    public func leads(topic: String, index: Int32) -> Bool {
        guard cluster != nil else { return true }
        return replication?.leaderEpoch(PartitionID(topic: topic, index: index)) != nil
    }
}
