import Foundation

/// What a broker registers in etcd: the address other brokers reach it at
/// (its inter-broker listener) and, with several listeners, each
/// listener's advertised address, so Metadata can answer a client with the
/// addresses of the listener it came in on. One listener is written as
/// its bare `host:port`, as before listeners existed.
public struct BrokerEndpoints: Sendable, Equatable, Codable {
    public var address: String
    public var listeners: [String: String]
    /// The broker's rack (`--rack`), told in Metadata and used to spread replicas.
    public var rack: String?

    public init(address: String, listeners: [String: String] = [:], rack: String? = nil) {
        self.address = address
        self.listeners = listeners
        self.rack = rack
    }

    public init(registration value: [UInt8]) {
        if value.first == UInt8(ascii: "{"), let decoded = try? JSONDecoder().decode(BrokerEndpoints.self, from: Data(value)) {
            self = decoded
        } else {
            self.init(address: String(decoding: value, as: UTF8.self))
        }
    }

    public var registration: String {
        guard listeners.count > 1 || rack != nil else { return address }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(self)) ?? Data(address.utf8), as: UTF8.self)
    }

    /// The address a client of `listener` is told: that listener's, or the
    /// broker's one address when it registered no names (an older broker
    /// mid-upgrade); nil when the broker has no such listener.
    public func address(for listener: String) -> String? {
        listeners.isEmpty ? address : listeners[listener]
    }
}
