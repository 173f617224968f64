import Foundation
import NIOSSL
import Synchronization

/// Whether a TLS listener asks clients for a certificate (Kafka's
/// `ssl.client.auth`): `requested` takes a client without one, `required`
/// closes it. A certificate a client gives is checked against the CA file
/// either way, and names the connection's principal.
public enum ClientAuth: String, Sendable, CaseIterable {
    case none
    case requested
    case required
}

/// A TLS setting that cannot be used, said so an operator can mend it.
public struct TLSError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Where a server's certificate chain, private key and trusted CAs are.
public struct TLSFiles: Sendable, Equatable {
    public var certificateFile: String
    public var keyFile: String
    /// CAs whose certificates a peer may show; the system's when nil.
    public var caFile: String?
    public var clientAuth: ClientAuth

    public init(certificateFile: String, keyFile: String, caFile: String? = nil, clientAuth: ClientAuth = .none) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.caFile = caFile
        self.clientAuth = clientAuth
    }

    /// A private key others may read is no secret: refused, as ssh does.
    /// As PostgreSQL allows, a key owned by root may also be readable by its
    /// group (mode 0640 or less): that is how Kubernetes mounts a Secret for
    /// a pod's non-root user (root-owned, read through the pod's fsGroup).
    public static func checkPrivate(_ path: String) throws(TLSError) {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw TLSError("cannot read the private key \(path): \(String(cString: strerror(errno)))")
        }
        let forbidden: mode_t = status.st_uid == 0 ? 0o037 : 0o077
        if status.st_mode & forbidden != 0 {
            throw TLSError("the private key \(path) may be read by others than its owner (mode \(String(status.st_mode & 0o777, radix: 8))): chmod 600 \(path)")
        }
    }

    /// The server side: TLS 1.2 at least (1.3 is preferred by both ends
    /// when they have it), the key checked to be private.
    public func serverConfiguration() throws(TLSError) -> TLSConfiguration {
        try Self.checkPrivate(keyFile)
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificateFile)
        } catch {
            throw TLSError("cannot load the certificate \(certificateFile): \(error)")
        }
        guard !chain.isEmpty else { throw TLSError("\(certificateFile) holds no certificate") }
        do {
            key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        } catch {
            throw TLSError("cannot load the private key \(keyFile): \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        if let caFile {
            guard FileManager.default.isReadableFile(atPath: caFile) else { throw TLSError("cannot read the CA file \(caFile)") }
            configuration.trustRoots = .file(caFile)
        }
        switch clientAuth {
        case .none: configuration.certificateVerification = .none
        case .requested: configuration.certificateVerification = .optionalVerification
        case .required:
            guard caFile != nil else { throw TLSError("--tls-client-auth required needs --tls-ca-file: the CAs whose client certificates count") }
            configuration.certificateVerification = .noHostnameVerification
        }
        return configuration
    }

    public func serverContext() throws(TLSError) -> NIOSSLContext {
        let configuration = try serverConfiguration()
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSError("the certificate \(certificateFile) and key \(keyFile) do not make a TLS context: \(error)")
        }
    }
}

/// A server's TLS context, replaced on reload (SIGHUP): connections opened
/// after take the new certificate, open ones keep theirs to the end.
public final class ReloadableTLSContext: Sendable {
    public let files: TLSFiles
    private let context: Mutex<NIOSSLContext>

    public init(_ files: TLSFiles) throws(TLSError) {
        self.files = files
        context = Mutex(try files.serverContext())
    }

    public var current: NIOSSLContext { context.withLock { $0 } }

    /// Loads the files again; on failure the context in use stays.
    public func reload() throws(TLSError) {
        let fresh = try files.serverContext()
        context.withLock { $0 = fresh }
    }
}

/// The client side (a follower to its leader, the gateway to its broker):
/// the server's certificate checked against `caFile` (or the system's
/// CAs), with an optional certificate of its own.
public struct TLSClientFiles: Sendable, Equatable {
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?
    /// Whether the server's name must match its certificate. Brokers reach
    /// each other at advertised addresses that are often IPs.
    public var verifyHostname: Bool

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, verifyHostname: Bool = false) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.verifyHostname = verifyHostname
    }

    public func clientContext() throws(TLSError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = verifyHostname ? .fullVerification : .noHostnameVerification
        if let caFile { configuration.trustRoots = .file(caFile) }
        if let certificateFile, let keyFile {
            try TLSFiles.checkPrivate(keyFile)
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw TLSError("cannot load the client certificate \(certificateFile) or key \(keyFile): \(error)")
            }
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSError("cannot make a TLS client context: \(error)")
        }
    }
}
