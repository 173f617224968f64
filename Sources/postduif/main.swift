import ArgumentParser
import Broker
import Cluster
import Coordination
import Gateway
import Operations
import Foundation
import LogStore
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

@main
struct Postduif: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postduif",
        abstract: "A replicated append-only log for government chat that speaks the Kafka protocol.",
        subcommands: [Serve.self, GatewayCommand.self, User.self, Inspect.self]
    )
}

/// `postduif inspect --data DIR`: what an operator checks first, and the
/// damage report after a disk problem.
struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List topics and partitions with offsets, sizes and conversation counts, and verify every stored batch.",
        discussion: """
            Opens the data directory (the broker must not be running: RocksDB \
            allows one process at a time), prints one line per partition, then \
            checks every stored batch's CRC-32C and layout, that offsets have no \
            holes, and that the conversation index points at the right records. \
            Exits 1 when it finds damage, listing each problem with its topic, \
            partition and offset.
            """
    )

    @Option(name: .long, help: "The broker's data directory.")
    var data: String = "./data"

    @Flag(name: .long, help: "Skip the conversation index check (faster on large stores).")
    var skipIndex = false

    func run() async throws {
        guard FileManager.default.fileExists(atPath: data + "/CURRENT") else {
            throw OperatorError("\(data) holds no Postduif data (no RocksDB CURRENT file)")
        }
        let store: LogStore
        do {
            store = try LogStore(path: data, options: LogStoreOptions(durability: .fsync))
        } catch {
            throw OperatorError("cannot open \(data): \(error)")
        }
        defer { store.close() }
        let header = ["topic", "partition", "start", "end", "hw", "batches", "bytes", "conversations", "epoch", "producers"]
        var rows: [[String]] = []
        var damage: [Damage] = []
        for partition in store.allPartitions {
            let summary = partition.summary
            let conversations = partition.configuration.conversationIndex ? String(try partition.conversationCount()) : "-"
            rows.append([
                summary.topic, String(summary.partition), String(summary.logStartOffset), String(summary.logEndOffset),
                String(summary.highWatermark), String(summary.batchCount), String(summary.sizeBytes), conversations,
                summary.leaderEpoch.map(String.init) ?? "-", String(summary.producerCount),
            ])
            damage += try partition.verify(checkIndex: !skipIndex)
        }
        print(Self.table(header: header, rows: rows))
        let topics = store.topicDescriptors
        print("\(topics.count) topics, \(rows.count) partitions in \(data)")
        if damage.isEmpty {
            print("verified: every batch's CRC-32C and layout, offsets without holes\(skipIndex ? "" : ", conversation index agrees with the log")")
        } else {
            print("DAMAGE: \(damage.count) problems")
            for problem in damage { print("  \(problem)") }
            throw ExitCode(1)
        }
    }

    static func table(header: [String], rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { column, cell in
                column == 0 ? cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[column] - cell.count) + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

/// A failure the operator can act on, printed as `Error: <message>` without usage text.
struct OperatorError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) {
        self.description = description
    }
}

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

    @Option(help: "Partitions of __consumer_offsets, made on the first group request; fixed once made (POSTDUIF_OFFSETS_TOPIC_PARTITIONS).")
    var offsetsTopicPartitions: Int32 = Int32(Environment.integer("OFFSETS_TOPIC_PARTITIONS") ?? Int(BrokerConfiguration().offsetsTopicPartitions))

    @Option(help: "Also run the chat gateway in this process (ADR 0016): true or false (POSTDUIF_WITH_GATEWAY).")
    var withGateway: Bool = Environment.string("WITH_GATEWAY").flatMap(Bool.init) ?? false

    @Option(help: "With --with-gateway: the address the gateway binds to (POSTDUIF_GATEWAY_HOST).")
    var gatewayHost: String = Environment.string("GATEWAY_HOST") ?? GatewayConfiguration().host

    @Option(help: "With --with-gateway: the HTTP port for Matrix clients (POSTDUIF_GATEWAY_PORT).")
    var gatewayPort: Int = Environment.integer("GATEWAY_PORT") ?? GatewayConfiguration().port

    @OptionGroup(title: "With --with-gateway") var chat: ChatOptions

    func run() async throws {
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
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "postduif")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
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
        configuration.offsetsTopicPartitions = offsetsTopicPartitions
        if configuration.isClustered && port == 0 {
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
            }
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
        let kafka = KafkaService(server: KafkaServer(broker: broker), announce: "postduif \(nodeID) serving Kafka on \(host):%d, data in \(data), durability \(durabilityMode.rawValue)")
        let gateway = gatewayConfiguration.map { gatewayConfiguration in
            var gatewayConfiguration = gatewayConfiguration
            gatewayConfiguration.broker = "\(configuration.effectiveAdvertisedHost):\(configuration.effectiveAdvertisedPort)"
            gatewayConfiguration.localBroker = broker.localClient(name: "embedded gateway")
            return ChatGateway(configuration: gatewayConfiguration, logger: Logger(label: "postduif.gateway"))
        }
        let operations = OperationsService(server: OperationsServer(
            host: host, port: httpPort, logger: logger,
            metricsText: { registry.emitToString() },
            isReady: { broker.isListening && gateway?.isReady != false }))
        var services: [any Service] = [FanOutService(fanOut: broker.makeFanOut()), kafka, operations]
        if let replication {
            let membership = Membership(
                coordination: EtcdClient(endpoints: configuration.etcdEndpoints), cluster: configuration.clusterName, brokerID: nodeID,
                address: "\(configuration.effectiveAdvertisedHost):\(configuration.effectiveAdvertisedPort)")
            let node = ClusterNode(broker: broker, membership: membership, view: ClusterView(), replication: replication, logger: logger)
            broker.attach(node)
            services.append(ClusterService(node: node))
        }
        if let gateway {
            // Last: a graceful shutdown stops the services in reverse, so
            // the gateway stops before the listener and the store it uses.
            services.append(EmbeddedGatewayService(gateway: gateway, logger: logger, announce: "postduif gateway serving Matrix clients on http://\(gatewayHost):%d (server name \(chat.serverName)), in the broker's process"))
        }
        // One ServiceGroup for the node: SIGTERM or SIGINT starts a graceful
        // shutdown (stop accepting, let in-flight requests finish), then the
        // log is synced and closed below.
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

