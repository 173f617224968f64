import Cluster
import Coordination
import Core
import Foundation
import KafkaNIO
import LogStore
import Logging
import Security
import Synchronization

/// What a broker in a cluster knows of it, kept current from etcd's
/// watches: the Metadata answer and the leader checks read it.
public final class ClusterView: Sendable {
    public struct Snapshot: Sendable {
        /// Live brokers' inter-broker addresses.
        public var brokers: [Int32: String] = [:]
        /// Live brokers' addresses by listener.
        public var endpoints: [Int32: BrokerEndpoints] = [:]
        public var controller: Int32?
        public var assignments: [String: TopicAssignment] = [:]
        public var records: [PartitionID: (state: PartitionState, revision: Int64)] = [:]
        /// The cluster's ACLs (`acls` in etcd).
        public var acls: [AclBinding] = []
        /// The cluster's dynamic default configs (`configs/brokers` in etcd).
        public var defaultConfigs: [String: String] = [:]
        /// This broker's own dynamic configs (`configs/brokers/<id>`).
        public var ownConfigs: [String: String] = [:]
        /// Topics deleted from the cluster, by the key of their record.
        public var deletedTopics: [String: DeletedTopic] = [:]
        /// Brokers in a controlled shutdown.
        public var shuttingDown: Set<Int32> = []
        /// The etcd revision the view has applied everything up to.
        public var revision: Int64 = 0
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    func update(_ change: (inout Snapshot) -> Void) {
        state.withLock { change(&$0) }
    }

    /// Waits (at most `limit`) until the view has applied etcd's revision
    /// `revision`: a broker that wrote a change answers the requests after
    /// it from a view that shows it (read-your-writes). True when reached.
    @discardableResult
    func reach(_ revision: Int64, within limit: Duration = .seconds(5)) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while snapshot.revision < revision {
            guard ContinuousClock.now < deadline, (try? await Task.sleep(for: .milliseconds(5))) != nil else { return false }
        }
        return true
    }
}

/// A broker's life in a cluster: registration under a lease, the bid for
/// the controller role, the roles its partition records give it (leader:
/// track followers and write ISR changes; follower: copy from the leader),
/// topic creation and producer id blocks through etcd. `run` returns (with
/// an error) when the lease is lost: the node must then stop, since others
/// may have taken over its partitions.
public final class ClusterNode: Sendable {
    public let broker: Broker
    public let membership: Membership
    public let view: ClusterView
    let replication: ReplicationState
    let logger: Logger
    private let following = Mutex(Following())
    private let producerIDs = Mutex<(next: Int64, end: Int64)>((0, 0))
    static let producerIDBlock: Int64 = 1000
    private let creatingOffsetsTopic = Mutex(false)
    /// The lease this node registered under, once registered.
    private let lease = Mutex<Int64?>(nil)
    /// Set once the node is registered and has read the cluster: until
    /// then it cannot place replicas or answer Metadata with its peers.
    private let joined = Mutex(false)
    /// The deleted topics' records this broker has said its replica of is gone.
    private let reportedDeletions = Mutex<Set<String>>([])

    public init(broker: Broker, membership: Membership, view: ClusterView, replication: ReplicationState, logger: Logger) {
        self.broker = broker
        self.membership = membership
        self.view = view
        self.replication = replication
        self.logger = logger
    }

    var myID: Int32 { membership.brokerID }

    /// Registered under its lease and the cluster read once (for `/ready`).
    /// It stays true through later watch breaks and controller changes:
    /// readiness that flapped with them would pull every broker out of its
    /// Service at once.
    public var hasJoined: Bool { joined.withLock { $0 } }
    var coordination: any Coordination { membership.coordination }

