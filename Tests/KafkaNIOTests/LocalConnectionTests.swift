import KafkaNIO
import KafkaWire
import Synchronization
import Testing

/// A connection to a broker in the same process carries the same frames as
/// a socket: a header the broker can decode, an answer read past its
/// header. The broker here is a stand-in that echoes what it decoded; the
/// real one is driven the same way in BrokerTests' LocalClientTests.
@Suite struct LocalConnectionTests {
    final class EchoBroker: KafkaLocalBroker {
        let seen = Mutex<[RequestHeader]>([])

        func answer(_ frame: [UInt8]) async throws -> [UInt8]? {
            var reader = ByteReader(frame)
            let header = try RequestHeader.decode(&reader)
            seen.withLock { $0.append(header) }
            if header.apiKey == 9999 { throw WireError.malformed("refused") }
            var writer = ByteWriter()
            writer.writeInt32(0)  // size, patched
            writer.writeInt32(header.correlationID)
            if header.apiVersion >= ApiKey(rawValue: header.apiKey).map(\.firstFlexibleVersion) ?? .max && header.apiKey != ApiKey.apiVersions.rawValue {
                writer.writeEmptyTaggedFields()
            }
            writer.writeInt16(header.apiKey)
            writer.writeInt16(header.apiVersion)
            writer.patchUInt32(UInt32(writer.bytes.count - 4), at: 0)
            return writer.bytes
        }

        func isSelf(_ address: String) -> Bool { true }
    }

    @Test func requestsCarryTheirHeaderAndAnswersArriveAfterTheirs() async throws {
        let broker = EchoBroker()
        let connection = KafkaClientConnection(local: broker, clientID: "tester")
        for (api, version) in [(ApiKey.metadata, Int16(8)), (.metadata, 9), (.apiVersions, 3)] {
            var reader = try await connection.request(api, version: version) { _ in }
            #expect(try reader.readInt16() == api.rawValue)
            #expect(try reader.readInt16() == version)
        }
        var extensionAnswer = try await connection.request(extensionKey: 32_001, version: 0) { _ in }
        #expect(try extensionAnswer.readInt16() == 32_001)
        #expect(broker.seen.withLock { $0.map(\.clientID) } == ["tester", "tester", "tester", "tester"])
    }

    @Test func aRefusedRequestClosesTheConnectionForTheNext() async throws {
        let connection = KafkaClientConnection(local: EchoBroker(), clientID: "tester")
        await #expect(throws: KafkaClientError.self) { _ = try await connection.request(extensionKey: 9999, version: 0) { _ in } }
        await #expect(throws: KafkaClientError.self) { _ = try await connection.request(.metadata, version: 8) { _ in } }
    }
}
