import ArgumentParser
import Broker
import ChatWire
import Coordination
import Dispatch
import Foundation
import KafkaNIO
import Logging
import Metrics
import NIOSSL
import Security

/// The listeners and TLS settings of `postduif serve` (Docs/security.md).
struct SecurityOptions: ParsableArguments {
    @Option(help: "Named listeners, NAME://host:port comma-separated, e.g. SASL_SSL://0.0.0.0:9093,PLAINTEXT://127.0.0.1:9092; replaces --host, --port and --sasl (POSTDUIF_LISTENERS).")
    var listeners: String?

    @Option(help: "Addresses clients of each listener are told, NAME://host:port (POSTDUIF_ADVERTISED_LISTENERS).")
    var advertisedListeners: String?

    @Option(help: "NAME:PROTOCOL pairs for listeners not named after their protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) (POSTDUIF_LISTENER_SECURITY_PROTOCOL_MAP).")
    var listenerSecurityProtocolMap: String?

    @Option(help: "The listener brokers reach each other on; the first when not given (POSTDUIF_INTER_BROKER_LISTENER).")
    var interBrokerListener: String?

    @Option(help: "PEM certificate chain of TLS listeners (POSTDUIF_TLS_CERT_FILE).")
    var tlsCertFile: String?

    @Option(help: "PEM private key of TLS listeners, readable by its owner only (POSTDUIF_TLS_KEY_FILE).")
    var tlsKeyFile: String?

    @Option(help: "PEM CAs whose certificates peers may show (POSTDUIF_TLS_CA_FILE).")
    var tlsCaFile: String?

    @Option(help: "Client certificates: none, requested or required (POSTDUIF_TLS_CLIENT_AUTH).")
    var tlsClientAuth: String?

    @Option(help: "How a client certificate's subject becomes a user: RULE:pattern/replacement/[LU] entries and DEFAULT, as Kafka's ssl.principal.mapping.rules (POSTDUIF_SSL_PRINCIPAL_MAPPING_RULES).")
    var sslPrincipalMappingRules: String?

    @Option(help: "The SASL user this broker signs in as on other brokers' inter-broker listener; its password in POSTDUIF_INTER_BROKER_SASL_PASSWORD or --inter-broker-sasl-password-file (POSTDUIF_INTER_BROKER_SASL_USER).")
    var interBrokerSaslUser: String?

    @Option(help: "A file holding the inter-broker SASL password, readable by its owner only (POSTDUIF_INTER_BROKER_SASL_PASSWORD_FILE).")
    var interBrokerSaslPasswordFile: String?

    @Option(help: "PEM CAs of etcd's server certificate, for https:// etcd endpoints (POSTDUIF_ETCD_CA_FILE).")
    var etcdCaFile: String?

    @Option(help: "PEM client certificate for etcd started with --client-cert-auth (POSTDUIF_ETCD_CERT_FILE).")
    var etcdCertFile: String?

    @Option(help: "Its private key, readable by its owner only (POSTDUIF_ETCD_KEY_FILE).")
    var etcdKeyFile: String?

    @Option(help: "etcd's user authentication: the user; its password in POSTDUIF_ETCD_PASSWORD (POSTDUIF_ETCD_USER).")
    var etcdUser: String?

    /// How the broker reaches etcd: TLS with its CA and client certificate,
    /// and etcd's own users.
    func etcdSecurity() throws -> EtcdSecurity {
        var security = EtcdSecurity()
        let ca = etcdCaFile ?? Environment.string("ETCD_CA_FILE")
        let certificate = etcdCertFile ?? Environment.string("ETCD_CERT_FILE")
        let key = etcdKeyFile ?? Environment.string("ETCD_KEY_FILE")
        if ca != nil || certificate != nil {
            if (certificate == nil) != (key == nil) {
                throw OperatorError("--etcd-cert-file and --etcd-key-file go together")
            }
            // Read again on SIGHUP (CertificateReloader), as the listeners' are.
            let load: @Sendable () throws -> TLSConfiguration = {
                var tls = TLSConfiguration.makeClientConfiguration()
                tls.minimumTLSVersion = .tlsv12
                if let ca {
                    // Read now, not at the first handshake: a CA file that
                    // does not load must fail here, where the old one stays.
                    do {
                        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
                    } catch {
                        throw OperatorError("etcd CA file \(ca): \(error)")
                    }
                }
                if let certificate, let key {
                    do {
                        try TLSFiles.checkPrivate(key)
                        tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                    } catch {
                        throw OperatorError("etcd client certificate: \(error)")
                    }
                }
                return tls
            }
            security.tls = try load()
            security.reloadTLS = load
        }
        if let user = etcdUser ?? Environment.string("ETCD_USER") {
            guard let password = Environment.string("ETCD_PASSWORD") else { throw OperatorError("--etcd-user needs POSTDUIF_ETCD_PASSWORD") }
            security.user = user
            security.password = password
        }
        return security
    }