    public func run() async throws {
        let lease = try await membership.register()
        self.lease.withLock { $0 = lease }
        logger.info("registered in the cluster", metadata: ["broker": "\(myID)", "address": "\(membership.address)", "lease": "\(lease)"])
        defer {
            for fetcher in following.withLock({ $0.fetchers.values }) { fetcher.task.cancel() }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.membership.keepAlive(lease: lease) }
            group.addTask { try await self.follow() }
            group.addTask { try await self.campaign(lease: lease) }
            group.addTask { try await self.writeISRChanges() }
            group.addTask { try await self.checkpointHighWatermarks() }
            // The first task to end (lease lost, a watch broken) ends the node.
            try await group.next()
            group.cancelAll()
        }
    }

    // MARK: The view and the roles

    /// Reads everything under the cluster's root, then follows its changes.
    /// A watch that breaks (etcd restarted, a connection dropped) is not the
    /// end of the node: it reads everything again and follows from there.
    /// Only the lease's end stops the node (`keepAlive` throws), because
    /// only then may others have taken over its partitions.
    func follow() async throws {
        while !Task.isCancelled {
            let (keyValues, revision) = try await untilAnswered("reading the cluster") { try await self.coordination.list(prefix: self.membership.root) }
            var fresh = ClusterView.Snapshot()
            for keyValue in keyValues { ClusterNode.apply(keyValue, deleted: false, root: membership.root, myID: myID, to: &fresh) }
            fresh.revision = revision
            view.update { $0 = fresh }
            broker.aclState.replace(fresh.acls)
            broker.applyDynamicConfigs({ $0 = DynamicConfigs(broker: fresh.ownConfigs, cluster: fresh.defaultConfigs) }, assignments: fresh.assignments)
            removeStaleReplicas(fresh)
            applyRoles()
            joined.withLock { $0 = true }
            await sayDeletedReplicasGone(fresh)
            do {
                for try await event in coordination.watch(prefix: membership.root, fromRevision: revision + 1) {
                    observe(event.keyValue, deleted: event.kind == .delete)
                    applyRoles()
                    if event.keyValue.key.hasPrefix(membership.root + "deleted-topics/") || event.keyValue.key.hasPrefix(membership.root + "topics/") {
                        await sayDeletedReplicasGone(view.snapshot)
                    }
                }
                logger.warning("the cluster watch ended; reading the cluster again")
            } catch {
                guard !Task.isCancelled else { return }
                logger.warning("the cluster watch broke; reading the cluster again", metadata: ["error": "\(error)"])
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    private func observe(_ keyValue: KeyValue, deleted: Bool) {
        let root = membership.root
        view.update {
            ClusterNode.apply(keyValue, deleted: deleted, root: root, myID: myID, to: &$0)
            $0.revision = max($0.revision, keyValue.modRevision)
        }
        if keyValue.key == root + Self.aclsKey { broker.aclState.replace(view.snapshot.acls) }
        if keyValue.key == membership.controllerKey, !deleted { broker.metrics.controllerChanges.increment() }
        // A config change applies on every replica as its watch sees it.
        if keyValue.key == root + Self.defaultConfigsKey || keyValue.key == root + ownConfigsKey {
            let snapshot = view.snapshot
            broker.applyDynamicConfigs({ $0 = DynamicConfigs(broker: snapshot.ownConfigs, cluster: snapshot.defaultConfigs) }, assignments: snapshot.assignments)
        } else if keyValue.key.hasPrefix(root + "topics/"), !deleted {
            broker.reconfigureTopics(assignments: view.snapshot.assignments)
        } else if keyValue.key.hasPrefix(root + "topics/") || keyValue.key.hasPrefix(root + "deleted-topics/") {
            removeStaleReplicas(view.snapshot)
        }
    }

    private static func apply(_ keyValue: KeyValue, deleted: Bool, root: String, myID: Int32, to snapshot: inout ClusterView.Snapshot) {
        let key = String(keyValue.key.dropFirst(root.count))
        if key.hasPrefix("brokers/"), let id = Int32(key.dropFirst("brokers/".count)) {
            let endpoints = deleted ? nil : BrokerEndpoints(registration: keyValue.value)
            snapshot.endpoints[id] = endpoints
            snapshot.brokers[id] = endpoints?.address
        } else if key == ClusterNode.aclsKey {
            snapshot.acls = deleted ? [] : (try? JSONDecoder().decode([AclBinding].self, from: Data(keyValue.value))) ?? snapshot.acls
        } else if key == ClusterNode.defaultConfigsKey {
            snapshot.defaultConfigs = deleted ? [:] : (try? JSONDecoder().decode([String: String].self, from: Data(keyValue.value))) ?? snapshot.defaultConfigs
        } else if key == ClusterNode.defaultConfigsKey + "/\(myID)" {
            snapshot.ownConfigs = deleted ? [:] : (try? JSONDecoder().decode([String: String].self, from: Data(keyValue.value))) ?? snapshot.ownConfigs
        } else if key.hasPrefix("shutting-down/"), let id = Int32(key.dropFirst("shutting-down/".count)) {
            if deleted { snapshot.shuttingDown.remove(id) } else { snapshot.shuttingDown.insert(id) }
        } else if key == "controller" {
            snapshot.controller = deleted ? nil : Int32(String(decoding: keyValue.value, as: UTF8.self))
        } else if key.hasPrefix("topics/"), deleted {
            snapshot.assignments[String(key.dropFirst("topics/".count))] = nil
        } else if key.hasPrefix("topics/"), let assignment = try? JSONDecoder().decode(TopicAssignment.self, from: Data(keyValue.value)) {
            snapshot.assignments[assignment.name] = assignment
        } else if key.hasPrefix("deleted-topics/") {
            snapshot.deletedTopics[key] = deleted ? nil : try? JSONDecoder().decode(DeletedTopic.self, from: Data(keyValue.value))
        } else if key.hasPrefix("partitions/") {
            let rest = key.dropFirst("partitions/".count)
            guard let slash = rest.lastIndex(of: "/"), let index = Int32(rest[rest.index(after: slash)...]) else { return }
            let id = PartitionID(topic: String(rest[..<slash]), index: index)
            if deleted {
                snapshot.records[id] = nil
            } else if let record = try? JSONDecoder().decode(PartitionState.self, from: Data(keyValue.value)) {
                snapshot.records[id] = (record, keyValue.modRevision)
            }
        }
    }

    /// Makes this node's roles match the partition records.
    private func applyRoles() {
        defer { restartFetchers() }
        let snapshot = view.snapshot
        var leftTopics: Set<String> = []
        for (id, entry) in snapshot.records {
            guard let assignment = snapshot.assignments[id.topic], Int(id.index) < assignment.replicas.count else { continue }
            let replicas = assignment.replicas[Int(id.index)]
            let record = entry.state
            guard replicas.contains(myID) else {
                if leaveReplica(id, record: record) { leftTopics.insert(id.topic) }
                continue
            }
            guard let log = localLog(id, assignment: assignment) else { continue }
            if record.leader == myID {
                stopFetching(id)
                if replication.leaderEpoch(id) != record.leaderEpoch {
                    // No copy from the former leader may land from now on.
                    _ = log.fenceReplicas()
                    replication.lead(id, replicas: replicas, isr: Set(record.isr), isrRevision: entry.revision, leaderID: myID, log: log, epoch: record.leaderEpoch,
                                     lagMaxMilliseconds: broker.configuration.replicaLagMax.milliseconds)
                    logger.info("leading", metadata: ["partition": "\(id)", "epoch": "\(record.leaderEpoch)", "isr": "\(record.isr.sorted())"])
                } else if let tracker = replication.tracker(id) {
                    if tracker.replicas != replicas {
                        // A reassignment began or ended: added replicas may join the ISR.
                        _ = try? broker.highWatermarks.handle(.replicasChanged(replicas), for: log)
                    }
                    if tracker.isr != Set(record.isr) && entry.revision > tracker.isrRevision {
                        // The controller changed the ISR (a broker's lease ended): act on etcd's word,
                        // unless this view is older than what the tracker holds (its own write).
                        if !tracker.isr.isSubset(of: Set(record.isr)) { broker.metrics.isrShrinks.increment() }
                        if !Set(record.isr).isSubset(of: tracker.isr) { broker.metrics.isrExpands.increment() }
                        _ = try? broker.highWatermarks.handle(.isrChanged(Set(record.isr), revision: entry.revision), for: log)
                    }
                }
            } else {
                if replication.leaderEpoch(id) != nil {
                    replication.stopLeading(id)
                    if id.topic == OffsetsTopic.name { broker.offsets.forget(partition: id.index) }
                    logger.info("no longer leading", metadata: ["partition": "\(id)", "leader": "\(record.leader)"])
                }
                if record.leader >= 0, let address = snapshot.brokers[record.leader] {
                    // A replica a reassignment adds copies under the throttle until it is in sync.
                    let throttled = assignment.move(of: id.index) != nil && !record.isr.contains(myID)
                    startFetching(id, from: record.leader, at: address, log: log, throttled: throttled)
                } else {
                    stopFetching(id)
                }
            }
        }
        for topic in leftTopics { removeLeftTopic(topic, snapshot: snapshot) }
    }

    /// A partition this broker is no longer a replica of (a reassignment
    /// moved it away): it stops leading and copying it, and once the record
    /// no longer counts it in sync, its copy goes. True when it had one.
    private func leaveReplica(_ id: PartitionID, record: PartitionState) -> Bool {
        stopFetching(id)
        if replication.leaderEpoch(id) != nil {
            replication.stopLeading(id)
            if id.topic == OffsetsTopic.name { broker.offsets.forget(partition: id.index) }
            logger.info("no longer leading", metadata: ["partition": "\(id)", "why": "moved to other replicas"])
        }
        guard record.leader != myID, !record.isr.contains(myID), let log = try? broker.store.partition(topic: id.topic, index: id.index) else { return false }
        if log.logEndOffset > log.logStartOffset {
            do {
                _ = log.fenceReplicas()
                _ = try log.truncate(to: log.logStartOffset)
                broker.highWatermarks.forget(id)
                logger.info("removed a replica moved to other brokers", metadata: ["partition": "\(id)"])
            } catch {
                logger.error("cannot remove a replica moved to other brokers", metadata: ["partition": "\(id)", "error": "\(error)"])
            }
        }
        return true
    }

    /// A topic none of whose partitions is on this broker any more: its
    /// local copy goes altogether.
    private func removeLeftTopic(_ topic: String, snapshot: ClusterView.Snapshot) {
        guard let assignment = snapshot.assignments[topic], !assignment.replicas.contains(where: { $0.contains(myID) }),
              let descriptor = broker.store.topic(named: topic) else { return }
        forgetLocal(topic, partitionCount: descriptor.configuration.partitionCount)
        do {
            try broker.store.deleteTopic(topic)
            logger.info("deleted a local replica", metadata: ["topic": "\(topic)", "why": "every partition moved to other brokers"])
        } catch {
            logger.error("cannot delete a local replica", metadata: ["topic": "\(topic)", "error": "\(error)"])
        }
    }

    /// Deletes the local replicas of topics the cluster deleted (their ids
    /// are in `deleted-topics/`) or made again under the same name (the
    /// cluster's id differs): a broker that was down when it happened
    /// catches up here. A local topic the cluster knows nothing about is
    /// kept, with a warning: etcd alone never makes a broker drop data.
    private func removeStaleReplicas(_ snapshot: ClusterView.Snapshot) {
        let deletedIDs = Set(snapshot.deletedTopics.values.compactMap(\.topicID))
        let deletedNames = Set(snapshot.deletedTopics.values.filter { $0.topicID == nil }.map(\.name))
        for descriptor in broker.store.topicDescriptors {
            let assignment = snapshot.assignments[descriptor.name]
            let stale: String?
            if let id = descriptor.clusterTopicID, deletedIDs.contains(id), assignment?.topicID != id {
                stale = "deleted from the cluster"
            } else if let id = descriptor.clusterTopicID, let current = assignment?.topicID, current != id {
                stale = "made again under the same name"
            } else if descriptor.clusterTopicID == nil, deletedNames.contains(descriptor.name), assignment?.topicID != nil || assignment == nil {
                stale = "deleted from the cluster"
            } else {
                if assignment == nil && !snapshot.assignments.isEmpty {
                    logger.warning("a local topic the cluster does not know; kept", metadata: ["topic": "\(descriptor.name)"])
                }
                stale = nil
            }
            guard let stale else { continue }
            forgetLocal(descriptor.name, partitionCount: descriptor.configuration.partitionCount)
            do {
                try broker.store.deleteTopic(descriptor.name)
                logger.info("deleted a local replica", metadata: ["topic": "\(descriptor.name)", "why": "\(stale)"])
            } catch {
                logger.error("cannot delete a local replica", metadata: ["topic": "\(descriptor.name)", "error": "\(error)"])
            }
        }
    }

    // MARK: Fetching from the closest replica (KIP-392)

    /// The in-sync follower a consumer in `clientRack` should fetch a
    /// partition led here from, or nil: no rack given, this broker in that
    /// rack, or no in-sync follower there (one stopping is passed over).
    func preferredReadReplica(_ id: PartitionID, clientRack: String) -> Int32? {
        guard !clientRack.isEmpty else { return nil }
        let snapshot = view.snapshot
        guard let entry = snapshot.records[id], entry.state.leader == myID, snapshot.endpoints[myID]?.rack != clientRack else { return nil }
        return entry.state.isr.filter { $0 != myID && snapshot.endpoints[$0]?.rack == clientRack && !snapshot.shuttingDown.contains($0) }.min()
    }

    /// The partition's leader epoch when this broker follows it in sync, so
    /// it may serve a consumer the leader sent here; nil otherwise.
    func followsInSync(_ id: PartitionID) -> Int32? {
        guard let entry = view.snapshot.records[id], entry.state.leader != myID, entry.state.leader >= 0, entry.state.isr.contains(myID) else { return nil }
        return entry.state.leaderEpoch
    }

    /// Tells the controller, for each deleted topic this broker held a
    /// replica of, that the replica is gone (`deleted-topic-replicas/`,
    /// under the record's lease), so the record can go once every holder
    /// has. A replica still here (its removal failed) is not reported; a
    /// failed write is tried again at the next change.
    private func sayDeletedReplicasGone(_ snapshot: ClusterView.Snapshot) async {
        let local = broker.store.topicDescriptors
        let due = reportedDeletions.withLock { reported -> [(key: String, lease: Int64)] in
            reported.formIntersection(snapshot.deletedTopics.keys)
            return snapshot.deletedTopics.compactMap { key, tombstone in
                guard let lease = tombstone.lease, tombstone.holders?.contains(myID) == true, !reported.contains(key) else { return nil }
                let held = local.contains { $0.clusterTopicID == tombstone.topicID && (tombstone.topicID != nil || $0.name == tombstone.name) }
                return held ? nil : (key, lease)
            }
        }
        for (key, lease) in due {
            let name = key.dropFirst("deleted-topics/".count)
            do {
                _ = try await coordination.put(membership.root + "deleted-topic-replicas/\(name)/\(myID)", [], lease: lease)
                reportedDeletions.withLock { _ = $0.insert(key) }
            } catch {
                logger.warning("cannot say a deleted topic's replica is gone yet", metadata: ["record": "\(key)", "error": "\(error)"])
            }
        }
    }

    /// Stops following and leading a topic's partitions here.
    private func forgetLocal(_ topic: String, partitionCount: Int32) {
        for index in 0..<partitionCount {
            let id = PartitionID(topic: topic, index: index)
            stopFetching(id)
            if replication.leaderEpoch(id) != nil { replication.stopLeading(id) }
        }
        restartFetchers()
    }

    /// This broker's replica of a partition, creating the topic locally first.
    private func localLog(_ id: PartitionID, assignment: TopicAssignment) -> PartitionLog? {
        let store = broker.store
        if let local = store.topic(named: id.topic), local.configuration.partitionCount < Int32(assignment.replicas.count) {
            // The topic grew (CreatePartitions): this replica grows with it.
            do {
                try store.addPartitions(id.topic, count: Int32(assignment.replicas.count))
            } catch {
                logger.error("cannot add partitions to a local replica", metadata: ["topic": "\(id.topic)", "error": "\(error)"])
            }
        }
        if store.topic(named: id.topic) == nil {
            do {
                let configuration = try broker.topicConfiguration(name: id.topic, partitionCount: Int32(assignment.replicas.count),
                                                                   configs: assignment.configs.map { ($0.key, $0.value) })
                try store.createTopic(id.topic, configuration: configuration, clusterTopicID: assignment.topicID)
            } catch let error as LogStoreError where error.code == .topicAlreadyExists {
                // Made meanwhile: fine.
            } catch {
                logger.error("cannot create a local replica of a topic", metadata: ["topic": "\(id.topic)", "error": "\(error)"])
                return nil
            }
        }
        return try? store.partition(topic: id.topic, index: id.index)
    }

    /// What this broker copies: each followed partition's leader, and one
    /// `ReplicaFetcher` per leader over all of them. One per partition (as
    /// before) answered a Produce to three partitions with three Fetch
    /// answers to each follower, three appends and three new Fetches.
    private struct Following {
        var partitions: [PartitionID: (fetcher: FetcherKey, address: String, log: PartitionLog)] = [:]
        var fetchers: [FetcherKey: (address: String, partitions: Set<PartitionID>, task: Task<Void, Never>)] = [:]
    }

    /// One fetcher per leader, and another for the replicas a reassignment
    /// adds there (throttled, so the catch-up cannot starve the rest).
    private struct FetcherKey: Hashable {
        var leader: Int32
        var throttled: Bool
    }

    private func startFetching(_ id: PartitionID, from leader: Int32, at address: String, log: PartitionLog, throttled: Bool = false) {
        let key = FetcherKey(leader: leader, throttled: throttled && broker.configuration.reassignmentThrottleBytesPerSecond != nil)
        let changed = following.withLock { following in
            if let current = following.partitions[id], current.fetcher == key, current.address == address { return false }
            following.partitions[id] = (key, address, log)
            return true
        }
        if changed { logger.info("following", metadata: ["partition": "\(id)", "leader": "\(leader)", "address": "\(address)"]) }
    }

    private func stopFetching(_ id: PartitionID) {
        following.withLock { _ = $0.partitions.removeValue(forKey: id) }
    }

    /// Starts a fetcher anew for each leader whose followed partitions (or
    /// address) changed, once per pass over the records. The new fetcher
    /// fences its partitions when made, so nothing the old one still
    /// receives lands; the old one closes its connection when cancelled.
    private func restartFetchers() {
        let myID = self.myID
        let logger = self.logger
        following.withLock { following in
            let byFetcher = Dictionary(grouping: following.partitions, by: \.value.fetcher)
            for key in Set(byFetcher.keys).union(following.fetchers.keys) {
                let entries = byFetcher[key] ?? []
                let ids = Set(entries.map(\.key))
                let address = entries.first?.value.address ?? ""
                if let current = following.fetchers[key], current.partitions == ids, current.address == address { continue }
                following.fetchers.removeValue(forKey: key)?.task.cancel()
                let parts = address.split(separator: ":")
                guard !entries.isEmpty, parts.count == 2, let port = Int(parts[1]) else { continue }
                let logs = entries.sorted { $0.key < $1.key }.map(\.value.log)
                let fetcher = ReplicaFetcher(replicaID: myID, leaderHost: String(parts[0]), leaderPort: port, partitions: logs,
                                             highWatermarks: broker.highWatermarks, security: broker.configuration.interBrokerClient,
                                             bytesPerSecond: key.throttled ? broker.configuration.reassignmentThrottleBytesPerSecond : nil, logger: logger)
                following.fetchers[key] = (address, ids, Task { await fetcher.run(maxWaitMilliseconds: 500) })
            }
        }
    }

    /// Runs an etcd call until it is answered: etcd electing a leader, or
    /// one member stopped, is no reason for the node to stop (only the
    /// lease's end is). Cancellation ends it.
    private func untilAnswered<Answer>(_ what: String, _ call: () async throws -> Answer) async throws -> Answer {
        var failures = 0
        while true {
            do {
                return try await call()
            } catch {
                try Task.checkCancellation()
                failures += 1
                if failures % 10 == 1 { logger.warning("etcd did not answer; retrying", metadata: ["doing": "\(what)", "error": "\(error)"]) }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    // MARK: Controller

    /// Bids for the controller role whenever nobody holds it; while it
    /// holds it, runs the controller.
    func campaign(lease: Int64) async throws {
        while !Task.isCancelled {
            if try await untilAnswered("bidding for the controller role", { try await self.membership.campaign(lease: lease) }) {
                logger.info("controller", metadata: ["broker": "\(myID)"])
                // The role lasts as long as the lease; a watch that breaks
                // meanwhile (etcd restarted, a connection dropped) is not its
                // end: the driver loads the cluster again and follows on.
                repeat {
                    do {
                        let driver = ControllerDriver(membership: membership, uncleanElection: false)
                        let revision = try await driver.load()
                        // Holders that said so while no controller was watching.
                        try await driver.pruneDeletedTopics()
                        let rebalanceInterval = broker.configuration.leaderRebalanceInterval
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            group.addTask { try await driver.follow(fromRevision: revision + 1) }
                            if let rebalanceInterval {
                                // Kafka's automatic leader rebalance: a broker that
                                // returned leads its preferred partitions again.
                                group.addTask {
                                    while !Task.isCancelled {
                                        try await Task.sleep(for: rebalanceInterval)
                                        try await driver.rebalanceLeaders()
                                    }
                                }
                            }
                            try await group.next()
                            group.cancelAll()
                        }
                        logger.warning("the controller's watch ended; loading the cluster again")
                    } catch {
                        guard !Task.isCancelled else { return }
                        logger.warning("the controller's watch broke; loading the cluster again", metadata: ["error": "\(error)"])
                    }
                    try await Task.sleep(for: .milliseconds(200))
                } while try await untilAnswered("asking who controls", { try await self.membership.controller() }) == myID
                logger.warning("no longer the controller", metadata: ["broker": "\(myID)"])
            }
            // Someone else controls: ask again soon (the role frees when its
            // holder's lease ends; failover waits on this).
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    // MARK: Leader duties

    /// Every second, writes each partition's high watermark that moved
    /// (moving it writes nothing: `HighWatermarks`). A restarted broker
    /// starts from the last mark written, never above what was committed.
    func checkpointHighWatermarks() async throws {
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(1))
            for log in broker.store.allPartitions {
                do {
                    try log.checkpointHighWatermark()
                } catch {
                    logger.warning("cannot checkpoint a high watermark", metadata: ["partition": "\(log.topicName)/\(log.index)", "error": "\(error)"])
                }
            }
        }
    }

    /// Every half second, writes the ISR changes its trackers propose, by
    /// compare-and-swap on the record it leads, then acts on them.
    func writeISRChanges() async throws {
        // Writes whose answer was lost (etcd failed mid-request): they may
        // have landed. Until a read of the record says, the joiners keep
        // counting for the high watermark and nothing more is proposed.
        var unsettled: Set<PartitionID> = []
        while !Task.isCancelled {
            try await Task.sleep(for: .milliseconds(500))
            recordClusterGauges()
            for id in replication.ledPartitions {
                let snapshot = view.snapshot
                guard replication.tracker(id) != nil, let entry = snapshot.records[id], entry.state.leader == myID,
                      entry.state.leaderEpoch == replication.leaderEpoch(id),
                      let log = try? broker.store.partition(topic: id.topic, index: id.index) else { continue }
                let key = membership.root + "partitions/\(id.topic)/\(id.index)"
                if unsettled.contains(id) {
                    guard let stored = try? await coordination.get(key),
                          let record = try? JSONDecoder().decode(PartitionState.self, from: Data(stored.value)) else { continue }
                    unsettled.remove(id)
                    // Only a partition's leader adds to its ISR: a joiner not in
                    // the record now is in nobody's ISR, and stops counting.
                    _ = try? broker.highWatermarks.handle(.isrChanged(Set(record.isr), revision: stored.modRevision), for: log)
                    _ = try? broker.highWatermarks.handle(.isrExpanding([]), for: log)
                    continue
                }
                guard var proposed = broker.highWatermarks.proposeISR(id) else { continue }
                // Only live brokers that are not stopping join (Kafka's
                // controller refuses the others too): a follower that just
                // stopped still looks caught up to the tracker, and back in
                // the ISR it would hold every acks=all produce until removed.
                proposed = proposed.filter { entry.state.isr.contains($0) || (snapshot.brokers[$0] != nil && !snapshot.shuttingDown.contains($0)) }
                // The joiners count for the high watermark until the write's
                // outcome is known (those filtered out just now do not).
                _ = try? broker.highWatermarks.handle(.isrExpanding(proposed.subtracting(entry.state.isr)), for: log)
                guard proposed != Set(entry.state.isr) else { continue }
                var next = entry.state
                next.isr = proposed.sorted()
                next.version += 1
                let written: Int64?
                do {
                    written = try await coordination.compareAndSwap(key, expected: entry.revision, value: Array(try JSONEncoder().encode(next)))
                } catch {
                    // etcd busy or electing. The write may have landed all the same
                    // (its answer lost): the joiners keep counting until a read says.
                    logger.warning("cannot write an ISR change yet", metadata: ["partition": "\(id)", "error": "\(error)"])
                    unsettled.insert(id)
                    continue
                }
                guard let revision = written else {
                    // The record changed first (the controller, a new leader): nobody joins now.
                    _ = try? broker.highWatermarks.handle(.isrExpanding([]), for: log)
                    continue
                }
                logger.info("ISR changed", metadata: ["partition": "\(id)", "from": "\(entry.state.isr.sorted())", "to": "\(next.isr)"])
                if next.isr.contains(where: { !entry.state.isr.contains($0) }) { broker.metrics.isrExpands.increment() }
                if entry.state.isr.contains(where: { !next.isr.contains($0) }) { broker.metrics.isrShrinks.increment() }
                _ = try? broker.highWatermarks.handle(.isrChanged(proposed, revision: revision), for: log)
            }
        }
    }

    /// The cluster gauges of BrokerMetrics, from the view and the trackers.
    private func recordClusterGauges() {
        let snapshot = view.snapshot
        let metrics = broker.metrics
        let controlling = snapshot.controller == myID
        var underReplicated = 0
        var offline = 0
        var moving = 0
        var bytesLeft: Int64 = 0
        for (id, entry) in snapshot.records {
            guard let assignment = snapshot.assignments[id.topic], Int(id.index) < assignment.replicas.count else { continue }
            let move = assignment.move(of: id.index)
            if entry.state.leader == -1 { offline += 1 }
            if move != nil { moving += 1 }
            guard entry.state.leader == myID else { continue }
            let wanted = move?.target ?? assignment.replicas[Int(id.index)]
            if !Set(wanted).isSubset(of: entry.state.isr) { underReplicated += 1 }
            // What the added replicas lack, at the partition's mean batch size per offset.
            if let move, let tracker = replication.tracker(id), let log = try? broker.store.partition(topic: id.topic, index: id.index) {
                let offsets = max(1, log.logEndOffset - log.logStartOffset)
                for replica in move.adding {
                    let behind = log.logEndOffset - max(log.logStartOffset, tracker.logEnd(of: replica) ?? log.logStartOffset)
                    bytesLeft += max(0, behind) * log.sizeBytes / offsets
                }
            }
        }
        metrics.underReplicatedPartitions.record(underReplicated)
        metrics.offlinePartitions.record(controlling ? offline : 0)
        metrics.reassigningPartitions.record(controlling ? moving : 0)
        metrics.reassignmentBytesLeft.record(bytesLeft)
        metrics.controllerActive.record(controlling ? 1 : 0)
    }

    // MARK: Controlled shutdown

    /// Before a broker stops (SIGTERM): it announces its shutdown, the
    /// controller moves each partition it leads to an in-sync follower,
    /// and it waits (at most `timeout`) until no record names it leader,
    /// serving meanwhile; then it ends its lease, so the controller takes
    /// it out of every ISR at once rather than after the lease's time.
    public func controlledShutdown(timeout: Duration) async {
        guard let lease = lease.withLock({ $0 }) else { return }
        let started = ContinuousClock.now
        do {
            try await membership.announceShutdown(lease: lease)
            logger.info("controlled shutdown: handing over leaderships", metadata: ["broker": "\(myID)"])
            // Waits while a partition it leads has someone to go to: an
            // in-sync replica alive and not shutting down too.
            while ContinuousClock.now - started < timeout {
                let snapshot = view.snapshot
                let movable = snapshot.records.values.contains { entry in
                    entry.state.leader == myID && entry.state.isr.contains { $0 != myID && snapshot.brokers[$0] != nil && !snapshot.shuttingDown.contains($0) }
                }
                if !movable { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            let kept = view.snapshot.records.filter { $0.value.state.leader == myID }.map(\.key).sorted()
            logger.info("controlled shutdown: leaderships handed over", metadata: [
                "broker": "\(myID)", "milliseconds": "\((ContinuousClock.now - started).milliseconds)",
                "kept": "\(kept.isEmpty ? "none" : kept.map(\.description).joined(separator: ","))"])
            try await coordination.revokeLease(lease)
        } catch {
            logger.warning("controlled shutdown incomplete; the lease ends on its own", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Reassignment and elections

    /// AlterPartitionReassignments (any broker may): per partition, the
    /// error that refused it.
    func reassign(_ requested: [PartitionID: [Int32]?]) async throws -> [PartitionID: ControllerError] {
        let driver = ControllerDriver(membership: membership)
        try await driver.load(correct: false)
        let refused = try await driver.reassign(requested)
        await reachOwnWrite(of: driver, "a reassignment")
        return refused
    }

    /// After a write this broker made for a client, waits for its view to
    /// show it, so the client's next request here (ListPartitionReassignments,
    /// Metadata) sees its own change. Past the bound the write still stands;
    /// the view is only slow, and that is logged.
    private func reachOwnWrite(of driver: ControllerDriver, _ what: String) async {
        let written = await driver.lastWrittenRevision
        guard written > 0, !(await view.reach(written)) else { return }
        logger.warning("the cluster view did not show this broker's own write within 5 s", metadata: ["write": "\(what)", "revision": "\(written)", "view": "\(view.snapshot.revision)"])
    }

    /// ElectLeaders (any broker may): per partition, the refusal or nil.
    func electLeaders(_ ids: [PartitionID], type: Controller.ElectionType) async throws -> [PartitionID: Controller.ElectionRefusal?] {
        let driver = ControllerDriver(membership: membership)
        try await driver.load(correct: false)
        let outcome = try await driver.electLeaders(ids, type: type)
        await reachOwnWrite(of: driver, "an election")
        return outcome
    }

    // MARK: Services for the broker

    /// Creates a topic in the cluster (any broker may): assignment over the
    /// live brokers, then the partition records, by compare-and-swap.
    public func createTopic(_ name: String, partitionCount: Int, replicationFactor: Int, configs: [String: String]) async throws -> TopicAssignment {
        // Right after the cluster starts, brokers are still registering:
        // wait for the first election (every broker registers before it bids).
        let started = ContinuousClock.now
        for _ in 0..<60 where view.snapshot.controller == nil || view.snapshot.brokers.count < max(replicationFactor, 1) {
            try await Task.sleep(for: .milliseconds(50))
        }
        let registered = ContinuousClock.now
        let driver = ControllerDriver(membership: membership)
        try await driver.load(correct: false)
        let loaded = ContinuousClock.now
        let factor = replicationFactor > 0 ? replicationFactor : min(Int(broker.configuration.defaultReplicationFactor), view.snapshot.brokers.count)
        let assignment = try await driver.createTopic(name, partitionCount: partitionCount, replicationFactor: factor, configs: configs)
        // Which broker made a topic, when, and where the time went: the
        // first questions when a client says it asked and nothing happened.
        logger.info("created a topic", metadata: ["topic": "\(name)", "partitions": "\(partitionCount)", "replicationFactor": "\(factor)",
                                                  "waitedForBrokersMs": "\((registered - started).milliseconds)", "loadMs": "\((loaded - registered).milliseconds)",
                                                  "writeMs": "\((ContinuousClock.now - loaded).milliseconds)"])
        return assignment
    }

    /// Deletes a topic from the cluster (DeleteTopics, any broker may).
    func deleteTopic(_ name: String) async throws {
        let driver = ControllerDriver(membership: membership)
        try await driver.deleteTopic(name, retention: broker.configuration.deletedTopicRetention)
    }

    /// Grows a topic in the cluster (CreatePartitions, any broker may).
    func addPartitions(_ name: String, count: Int32, validateOnly: Bool) async throws {
        let driver = ControllerDriver(membership: membership)
        try await driver.load(correct: false)
        do {
            _ = try await driver.addPartitions(name, count: Int(count), validateOnly: validateOnly)
        } catch let error as ControllerError {
            if case .invalidPartitionCount(let reason) = error { throw Broker.TopicRequestError(code: .invalidPartitions, message: reason) }
            throw Broker.TopicRequestError(code: .invalidReplicationFactor, message: error.description)
        } catch CoordinationError.refused(let reason) {
            throw Broker.TopicRequestError(code: .unknownTopicOrPartition, message: reason)
        }
    }

    /// Creates `__consumer_offsets` in the background, once, on the first
    /// group request (as Kafka does); clients retry FindCoordinator meanwhile.
    func ensureOffsetsTopic() {
        guard creatingOffsetsTopic.withLock({ creating in
            defer { creating = true }
            return !creating
        }) else { return }
        Task {
            defer { creatingOffsetsTopic.withLock { $0 = false } }
            do {
                let assignment = try await createTopic(OffsetsTopic.name, partitionCount: Int(broker.offsets.partitionCount), replicationFactor: 0, configs: [:])
                logger.info("created the group offsets topic", metadata: ["topic": "\(assignment.name)", "partitions": "\(assignment.replicas.count)"])
            } catch CoordinationError.refused {
                // Another broker made it first.
            } catch {
                logger.warning("cannot create the group offsets topic yet", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The etcd key, under the cluster's root, of the cluster's ACLs.
    static let aclsKey = "acls"

    /// Changes the cluster's ACLs by compare-and-swap, so concurrent
    /// changes from several brokers all land; every broker's watch applies
    /// the result (this one's at once). Returns what `change` returned.
    func changeAcls<Outcome: Sendable>(_ change: @Sendable (inout [AclBinding]) -> Outcome) async throws -> Outcome {
        let key = membership.root + Self.aclsKey
        while true {
            let current = try await coordination.get(key)
            var acls = current.flatMap { try? JSONDecoder().decode([AclBinding].self, from: Data($0.value)) } ?? []
            let outcome = change(&acls)
            let encoded = try JSONEncoder().encode(acls)
            if try await coordination.compareAndSwap(key, expected: current?.modRevision ?? 0, value: Array(encoded)) != nil {
                let applied = acls
                view.update { $0.acls = applied }
                broker.aclState.replace(applied)
                return outcome
            }
        }
    }

    /// The etcd key, under the cluster's root, of the cluster's default configs.
    static let defaultConfigsKey = "configs/brokers"

    /// Sets a topic's own configs in its etcd record, by compare-and-swap;
    /// every replica's watch applies them.
    func changeTopicConfigs(_ name: String, to configs: [String: String]) async throws {
        let key = membership.root + "topics/" + name
        while true {
            guard let current = try await coordination.get(key) else {
                throw Broker.TopicRequestError(code: .unknownTopicOrPartition, message: "topic \(name) does not exist in the cluster")
            }
            var assignment = try JSONDecoder().decode(TopicAssignment.self, from: Data(current.value))
            assignment.configs = configs
            if try await coordination.compareAndSwap(key, expected: current.modRevision, value: Array(try JSONEncoder().encode(assignment))) != nil {
                let applied = assignment
                view.update { $0.assignments[name] = applied }
                return
            }
        }
    }

    /// This broker's own dynamic configs' key.
    var ownConfigsKey: String { membership.root + Self.defaultConfigsKey + "/\(myID)" }

    /// Replaces the cluster's default configs, or this broker's own, in
    /// etcd by compare-and-swap.
    func changeBrokerConfigs(ownOnly: Bool, to configs: [String: String]) async throws {
        let key = ownOnly ? ownConfigsKey : membership.root + Self.defaultConfigsKey
        while true {
            let current = try await coordination.get(key)
            if try await coordination.compareAndSwap(key, expected: current?.modRevision ?? 0, value: Array(try JSONEncoder().encode(configs))) != nil {
                view.update { if ownOnly { $0.ownConfigs = configs } else { $0.defaultConfigs = configs } }
                return
            }
        }
    }

    /// A producer id from this broker's block; blocks come from etcd.
    public func allocateProducerID() async throws -> Int64 {
        if let id = producerIDs.withLock({ block -> Int64? in
            guard block.next < block.end else { return nil }
            defer { block.next += 1 }
            return block.next
        }) {
            return id
        }
        let key = membership.root + "producer-ids"
        while true {
            let current = try await coordination.get(key)
            let start = current.flatMap { Int64(String(decoding: $0.value, as: UTF8.self)) } ?? 0
            let end = start + Self.producerIDBlock
            if try await coordination.compareAndSwap(key, expected: current?.modRevision ?? 0, value: Array(String(end).utf8)) != nil {
                producerIDs.withLock { $0 = (start + 1, end) }
                return start
            }
        }
    }
}