/// The chat settings shared by `postduif gateway` and the gateway that
/// `postduif serve --with-gateway` runs in the broker's process.
struct ChatOptions: ParsableArguments {
    @Option(help: "The Matrix server name in user and room ids (POSTDUIF_SERVER_NAME).")
    var serverName: String = Environment.string("SERVER_NAME") ?? GatewayConfiguration().serverName

    @Option(help: "Partitions of the conversations topic, if the gateway creates it (POSTDUIF_CONVERSATION_PARTITIONS).")
    var conversationPartitions: Int32 = Int32(Environment.integer("CONVERSATION_PARTITIONS") ?? Int(GatewayConfiguration().conversationPartitions))

    @Option(help: "open: anyone may register; closed: accounts come only from `postduif user add --chat` (POSTDUIF_REGISTRATION).")
    var registration: String = Environment.string("REGISTRATION") ?? "open"

    @Option(help: "scrypt cost of new passwords, log2 of N, 10 to 20; lower only for load tests (POSTDUIF_PASSWORD_HASH_LOG_N).")
    var passwordHashLogN: Int = Environment.integer("PASSWORD_HASH_LOG_N") ?? GatewayConfiguration().passwordHashLogN

    func apply(to configuration: inout GatewayConfiguration) throws {
        guard (10...20).contains(passwordHashLogN) else { throw OperatorError("--password-hash-log-n must be 10 to 20") }
        guard ["open", "closed"].contains(registration) else { throw OperatorError("--registration must be open or closed, not \(registration)") }
        configuration.serverName = serverName
        configuration.conversationPartitions = conversationPartitions
        configuration.passwordHashLogN = passwordHashLogN
        configuration.openRegistration = registration == "open"
    }
}

