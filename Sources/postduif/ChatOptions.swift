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

    @Option(help: "Registrations per client address per minute, beyond which M_LIMIT_EXCEEDED; 0 for no limit, for load tests (POSTDUIF_REGISTRATIONS_PER_MINUTE).")
    var registrationsPerMinute: Int = Environment.integer("REGISTRATIONS_PER_MINUTE") ?? GatewayConfiguration().registrationsPerMinute

    @Option(help: "The address Matrix clients reach the gateway at, served at /.well-known/matrix/client, such as https://chat.gov.example; the request's own address without it (POSTDUIF_PUBLIC_BASE_URL).")
    var publicBaseUrl: String?

    @Option(help: "The largest file a Matrix client may upload, in bytes (POSTDUIF_MEDIA_BYTES_MAX).")
    var mediaBytesMax: Int = Environment.integer("MEDIA_BYTES_MAX") ?? GatewayConfiguration().mediaBytesMax

    @Option(help: "PEM certificate chain for HTTPS to Matrix clients; plain HTTP without it (POSTDUIF_GATEWAY_TLS_CERT_FILE).")
    var gatewayTlsCertFile: String?

    @Option(help: "PEM private key for HTTPS, readable by its owner only (POSTDUIF_GATEWAY_TLS_KEY_FILE).")
    var gatewayTlsKeyFile: String?

    func apply(to configuration: inout GatewayConfiguration) throws {
        let certificate = gatewayTlsCertFile ?? Environment.string("GATEWAY_TLS_CERT_FILE")
        let key = gatewayTlsKeyFile ?? Environment.string("GATEWAY_TLS_KEY_FILE")
        if certificate != nil || key != nil {
            guard let certificate, let key else { throw OperatorError("--gateway-tls-cert-file and --gateway-tls-key-file go together") }
            do {
                configuration.tls = try ReloadableTLSContext(TLSFiles(certificateFile: certificate, keyFile: key))
            } catch {
                throw OperatorError("gateway HTTPS: \(error)")
            }
        }
        guard (10...20).contains(passwordHashLogN) else { throw OperatorError("--password-hash-log-n must be 10 to 20") }
        guard ["open", "closed"].contains(registration) else { throw OperatorError("--registration must be open or closed, not \(registration)") }
        configuration.serverName = serverName
        configuration.thumbnails = ChildProcessThumbnails()
        configuration.conversationPartitions = conversationPartitions
        configuration.passwordHashLogN = passwordHashLogN
        configuration.openRegistration = registration == "open"
        guard registrationsPerMinute >= 0 else { throw OperatorError("--registrations-per-minute must be 0 or more") }
        configuration.registrationsPerMinute = registrationsPerMinute
        guard (1...(1 << 30)).contains(mediaBytesMax) else { throw OperatorError("--media-bytes-max must be 1 byte to 1 GiB") }
        configuration.mediaBytesMax = mediaBytesMax
        if let publicBaseUrl = publicBaseUrl ?? Environment.string("PUBLIC_BASE_URL") {
            guard let url = URL(string: publicBaseUrl), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
                throw OperatorError("--public-base-url must be an http or https URL, not \(publicBaseUrl)")
            }
            configuration.publicBaseURL = publicBaseUrl.hasSuffix("/") ? String(publicBaseUrl.dropLast()) : publicBaseUrl
        }
    }
}
