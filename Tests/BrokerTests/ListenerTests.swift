import Cluster
import Testing

@testable import Broker

@Suite("Listeners")
struct ListenerTests {
    @Test("named after their protocol, or mapped; advertised addresses per listener")
    func resolve() throws {
        let listeners = try ListenerSpec.resolve(
            listeners: "SASL_SSL://0.0.0.0:9093, PLAINTEXT://127.0.0.1:9092,internal://[::1]:9094",
            advertised: "SASL_SSL://kafka.gov.example:443", protocols: "INTERNAL:SSL")
        #expect(listeners.map(\.name) == ["SASL_SSL", "PLAINTEXT", "INTERNAL"])
        #expect(listeners.map(\.securityProtocol) == [.saslSSL, .plaintext, .ssl])
        #expect(listeners[0].advertisedAddress == "kafka.gov.example:443")
        #expect(listeners[1].advertisedAddress == "127.0.0.1:9092")
        #expect(listeners[2].host == "::1")
    }

    @Test("settings that cannot work are refused, saying why")
    func refused() {
        #expect(throws: ListenerError.self) { try ListenerSpec.resolve(listeners: "CUSTOM://:9092", advertised: nil, protocols: nil) }
        #expect(throws: ListenerError.self) { try ListenerSpec.resolve(listeners: "PLAINTEXT://:9092,SSL://:9092", advertised: nil, protocols: nil) }
        #expect(throws: ListenerError.self) { try ListenerSpec.resolve(listeners: "PLAINTEXT://:9092,PLAINTEXT://:9093", advertised: nil, protocols: nil) }
        #expect(throws: ListenerError.self) { try ListenerSpec.resolve(listeners: "PLAINTEXT://:9092", advertised: "SSL://x:1", protocols: nil) }
        #expect(throws: ListenerError.self) { try ListenerSpec.resolve(listeners: "PLAINTEXT:9092", advertised: nil, protocols: nil) }
        #expect(throws: ListenerError.self) { try ListenerSpec.parseProtocolMap("A:TLS") }
    }

    @Test("without --listeners, one listener from --host, --port and --sasl, as before")
    func single() throws {
        var configuration = BrokerConfiguration()
        configuration.host = "0.0.0.0"
        configuration.port = 9092
        configuration.saslEnabled = true
        #expect(configuration.effectiveListeners == [Listener(name: "SASL_PLAINTEXT", securityProtocol: .saslPlaintext, host: "0.0.0.0", port: 9092)])
        #expect(configuration.effectiveAdvertisedHost == "127.0.0.1")
        configuration.listeners = try ListenerSpec.resolve(listeners: "SSL://:9093,PLAINTEXT://:9092", advertised: nil, protocols: nil)
        #expect(throws: ListenerError.self) { try configuration.checkListeners() }
        configuration.interBrokerListener = "PLAINTEXT"
        #expect(configuration.effectiveAdvertisedPort == 9092)
    }

    @Test("a broker's registration: a bare address for one listener, every listener's otherwise")
    func registration() {
        let one = BrokerEndpoints(address: "10.0.0.1:9092", listeners: ["PLAINTEXT": "10.0.0.1:9092"])
        #expect(one.registration == "10.0.0.1:9092")
        let read = BrokerEndpoints(registration: Array(one.registration.utf8))
        #expect(read.address(for: "SSL") == "10.0.0.1:9092", "an address without names serves every listener")
        let two = BrokerEndpoints(address: "10.0.0.1:9094", listeners: ["SSL": "k1.gov:9093", "INTERNAL": "10.0.0.1:9094"])
        let back = BrokerEndpoints(registration: Array(two.registration.utf8))
        #expect(back == two)
        #expect(back.address(for: "SSL") == "k1.gov:9093")
        #expect(back.address(for: "PLAINTEXT") == nil)
    }
}
