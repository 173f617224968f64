import Foundation

/// Kafka's security protocols: what a listener asks of a connection before
/// its first request (TLS) and before any request but the handshake (SASL).
public enum SecurityProtocol: String, Sendable, CaseIterable {
    case plaintext = "PLAINTEXT"
    case ssl = "SSL"
    case saslPlaintext = "SASL_PLAINTEXT"
    case saslSSL = "SASL_SSL"

    public var usesTLS: Bool { self == .ssl || self == .saslSSL }
    public var requiresSASL: Bool { self == .saslPlaintext || self == .saslSSL }
}

/// One Kafka listener: a name, its security protocol, where it binds and
/// the address clients that come in on it are told (Metadata,
/// FindCoordinator). Kafka's `listeners`, `advertised.listeners` and
/// `listener.security.protocol.map` in one value.
public struct Listener: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var securityProtocol: SecurityProtocol
    public var host: String
    public var port: Int
    public var advertisedHost: String
    public var advertisedPort: Int

    public init(name: String, securityProtocol: SecurityProtocol, host: String, port: Int, advertisedHost: String? = nil, advertisedPort: Int? = nil) {
        self.name = name
        self.securityProtocol = securityProtocol
        self.host = host
        self.port = port
        // A wildcard is no address to connect to: loopback, as before.
        self.advertisedHost = advertisedHost ?? (host == "0.0.0.0" || host == "::" || host.isEmpty ? "127.0.0.1" : host)
        self.advertisedPort = advertisedPort ?? port
    }

    public var advertisedAddress: String { "\(advertisedHost):\(advertisedPort)" }
    public var description: String { "\(name)://\(host):\(port)" }
}

/// A listener setting that cannot be used, said in the operator's words.
public struct ListenerError: Error, CustomStringConvertible, Equatable {
    public var description: String
}

public enum ListenerSpec {
    /// Parses Kafka's form: `NAME://host:port` entries separated by commas;
    /// `[::1]:9092` for IPv6, an empty host for every address.
    public static func parse(_ text: String) throws(ListenerError) -> [(name: String, host: String, port: Int)] {
        var entries: [(name: String, host: String, port: Int)] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            guard let separator = part.range(of: "://") else {
                throw ListenerError(description: "listener '\(part)' is not NAME://host:port")
            }
            let name = String(part[..<separator.lowerBound]).uppercased()
            let address = part[separator.upperBound...]
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
                throw ListenerError(description: "listener '\(part)' has no usable name (letters, digits, _ and -)")
            }
            guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else {
                throw ListenerError(description: "listener '\(part)' has no port")
            }
            var host = String(address[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            if host.isEmpty { host = "0.0.0.0" }
            if entries.contains(where: { $0.name == name }) {
                throw ListenerError(description: "listener \(name) is named twice")
            }
            entries.append((name, host, port))
        }
        return entries
    }

    /// Parses `NAME:PROTOCOL` pairs (Kafka's listener.security.protocol.map).
    public static func parseProtocolMap(_ text: String) throws(ListenerError) -> [String: SecurityProtocol] {
        var map: [String: SecurityProtocol] = [:]
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            let pair = part.split(separator: ":", maxSplits: 1).map(String.init)
            guard pair.count == 2, let value = SecurityProtocol(rawValue: pair[1].uppercased()) else {
                throw ListenerError(description: "'\(part)' is not NAME:PROTOCOL with PROTOCOL one of \(SecurityProtocol.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            map[pair[0].uppercased()] = value
        }
        return map
    }

    /// The listeners `--listeners` and `--advertised-listeners` describe: a
    /// listener's protocol is its name's entry in `protocols`, else the
    /// protocol its name is (`SSL://...`), as Kafka's default map says.
    public static func resolve(listeners: String, advertised: String?, protocols: String?) throws(ListenerError) -> [Listener] {
        let map = try protocols.map(parseProtocolMap) ?? [:]
        let bound = try parse(listeners)
        guard !bound.isEmpty else { throw ListenerError(description: "no listener given") }
        let told = try advertised.map(parse) ?? []
        for entry in told where !bound.contains(where: { $0.name == entry.name }) {
            throw ListenerError(description: "advertised listener \(entry.name) is not among the listeners")
        }
        var ports: [Int: String] = [:]
        return try bound.map { entry throws(ListenerError) -> Listener in
            guard let securityProtocol = map[entry.name] ?? SecurityProtocol(rawValue: entry.name) else {
                throw ListenerError(description: "listener \(entry.name) has no security protocol: name it after one or map it with --listener-security-protocol-map \(entry.name):SSL")
            }
            if entry.port != 0, let other = ports[entry.port] {
                throw ListenerError(description: "listeners \(other) and \(entry.name) both use port \(entry.port)")
            }
            ports[entry.port] = entry.name
            let advertisedEntry = told.first { $0.name == entry.name }
            return Listener(name: entry.name, securityProtocol: securityProtocol, host: entry.host, port: entry.port,
                            advertisedHost: advertisedEntry.map { $0.host == "0.0.0.0" ? "127.0.0.1" : $0.host }, advertisedPort: advertisedEntry?.port)
        }
    }
}