    @Option(help: "Serve /metrics, /health and /ready over TLS with the broker's certificate: true or false (POSTDUIF_HTTP_TLS).")
    var httpTls: Bool = Environment.string("HTTP_TLS").flatMap(Bool.init) ?? false

    @Option(help: "Decide every request by the ACLs: true or false (POSTDUIF_AUTHORIZER).")
    var authorizer: Bool = Environment.string("AUTHORIZER").flatMap(Bool.init) ?? false

    @Option(help: "Principals always permitted, ';'-separated, e.g. User:admin;User:broker (POSTDUIF_SUPER_USERS).")
    var superUsers: String?

    @Option(help: "With --authorizer: the principal of the chat gateway, which alone may use the chat topics unless ACLs grant more (POSTDUIF_GATEWAY_PRINCIPAL).")
    var gatewayPrincipal: String = Environment.string("GATEWAY_PRINCIPAL") ?? "User:postduif-gateway"

    /// The gateway's ACLs: everything on each chat topic, nothing else.
    var gatewayBindings: [AclBinding] {
        let principal = gatewayPrincipal.contains(":") ? gatewayPrincipal : "User:" + gatewayPrincipal
        return ChatTopicNames.all.map { AclBinding(resourceType: .topic, resourceName: $0, principal: principal, operation: .all) }
    }

    @Option(help: "A TLS handshake not finished within this many milliseconds closes the connection (POSTDUIF_TLS_HANDSHAKE_TIMEOUT_MS).")
    var tlsHandshakeTimeoutMs: Int = Environment.integer("TLS_HANDSHAKE_TIMEOUT_MS") ?? 10_000

    func apply(to configuration: inout BrokerConfiguration) throws {
        guard tlsHandshakeTimeoutMs > 0 else { throw OperatorError("--tls-handshake-timeout-ms must be positive") }
        configuration.tlsHandshakeTimeout = .milliseconds(tlsHandshakeTimeoutMs)
        if let text = listeners ?? Environment.string("LISTENERS") {
            do {
                configuration.listeners = try ListenerSpec.resolve(
                    listeners: text, advertised: advertisedListeners ?? Environment.string("ADVERTISED_LISTENERS"),
                    protocols: listenerSecurityProtocolMap ?? Environment.string("LISTENER_SECURITY_PROTOCOL_MAP"))
            } catch {
                throw OperatorError("--listeners: \(error)")
            }
        } else if advertisedListeners ?? Environment.string("ADVERTISED_LISTENERS") != nil {
            throw OperatorError("--advertised-listeners needs --listeners")
        }
        configuration.authorizerEnabled = authorizer
        configuration.superUsers = Set((superUsers ?? Environment.string("SUPER_USERS") ?? "").split(separator: ";")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map { $0.contains(":") ? $0 : "User:" + $0 })
        configuration.interBrokerListener = (interBrokerListener ?? Environment.string("INTER_BROKER_LISTENER"))?.uppercased()
        configuration.tls = try tlsFiles()
        if let rules = sslPrincipalMappingRules ?? Environment.string("SSL_PRINCIPAL_MAPPING_RULES") {
            do {
                configuration.principalMapping = try PrincipalMapping(parsing: rules)
            } catch {
                throw OperatorError("--ssl-principal-mapping-rules: \(error)")
            }
        }
        do {
            try configuration.checkListeners()
        } catch {
            throw OperatorError("\(error)")
        }
        configuration.interBrokerClient = try interBrokerClient(configuration)
    }

