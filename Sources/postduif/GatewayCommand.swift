import ArgumentParser
import Broker
import Cluster
import Coordination
import Foundation
import Gateway
import LogStore
import Logging
import Metrics
import Operations
import Prometheus
import Security
import ServiceLifecycle

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
    var brokerUser: String?

    @Flag(help: "Reach the brokers over TLS: an SSL or SASL_SSL listener (POSTDUIF_GATEWAY_BROKER_TLS=true).")
    var brokerTls = false

    @Option(help: "PEM CAs that signed the brokers' certificates; the system's without it (POSTDUIF_GATEWAY_BROKER_TLS_CA_FILE).")
    var brokerTlsCaFile: String?

    @Option(help: "HTTP port for /metrics, /health and /ready (POSTDUIF_GATEWAY_HTTP_PORT).")
    var httpPort: Int = Environment.integer("GATEWAY_HTTP_PORT") ?? 9645

    @Option(help: "Log level (POSTDUIF_LOG_LEVEL).")
    var logLevel: String = Environment.string("LOG_LEVEL") ?? "info"

    func run() async throws {
        AllocatorTuning.apply(environment: ProcessInfo.processInfo.environment)
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
        if brokerTls || Environment.string("GATEWAY_BROKER_TLS").flatMap(Bool.init) == true {
            do {
                configuration.brokerTLS = try TLSClientFiles(caFile: brokerTlsCaFile ?? Environment.string("GATEWAY_BROKER_TLS_CA_FILE")).clientContext()
            } catch {
                throw OperatorError("\(error)")
            }
        }
        if let brokerUser = brokerUser ?? Environment.string("GATEWAY_BROKER_USER") {
            guard let password = Environment.string("GATEWAY_BROKER_PASSWORD") else {
                throw OperatorError("--broker-user needs the password in POSTDUIF_GATEWAY_BROKER_PASSWORD")
            }
            configuration.brokerUser = brokerUser
            configuration.brokerPassword = password
        }
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.nameAndLabelSanitizer = MetricHelp.prometheusName
        MetricsSystem.bootstrap(factory)
        let logger = Logger(label: "postduif.gateway")
        let gateway = ChatGateway(configuration: configuration, logger: logger)
        let operations = OperationsServer(host: host, port: httpPort, logger: logger, metricsText: { registry.emitToString() }, isReady: { gateway.isReady })
        let reloader = configuration.tls.map { CertificateReloader(contexts: [$0], logger: logger) }
        defer { withExtendedLifetime(reloader) {} }
        let announce = "postduif gateway serving Matrix clients on \(configuration.tls == nil ? "http" : "https")://\(host):%d (server name \(chat.serverName)), broker \(broker)"
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