/// `postduif gateway`: the chat gateway (Matrix client-server API) over a
/// broker or cluster.
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Run the chat gateway: the Matrix client-server API over the broker's topics."
    )

    @Option(help: "Address the gateway binds to (POSTDUIF_GATEWAY_HOST).")
    var host: String = Environment.string("GATEWAY_HOST") ?? GatewayConfiguration().host

    @Option(help: "HTTP port for Matrix clients (POSTDUIF_GATEWAY_PORT).")
    var port: Int = Environment.integer("GATEWAY_PORT") ?? GatewayConfiguration().port

    @Option(help: "Brokers of the cluster, host:port, comma-separated (POSTDUIF_GATEWAY_BROKER).")
    var broker: String = Environment.string("GATEWAY_BROKER") ?? GatewayConfiguration().broker

    @OptionGroup var chat: ChatOptions

    @Option(help: "SASL PLAIN user at a broker started with --sasl (POSTDUIF_GATEWAY_BROKER_USER); the password comes from POSTDUIF_GATEWAY_BROKER_PASSWORD.")
    var brokerUser: String? = Environment.string("GATEWAY_BROKER_USER")

    @Option(help: "HTTP port for /metrics, /health and /ready (POSTDUIF_GATEWAY_HTTP_PORT).")
    var httpPort: Int = Environment.integer("GATEWAY_HTTP_PORT") ?? 9645

    @Option(help: "Log level (POSTDUIF_LOG_LEVEL).")
    var logLevel: String = Environment.string("LOG_LEVEL") ?? "info"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw OperatorError("--log-level \(logLevel) is not a log level") }
        var configuration = GatewayConfiguration()
        try chat.apply(to: &configuration)
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        configuration.host = host
        configuration.port = port
        configuration.broker = broker
        if let brokerUser {
            guard let password = Environment.string("GATEWAY_BROKER_PASSWORD") else {
                throw OperatorError("--broker-user needs the password in POSTDUIF_GATEWAY_BROKER_PASSWORD")
            }
            configuration.brokerUser = brokerUser
            configuration.brokerPassword = password
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let logger = Logger(label: "postduif.gateway")
        let gateway = ChatGateway(configuration: configuration, logger: logger)
        let operations = OperationsServer(host: host, port: httpPort, logger: logger, metricsText: { registry.emitToString() }, isReady: { gateway.isReady })
        let announce = "postduif gateway serving Matrix clients on http://\(host):%d (server name \(chat.serverName)), broker \(broker)"
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await operations.run() }
            group.addTask {
                try await gateway.run { port in
                    FileHandle.standardOutput.write(Data((announce.replacingOccurrences(of: "%d", with: String(port)) + "\n").utf8))
                }
            }
            // The gateway ends on SIGTERM (gracefully); the operations port goes with it.
            try await group.next()
            group.cancelAll()
        }
    }
}