    /// How this broker connects to the others' inter-broker listener: TLS
    /// with the broker's own certificate (for listeners that ask for one)
    /// trusting the CA file, and SASL PLAIN where the listener requires it.
    func interBrokerClient(_ configuration: BrokerConfiguration) throws -> KafkaClientSecurity {
        let listener = configuration.effectiveInterBrokerListener
        var security = KafkaClientSecurity()
        if listener.securityProtocol.usesTLS, let files = configuration.tls {
            do {
                security.tls = try TLSClientFiles(caFile: files.caFile, certificateFile: files.certificateFile, keyFile: files.keyFile).clientContext()
            } catch {
                throw OperatorError("inter-broker TLS: \(error)")
            }
        }
        let user = interBrokerSaslUser ?? Environment.string("INTER_BROKER_SASL_USER")
        // A single node has no other broker to sign in to.
        if listener.securityProtocol.requiresSASL && (configuration.isClustered || user != nil) {
            guard let user else {
                throw OperatorError("the inter-broker listener \(listener.name) requires SASL: name the brokers' user with --inter-broker-sasl-user")
            }
            security.sasl = SaslCredentials(user: user, password: try interBrokerPassword())
        }
        return security
    }

    private func interBrokerPassword() throws -> String {
        if let file = interBrokerSaslPasswordFile ?? Environment.string("INTER_BROKER_SASL_PASSWORD_FILE") {
            do {
                try TLSFiles.checkPrivate(file)
            } catch {
                throw OperatorError("\(error)".replacingOccurrences(of: "private key", with: "password file"))
            }
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw OperatorError("cannot read \(file)") }
            return text.trimmingCharacters(in: .newlines)
        }
        guard let password = Environment.string("INTER_BROKER_SASL_PASSWORD") else {
            throw OperatorError("the inter-broker SASL password is missing: POSTDUIF_INTER_BROKER_SASL_PASSWORD or --inter-broker-sasl-password-file")
        }
        return password
    }

    func tlsFiles() throws -> TLSFiles? {
        let certificate = tlsCertFile ?? Environment.string("TLS_CERT_FILE")
        let key = tlsKeyFile ?? Environment.string("TLS_KEY_FILE")
        guard certificate != nil || key != nil else { return nil }
        guard let certificate, let key else { throw OperatorError("--tls-cert-file and --tls-key-file go together") }
        let authText = tlsClientAuth ?? Environment.string("TLS_CLIENT_AUTH") ?? "none"
        guard let auth = ClientAuth(rawValue: authText) else {
            throw OperatorError("--tls-client-auth must be none, requested or required, not \(authText)")
        }
        return TLSFiles(certificateFile: certificate, keyFile: key, caFile: tlsCaFile ?? Environment.string("TLS_CA_FILE"), clientAuth: auth)
    }
}

/// Reloads the TLS certificates on SIGHUP, the listeners' and the etcd
/// client's: connections opened afterwards use the new ones, open
/// connections are left as they are. A reload that fails keeps the old
/// certificate and says why.
final class CertificateReloader {
    private let source: any DispatchSourceSignal

    init(contexts: [ReloadableTLSContext], etcd: EtcdClient? = nil, logger: Logger) {
        for context in contexts { Self.recordExpiry(context.files.certificateFile) }
        signal(SIGHUP, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler {
            for context in contexts {
                do {
                    try context.reload()
                    Self.recordExpiry(context.files.certificateFile)
                    logger.notice("TLS certificate reloaded", metadata: ["certificate": "\(context.files.certificateFile)"])
                } catch {
                    logger.error("TLS certificate not reloaded; the previous one stays", metadata: ["reason": "\(error)"])
                }
            }
            guard let etcd else { return }
            do {
                if try etcd.reloadTLS() { logger.notice("etcd client TLS files reloaded") }
            } catch {
                logger.error("etcd client TLS files not reloaded; the previous ones stay", metadata: ["reason": "\(error)"])
            }
        }
        source.resume()
    }

    /// `postduif_tls_certificate_expiry_timestamp_seconds{certificate}`: when
    /// the certificate in use stops being valid (its leaf's notAfter), for
    /// the alert that fires weeks before (Deploy/monitoring).
    static func recordExpiry(_ path: String) {
        guard let leaf = try? NIOSSLCertificate.fromPEMFile(path).first else { return }
        Gauge(label: "postduif_tls_certificate_expiry_timestamp_seconds", dimensions: [("certificate", path)]).record(Double(leaf.notValidAfter))
    }
}
