import KafkaNIO

/// This broker as a `KafkaLocalBroker`: the chat gateway run inside the
/// broker's process (`postduif serve --with-gateway`, ADR 0016) hands its
/// request frames straight to the request handlers a socket's connection
/// uses, so leader checks, errors and metrics are the same, without the
/// loopback socket, the event loops and the thread hand-offs on each side.
struct LocalClient: KafkaLocalBroker {
    let broker: Broker
    let name: String

    func answer(_ frame: [UInt8]) async throws -> [UInt8]? {
        // In the same process there is no one to authenticate: the session
        // counts as signed in, as the gateway's SASL user would be.
        var session = ClientSession(client: name)
        session.authenticatedUser = "in-process:\(name)"
        switch try await broker.stage(frame: frame, session: &session) {
        case .ready(let response): return response
        case .pending(let finish): return await finish()
        }
    }

    func isSelf(_ address: String) -> Bool {
        // A single node is every address its clients were given; in a
        // cluster, only the one it advertises.
        let configuration = broker.configuration
        guard configuration.isClustered else { return true }
        return address == "\(configuration.effectiveAdvertisedHost):\(configuration.effectiveAdvertisedPort)"
    }
}

extension Broker {
    /// A client for code in this process (the embedded gateway).
    public func localClient(name: String) -> any KafkaLocalBroker {
        LocalClient(broker: self, name: name)
    }
}