/// `postduif user add|remove|list`: the SASL users of a node. The user file
/// holds SCRAM credentials only (salted, iterated keys), never passwords, and
/// a running node reads it at every authentication.
struct User: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage users: the broker's SASL users (PLAIN, SCRAM-SHA-256/512), or with --chat the chat gateway's accounts.",
        subcommands: [Add.self, Remove.self, List.self]
    )

    struct Location: ParsableArguments {
        @Option(help: "The data directory whose users.json is managed (POSTDUIF_DATA).")
        var data: String = Environment.string("DATA") ?? BrokerConfiguration().dataDirectory

        @Option(help: "The user file, if not users.json in the data directory (POSTDUIF_USERS_FILE).")
        var usersFile: String?

        @Flag(help: "Manage chat accounts (the gateway's Matrix users) in the broker's accounts topic instead.")
        var chat = false

        @Option(help: "With --chat: a broker of the cluster, host:port (POSTDUIF_GATEWAY_BROKER).")
        var broker: String = Environment.string("GATEWAY_BROKER") ?? GatewayConfiguration().broker

        @Option(help: "With --chat: the Matrix server name of user ids (POSTDUIF_SERVER_NAME).")
        var serverName: String = Environment.string("SERVER_NAME") ?? GatewayConfiguration().serverName

        @Option(help: "With --chat: SASL PLAIN user at a broker started with --sasl (POSTDUIF_GATEWAY_BROKER_USER; password in POSTDUIF_GATEWAY_BROKER_PASSWORD).")
        var brokerUser: String? = Environment.string("GATEWAY_BROKER_USER")

        var credentials: (user: String, password: String)? {
            guard let brokerUser, let password = Environment.string("GATEWAY_BROKER_PASSWORD") else { return nil }
            return (brokerUser, password)
        }

        var store: UserStore {
            var configuration = BrokerConfiguration()
            configuration.dataDirectory = data
            configuration.usersFile = usersFile ?? Environment.string("USERS_FILE")
            return UserStore(path: configuration.effectiveUsersFile)
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a user, or set a user's password.")
        @Argument(help: "The user name.") var name: String
        @Option(help: "The password (prefer --password-stdin: arguments show in process lists).") var password: String?
        @Flag(help: "Read the password from the first line of standard input.") var passwordStdin = false
        @OptionGroup var location: Location

        func run() async throws {
            let secret: String?
            if passwordStdin {
                secret = readLine(strippingNewline: true)
            } else {
                secret = password
            }
            guard let secret, !secret.isEmpty else { throw OperatorError("give a password with --password or --password-stdin") }
            if location.chat {
                let user = try await ChatAccounts.set(name, password: secret, broker: location.broker, serverName: location.serverName, credentials: location.credentials)
                print("chat account \(user) saved through \(location.broker)")
            } else {
                try location.store.add(user: name, password: secret)
                print("user \(name) saved in \(location.store.path)")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a user.")
        @Argument(help: "The user name.") var name: String
        @OptionGroup var location: Location

        func run() async throws {
            if location.chat {
                let user = try await ChatAccounts.remove(name, broker: location.broker, serverName: location.serverName, credentials: location.credentials)
                print("chat account \(user) removed (the name stays taken)")
            } else {
                try location.store.remove(user: name)
                print("user \(name) removed from \(location.store.path)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the users.")
        @OptionGroup var location: Location

        func run() async throws {
            let names = location.chat ? try await ChatAccounts.list(broker: location.broker, credentials: location.credentials) : try location.store.list()
            for name in names { print(name) }
        }
    }
}

/// Settings named POSTDUIF_<NAME>: from the environment first, then from
/// the config file (`--config FILE` or POSTDUIF_CONFIG), whose lines use
/// the same names (`POSTDUIF_PORT=9093`; `#` starts a comment), so
/// Deploy/config/postduif.env serves as both. Flags win over both.
enum Environment {
    static func string(_ name: String) -> String? {
        ProcessInfo.processInfo.environment["POSTDUIF_" + name] ?? configFile["POSTDUIF_" + name]
    }

    /// The config file's settings. Its path is read from the arguments before
    /// ArgumentParser runs, because option defaults are computed from it.
    static let configFile: [String: String] = {
        let arguments = CommandLine.arguments
        var path = ProcessInfo.processInfo.environment["POSTDUIF_CONFIG"]
        if let index = arguments.firstIndex(of: "--config"), index + 1 < arguments.count {
            path = arguments[index + 1]
        } else if let inline = arguments.first(where: { $0.hasPrefix("--config=") }) {
            path = String(inline.dropFirst("--config=".count))
        }
        guard let path else { return [:] }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            FileHandle.standardError.write(Data("Error: cannot read the config file \(path)\n".utf8))
            exit(2)
        }
        var settings: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#"), let equals = trimmed.firstIndex(of: "=") else { continue }
            let key = trimmed[..<equals].trimmingCharacters(in: .whitespaces)
            var value = trimmed[trimmed.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            settings[key] = value
        }
        return settings
    }()

    static func integer(_ name: String) -> Int? {
        string(name).flatMap { Int($0) }
    }
}

/// The chat fan-out workers as a service of the node's ServiceGroup.
struct FanOutService: Service {
    let fanOut: FanOut

    func run() async throws {
        // The workers hold nothing that needs finishing: gateways resync
        // whatever a stopped worker had not delivered.
        await cancelWhenGracefulShutdown {
            await fanOut.run()
        }
    }
}

/// The chat gateway inside the broker's process (`--with-gateway`). A
/// gateway that fails (a cluster still electing leaders for its topics, say)
/// starts again after a pause instead of stopping the broker with it.
struct EmbeddedGatewayService: Service {
    let gateway: ChatGateway
    let logger: Logger
    /// The line printed once listening; `%d` becomes the bound port.
    let announce: String

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await gateway.run { port in
                        FileHandle.standardOutput.write(Data((announce.replacingOccurrences(of: "%d", with: String(port)) + "\n").utf8))
                    }
                    return
                } catch {
                    guard !Task.isCancelled else { return }
                    logger.error("the chat gateway stopped; starting it again in a second", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }
}

/// The Kafka listener as a service of the node's ServiceGroup.
struct KafkaService: Service {
    let server: KafkaServer
    /// The line printed once listening; `%d` becomes the bound port.
    let announce: String

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await server.run { port in
                    FileHandle.standardOutput.write(Data((announce.replacingOccurrences(of: "%d", with: String(port)) + "\n").utf8))
                }
            }
        } catch where Task.isShuttingDownGracefully || Task.isCancelled {
            // The listener ends by cancellation when the node shuts down: a normal end.
        }
    }
}

/// The node's cluster side (registration, controller, roles) as a service:
/// when its lease is lost it ends with an error, and the node stops, since
/// other brokers may have taken over its partitions.
struct ClusterService: Service {
    let node: ClusterNode

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await node.run()
            }
        } catch where Task.isShuttingDownGracefully || Task.isCancelled {
            // Shutting down: the lease ends with the process.
        }
    }
}

/// The operations HTTP port as a service of the node's ServiceGroup.
struct OperationsService: Service {
    let server: OperationsServer

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await server.run { port in
                    FileHandle.standardOutput.write(Data("postduif operations endpoints on http://\(server.host):\(port)/metrics, /health, /ready\n".utf8))
                }
            }
        } catch where Task.isShuttingDownGracefully || Task.isCancelled {
            // Ends by cancellation when the node shuts down: a normal end.
        }
    }
}

/// Raises the soft limit of open files to the hard one: each partition
/// keeps its segment files open, besides the clients' connections, and a
/// shell's default soft limit (1,024) is low for a broker. The systemd unit
/// sets the limit itself (`LimitNOFILE`).
func raiseOpenFilesLimit() {
    var limit = rlimit()
    guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(RLIMIT_NOFILE_VALUE, &limit)
}

/// `RLIMIT_NOFILE` as Glibc's Swift overlay spells it (an enum case there).
private let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
