import ArgumentParser
import Broker
import ChatWire
import Cluster
import Coordination
import Fanout
import Foundation
import Gateway
import HTTPProxy
import KafkaNIO
import LogStore
import Logging
import Metrics
import NIOSSL
import Operations
import Prometheus
import Security
import ServiceLifecycle
import Synchronization

/// `postduif serve`: one broker node on the embedded single-node default.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Kafka-compatible broker node.",
        discussion: """
            Every option can also come from an environment variable \
            (POSTDUIF_<OPTION>, for example POSTDUIF_PORT=9093); a flag wins \
            over the environment, the environment over the built-in default. \
            SIGTERM or SIGINT stops the node: it stops accepting connections, \
            syncs the log and exits 0.
            """
    )

    @Option(help: "A config file of POSTDUIF_<NAME>=value lines, like Deploy/config/postduif.env (POSTDUIF_CONFIG).")
    var config: String?

    @Option(help: "Address to listen on (POSTDUIF_HOST).")
    var host: String = Environment.string("HOST") ?? BrokerConfiguration().host

    @Option(help: "Kafka port (POSTDUIF_PORT).")
    var port: Int = Environment.integer("PORT") ?? BrokerConfiguration().port

    @Option(help: "Host clients are told to connect to; defaults to --host (POSTDUIF_ADVERTISED_HOST).")
    var advertisedHost: String?

    @Option(help: "Port clients are told to connect to; defaults to --port (POSTDUIF_ADVERTISED_PORT).")
    var advertisedPort: Int?

    @Option(name: [.customLong("node-id"), .customLong("broker-id")], help: "This broker's id in the cluster (POSTDUIF_NODE_ID).")
    var nodeID: Int32 = Int32(Environment.integer("NODE_ID") ?? Int(BrokerConfiguration().nodeID))

    @Option(help: "Data directory (POSTDUIF_DATA).")
    var data: String = Environment.string("DATA") ?? BrokerConfiguration().dataDirectory

    @Option(help: "fsync (acknowledge once synced, the default), none, or in a cluster replicated (acknowledge once every in-sync replica wrote it) (POSTDUIF_DURABILITY).")
    var durability: String = Environment.string("DURABILITY") ?? BrokerConfiguration().durability.rawValue

    @Option(help: "Partitions of auto-created topics (POSTDUIF_DEFAULT_PARTITIONS).")
    var defaultPartitions: Int32 = Int32(Environment.integer("DEFAULT_PARTITIONS") ?? Int(BrokerConfiguration().defaultPartitionCount))

    @Option(help: "Create unknown topics named in Metadata requests: true or false (POSTDUIF_AUTO_CREATE_TOPICS).")
    var autoCreateTopics: Bool = Environment.string("AUTO_CREATE_TOPICS").flatMap(Bool.init) ?? BrokerConfiguration().autoCreateTopics

    @Option(help: "Require SASL authentication (PLAIN, SCRAM-SHA-256/512): true or false (POSTDUIF_SASL).")
    var sasl: Bool = Environment.string("SASL").flatMap(Bool.init) ?? BrokerConfiguration().saslEnabled

    @Option(help: "The SASL user file; defaults to users.json in the data directory (POSTDUIF_USERS_FILE).")
    var usersFile: String?

    @Option(help: "Port of /metrics, /health and /ready; 0 picks a free one (POSTDUIF_HTTP_PORT).")
    var httpPort: Int = Environment.integer("HTTP_PORT") ?? 9644

    @Option(help: "Log level: trace, debug, info, notice, warning, error (POSTDUIF_LOG_LEVEL).")
    var logLevel: String = Environment.string("LOG_LEVEL") ?? "info"

    @Option(help: "etcd client URLs, comma-separated; joins a cluster instead of running alone (POSTDUIF_ETCD_ENDPOINTS).")
    var etcdEndpoints: String?

    @Option(help: "The cluster's name, its key prefix in etcd (POSTDUIF_CLUSTER_NAME).")
    var clusterName: String = Environment.string("CLUSTER_NAME") ?? BrokerConfiguration().clusterName

    @Option(help: "Replicas of a topic created without a factor, at most the live brokers (POSTDUIF_DEFAULT_REPLICATION_FACTOR).")
    var defaultReplicationFactor: Int16 = Int16(Environment.integer("DEFAULT_REPLICATION_FACTOR") ?? Int(BrokerConfiguration().defaultReplicationFactor))

    @Option(help: "Fewer in-sync replicas refuse acks=all (POSTDUIF_MIN_INSYNC_REPLICAS).")
    var minInsyncReplicas: Int = Environment.integer("MIN_INSYNC_REPLICAS") ?? BrokerConfiguration().minInsyncReplicas

    @Option(help: "A follower not caught up for this many milliseconds leaves the ISR (POSTDUIF_REPLICA_LAG_MAX_MS).")
    var replicaLagMaxMs: Int = Environment.integer("REPLICA_LAG_MAX_MS") ?? Int(BrokerConfiguration().replicaLagMax.components.seconds * 1000)

    @Option(help: "MB/s a replica added by a reassignment copies at most; 0 for no limit (POSTDUIF_REASSIGNMENT_THROTTLE_MB_PER_S).")
    var reassignmentThrottleMbPerS: Double = Double(Environment.string("REASSIGNMENT_THROTTLE_MB_PER_S") ?? "") ?? 0

    @Option(help: "This broker's rack or zone; replicas spread across racks (POSTDUIF_RACK).")
    var rack: String = Environment.string("RACK") ?? ""

    @Option(help: "Every this many ms the controller gives leadership back to preferred replicas in sync; 0 never (POSTDUIF_LEADER_REBALANCE_INTERVAL_MS).")
    var leaderRebalanceIntervalMs: Int = Environment.integer("LEADER_REBALANCE_INTERVAL_MS") ?? 10_000

    @Option(help: "Ms a deleted topic's record stays in etcd at most, for brokers away when it was deleted; it goes sooner once every holder of a replica has deleted it (POSTDUIF_DELETED_TOPIC_RETENTION_MS).")
    var deletedTopicRetentionMs: Int = Environment.integer("DELETED_TOPIC_RETENTION_MS") ?? 7 * 24 * 3600 * 1000

    @Option(help: "Seconds a broker's etcd lease lasts: how long a silent broker still counts as alive, so about the time a failover takes (POSTDUIF_LEASE_SECONDS).")
    var leaseSeconds: Int = Environment.integer("LEASE_SECONDS") ?? 2

    @Option(help: "On SIGTERM, ms to wait for leaderships to move to in-sync followers before stopping (POSTDUIF_CONTROLLED_SHUTDOWN_TIMEOUT_MS).")
    var controlledShutdownTimeoutMs: Int = Environment.integer("CONTROLLED_SHUTDOWN_TIMEOUT_MS") ?? 10_000

    @Option(help: "Partitions of __consumer_offsets, made on the first group request; fixed once made (POSTDUIF_OFFSETS_TOPIC_PARTITIONS).")
    var offsetsTopicPartitions: Int32 = Int32(Environment.integer("OFFSETS_TOPIC_PARTITIONS") ?? Int(BrokerConfiguration().offsetsTopicPartitions))

    @Option(help: "Also run the chat gateway in this process (ADR 0016): true or false (POSTDUIF_WITH_GATEWAY).")
    var withGateway: Bool = Environment.string("WITH_GATEWAY").flatMap(Bool.init) ?? false

    @Option(help: "With --with-gateway: the address the gateway binds to (POSTDUIF_GATEWAY_HOST).")
    var gatewayHost: String = Environment.string("GATEWAY_HOST") ?? GatewayConfiguration().host

    @Option(help: "With --with-gateway: the HTTP port for Matrix clients (POSTDUIF_GATEWAY_PORT).")
    var gatewayPort: Int = Environment.integer("GATEWAY_PORT") ?? GatewayConfiguration().port

    @Option(help: "Serve HTTP access to the streams (the REST Proxy v2 API and Server-Sent Events, Docs/services.md): true or false (POSTDUIF_HTTP_PROXY).")
    var httpProxy: Bool = Environment.string("HTTP_PROXY").flatMap(Bool.init) ?? true

    @Option(help: "The HTTP proxy's port, on --host; 0 picks a free one (POSTDUIF_HTTP_PROXY_PORT).")
    var httpProxyPort: Int = Environment.integer("HTTP_PROXY_PORT") ?? 8082

    @OptionGroup(title: "Listeners and TLS") var security: SecurityOptions

    @OptionGroup(title: "Topic defaults, retention and compaction") var topics: TopicOptions

    @OptionGroup(title: "With --with-gateway") var chat: ChatOptions

    func run() async throws {
        let processStart = ContinuousClock.now
        AllocatorTuning.apply(environment: ProcessInfo.processInfo.environment)
        // `replicated` is the cluster's name for acknowledging on receipt:
        // every in-sync replica has written the batch, none waits for a sync.
        let clustered = !(etcdEndpoints ?? Environment.string("ETCD_ENDPOINTS") ?? "").isEmpty
        if durability == "replicated" && !clustered {
            throw OperatorError("--durability replicated needs a cluster (--etcd-endpoints); a single node has fsync or none")
        }
        guard let durabilityMode = durability == "replicated" ? Durability.none : Durability(rawValue: durability) else {
            throw OperatorError("--durability must be fsync, none or (in a cluster) replicated, not \(durability)")
        }
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw OperatorError("--log-level \(logLevel) is not a log level")
        }
        // The console's event log takes the same records at info and above.
        let recentEvents = RecentEvents(capacity: 200)
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            var recent = ConsoleLogHandler(events: recentEvents)
            recent.logLevel = max(level, .info)
            return MultiplexLogHandler([handler, recent])
        }
        let logger = Logger(label: "postduif")
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.nameAndLabelSanitizer = MetricHelp.prometheusName
        // A Produce or a round of syncs takes a fraction of a millisecond:
        // the default buckets, which begin at 5 ms, would put nearly every
        // one in the first.
        for label in ["postduif_request_duration_seconds", "postduif_wal_sync_duration_seconds"] {
            factory.durationHistogramBuckets[label] = MetricHelp.fineDurationBuckets
        }
        MetricsSystem.bootstrap(factory)
        var configuration = BrokerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.advertisedHost = advertisedHost ?? Environment.string("ADVERTISED_HOST")
        configuration.advertisedPort = advertisedPort ?? Environment.integer("ADVERTISED_PORT")
        configuration.nodeID = nodeID
        configuration.dataDirectory = data
        configuration.durability = durabilityMode
        configuration.defaultPartitionCount = defaultPartitions
        configuration.autoCreateTopics = autoCreateTopics
        configuration.saslEnabled = sasl
        configuration.usersFile = usersFile ?? Environment.string("USERS_FILE")
        configuration.etcdEndpoints = (etcdEndpoints ?? Environment.string("ETCD_ENDPOINTS") ?? "")
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        configuration.clusterName = clusterName
        configuration.defaultReplicationFactor = defaultReplicationFactor
        configuration.minInsyncReplicas = minInsyncReplicas
        configuration.replicaLagMax = .milliseconds(replicaLagMaxMs)
        configuration.reassignmentThrottleBytesPerSecond = reassignmentThrottleMbPerS > 0 ? Int64(reassignmentThrottleMbPerS * 1_000_000) : nil
        configuration.rack = rack.isEmpty ? nil : rack
        configuration.leaderRebalanceInterval = leaderRebalanceIntervalMs > 0 ? .milliseconds(leaderRebalanceIntervalMs) : nil
        guard deletedTopicRetentionMs >= 1000 else { throw OperatorError("--deleted-topic-retention-ms must be at least 1000") }
        configuration.deletedTopicRetention = .milliseconds(deletedTopicRetentionMs)
        configuration.controlledShutdownTimeout = .milliseconds(max(0, controlledShutdownTimeoutMs))
        guard (1...3600).contains(leaseSeconds) else { throw OperatorError("--lease-seconds must be between 1 and 3600") }
        configuration.offsetsTopicPartitions = offsetsTopicPartitions
        // The chat's conversations topic keeps the conversation index however
        // it is created (by the gateway, a Kafka client or auto-creation).
        configuration.conversationIndexedTopics = [ChatTopicNames.conversations]
        // The chat's state topics hold the newest record per key (which are:
        // ChatTopicNames.compacted).
        configuration.compactedTopics.formUnion(ChatTopicNames.compacted)
        try security.apply(to: &configuration)
        try topics.apply(to: &configuration)
        let tls: ReloadableTLSContext?
        do {
            tls = try configuration.tls.map(ReloadableTLSContext.init)
        } catch {
            throw OperatorError("\(error)")
        }
        if configuration.isClustered && configuration.effectiveListeners.contains(where: { $0.port == 0 }) {
            throw OperatorError("a broker in a cluster needs a fixed --port: the others reach it there")
        }
        var gatewayConfiguration: GatewayConfiguration? = nil
        if withGateway {
            var made = GatewayConfiguration()
            try chat.apply(to: &made)
            made.host = gatewayHost
            made.port = gatewayPort
            // Brokers of a cluster other than this one are reached on their
            // sockets, with the gateway's SASL user where they require one.
            if let user = Environment.string("GATEWAY_BROKER_USER"), let password = Environment.string("GATEWAY_BROKER_PASSWORD") {
                made.brokerUser = user
                made.brokerPassword = password
            } else if let sasl = configuration.interBrokerClient.sasl {
                // Otherwise as the broker it runs in, on the same listener.
                made.brokerUser = sasl.user
                made.brokerPassword = sasl.password
            }
            made.brokerTLS = configuration.interBrokerClient.tls
            gatewayConfiguration = made
        }

        raiseOpenFilesLimit()
        let store: LogStore
        do {
            store = try LogStore(path: data, options: LogStoreOptions(durability: durabilityMode))
        } catch {
            throw OperatorError("cannot open the data directory \(data): \(error)")
        }
        for note in store.recoveryNotes {
            logger.warning("store repaired after a crash", metadata: ["repair": "\(note)"])
        }
        let replication = configuration.isClustered ? ReplicationState(minInsyncReplicas: configuration.minInsyncReplicas) : nil
        let broker = Broker(store: store, configuration: configuration, logger: logger, replication: replication)
        let kafka = KafkaService(server: KafkaServer(broker: broker, tls: tls), announce: "postduif \(nodeID) serving Kafka on \(host):%d, data in \(data), durability \(durabilityMode.rawValue)")
        let fanOut = FanOut(broker: broker, logger: logger)
        let gateway = gatewayConfiguration.map { gatewayConfiguration in
            var gatewayConfiguration = gatewayConfiguration
            gatewayConfiguration.broker = "\(configuration.effectiveAdvertisedHost):\(configuration.effectiveAdvertisedPort)"
            gatewayConfiguration.localBroker = broker.localClient(name: "embedded gateway")
            gatewayConfiguration.directAppends = BrokerDirectAppends(broker: broker)
            gatewayConfiguration.directReads = BrokerDirectReads(broker: broker)
            gatewayConfiguration.localFanOut = FanOutHandOvers(fanOut: fanOut)
            return ChatGateway(configuration: gatewayConfiguration, logger: Logger(label: "postduif.gateway"))
        }
        if security.httpTls && tls == nil { throw OperatorError("--http-tls needs --tls-cert-file and --tls-key-file") }
        // The console asks for a login where it can be kept secret: with
        // TLS on the operations port and the authorizer on.
        let consoleLogin = security.httpTls && configuration.authorizerEnabled
        // The room count walks the conversation index: counted at most every 30 s.
        let roomCount = Mutex<(at: ContinuousClock.Instant, rooms: Int?)?>(nil)
        let consoleState: @Sendable () -> String = {
            var state = broker.consoleState()
            let now = ContinuousClock.now
            state.rooms = roomCount.withLock { cached in
                if let cached, now - cached.at < .seconds(30) { return cached.rooms }
                let rooms = broker.conversationCount(topic: ChatTopicNames.conversations)
                cached = (now, rooms)
                return rooms
            }
            let data = (try? JSONEncoder().encode(state)) ?? Data("{}".utf8)
            return String(decoding: data, as: UTF8.self)
        }
        let consoleLoginCheck: @Sendable (String, String, String) -> Bool = { user, password, host in
            broker.consoleAllows(user: user, password: password, host: host)
        }
        let console = OperationsConsole(state: consoleState, events: recentEvents, authorize: consoleLogin ? consoleLoginCheck : nil)
        let operations = OperationsService(server: OperationsServer(
            host: host, port: httpPort, logger: logger, tls: security.httpTls ? tls : nil, console: console,
            metricsText: {
                broker.refreshMetrics()
                return registry.emitToString()
            },
            isReady: { broker.isReady && gateway?.isReady != false }))
        for api in fanOut.extensionAPIs { broker.register(api) }
        broker.register(broker.backupAPI)
        var services: [any Service] = [FanOutService(fanOut: fanOut), kafka, operations,
                                       LogCleanerService(broker: broker, interval: configuration.retentionCheckInterval)]
        var etcd: EtcdClient? = nil
        if let replication {
            let client = EtcdClient(endpoints: configuration.etcdEndpoints, security: try security.etcdSecurity())
            etcd = client
            let membership = Membership(
                coordination: client, cluster: configuration.clusterName, brokerID: nodeID,
                address: "\(configuration.effectiveAdvertisedHost):\(configuration.effectiveAdvertisedPort)",
                listeners: Dictionary(uniqueKeysWithValues: configuration.effectiveListeners.map { ($0.name, $0.advertisedAddress) }), rack: configuration.rack,
                leaseSeconds: Int64(leaseSeconds))
            let node = ClusterNode(broker: broker, membership: membership, view: ClusterView(), replication: replication, logger: logger)
            broker.attach(node)
            services.append(ClusterService(node: node, shutdownTimeout: configuration.controlledShutdownTimeout))
        }
        if httpProxy {
            let interBroker = configuration.interBrokerClient
            // A caller without credentials reaches other brokers as nobody:
            // TLS with the CA to check them, never with this broker's own
            // certificate, whose principal (a super user) the other broker
            // would grant the caller. A SASL user wins over a certificate,
            // so a caller with credentials may go as the brokers do.
            let anonymousTLS: NIOSSLContext?
            do {
                anonymousTLS = try interBroker.tls.map { _ in try TLSClientFiles(caFile: configuration.tls?.caFile).clientContext() }
            } catch {
                throw OperatorError("the HTTP proxy's TLS to other brokers: \(error)")
            }
            var proxyConfiguration = HTTPProxyConfiguration(
                host: host, port: httpProxyPort,
                bootstrap: ["\(configuration.effectiveAdvertisedHost):\(configuration.effectiveAdvertisedPort)"],
                requireAuthentication: configuration.effectiveListeners.contains { $0.securityProtocol.requiresSASL },
                authenticate: { user, password in broker.passwordMatches(user: user, password: password) },
                localBroker: { user, host in broker.localClient(name: "postduif-http-proxy", actingFor: user, host: host) },
                remoteSecurity: { identity in
                    switch identity {
                    case .anonymous: KafkaClientSecurity(tls: anonymousTLS)
                    case .password(let credentials): KafkaClientSecurity(tls: interBroker.tls, sasl: credentials)
                    // As this broker, each request in an Envelope for the
                    // certificate's user: the other broker's ACLs decide for
                    // the user, as they would on its own port.
                    case .certificate(let user, let host):
                        KafkaClientSecurity(tls: interBroker.tls, sasl: interBroker.sasl, actingFor: .init(principal: "User:\(user)", host: host))
                    }
                },
                wallMilliseconds: { Int64(Date().timeIntervalSince1970 * 1000) },
                monotonicMilliseconds: { Int64((ContinuousClock.now - processStart) / .milliseconds(1)) })
            // A broker with a certificate serves HTTPS only: Basic
            // credentials are passwords.
            proxyConfiguration.tls = tls
            // With client certificates asked for, they name HTTP callers as
            // they name Kafka connections (the same mapping rules).
            if let files = configuration.tls, files.clientAuth != .none {
                let mapping = configuration.principalMapping
                proxyConfiguration.certificateUser = { certificate in Principal.subject(of: certificate).flatMap { mapping.name(for: $0) } }
            }
            let proxy = HTTPProxy(configuration: proxyConfiguration, logger: logger)
            services.append(HTTPProxyService(proxy: proxy, announce: "postduif HTTP proxy (REST Proxy v2, Server-Sent Events) on \(tls == nil ? "http" : "https")://\(host):%d"))
        }
        if let gateway {
            // Last: a graceful shutdown stops the services in reverse, so
            // the gateway stops before the listener and the store it uses.
            services.append(EmbeddedGatewayService(gateway: gateway, logger: logger, announce: "postduif gateway serving Matrix clients on \(gatewayConfiguration?.tls == nil ? "http" : "https")://\(gatewayHost):%d (server name \(chat.serverName)), in the broker's process"))
        }
        // One ServiceGroup for the node: SIGTERM or SIGINT starts a graceful
        // shutdown (stop accepting, let in-flight requests finish), then the
        // log is synced and closed below.
        if configuration.authorizerEnabled {
            // The chat topics are the gateway's: its ACLs exist from the start
            // (in etcd once the cluster is reachable), so nobody else needs any.
            let bindings = security.gatewayBindings
            Task {
                for attempt in 0..<600 {
                    do {
                        try await broker.ensureAcls(bindings)
                        return
                    } catch {
                        if attempt % 30 == 0 { logger.warning("the gateway's ACLs are not stored yet; retrying", metadata: ["error": "\(error)"]) }
                        try? await Task.sleep(for: .seconds(1))
                    }
                }
            }
        }
        let contexts = [tls, gatewayConfiguration?.tls].compactMap { $0 }
        let reloader = contexts.isEmpty && etcd?.security.reloadTLS == nil ? nil : CertificateReloader(contexts: contexts, etcd: etcd, logger: logger)
        defer { withExtendedLifetime(reloader) {} }
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        do {
            try await group.run()
        } catch {
            store.close()
            throw OperatorError("the node stopped: \(error)")
        }
        store.close()
        logger.info("stopped; log synced and closed")
    }
}
