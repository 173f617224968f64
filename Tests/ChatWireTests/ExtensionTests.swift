import KafkaWire
import Testing

@testable import ChatWire

@Suite("Postduif's extension APIs on the wire")
struct ExtensionTests {
    func roundTrip<T>(_ value: T, encode: (T, inout ByteWriter) -> Void, decode: (inout ByteReader) throws -> T) throws -> (T, Int) {
        var writer = ByteWriter()
        encode(value, &writer)
        var reader = ByteReader(writer.bytes)
        let decoded = try decode(&reader)
        return (decoded, reader.remainingCount)
    }

    let record = ConversationRecord(sequence: 42, offset: 1_234, timestamp: 1_795_000_000_000, key: Array("!room:gov".utf8),
                                    value: Array(#"{"type":"m.room.message"}"#.utf8), headers: [RecordHeader(key: Array("txn".utf8), value: nil)])

    @Test func conversationHistoryRoundTrips() throws {
        for position: ConversationHistoryRequest.Position in [.latest, .before(sequence: 9), .after(sequence: 3)] {
            let request = ConversationHistoryRequest(topic: "conversations", partition: 2, conversation: Array("!r:s".utf8), position: position, limit: 50, maxOffset: 77)
            let (decoded, left) = try roundTrip(request, encode: { $0.encode(&$1, version: 0) }, decode: { try ConversationHistoryRequest.decode(&$0, version: 0) })
            #expect(decoded == request && left == 0)
        }
        let response = ConversationHistoryResponse(errorCode: 0, highWatermark: 9_000, messages: [record, record])
        let (decoded, left) = try roundTrip(response, encode: { $0.encode(&$1, version: 0) }, decode: { try ConversationHistoryResponse.decode(&$0, version: 0) })
        #expect(decoded == response && left == 0)
    }

    @Test func gatewayPollRoundTrips() throws {
        let request = GatewayPollRequest(gatewayID: "gateway-a", topic: "conversations", leaseMilliseconds: 10_000, replaceUsers: true,
                                         users: ["@a:s", "@b:s"], removedUsers: ["@c:s"], maxWaitMilliseconds: 250, maxDeliveries: 5_000)
        let (decodedRequest, leftRequest) = try roundTrip(request, encode: { $0.encode(&$1, version: 0) }, decode: { try GatewayPollRequest.decode(&$0, version: 0) })
        #expect(decodedRequest == request && leftRequest == 0)
        let delivery = GatewayPollResponse.Delivery(partition: 3, offset: record.offset, sequence: record.sequence, timestamp: record.timestamp,
                                                    key: record.key, value: record.value, headers: record.headers)
        let response = GatewayPollResponse(errorCode: 0, partitions: [.init(partition: 3, workerID: "1-3-abc", fannedOutUpTo: 1_235, resyncFrom: -1)], deliveries: [delivery])
        let (decoded, left) = try roundTrip(response, encode: { $0.encode(&$1, version: 0) }, decode: { try GatewayPollResponse.decode(&$0, version: 0) })
        #expect(decoded == response && left == 0)
        #expect(decoded.deliveries[0].record == record)
    }

    @Test func truncatedAnswersAreErrorsNotCrashes() throws {
        var writer = ByteWriter()
        GatewayPollResponse(errorCode: 0, partitions: [], deliveries: [.init(partition: 0, offset: 1, sequence: 1, timestamp: 0, key: [1], value: [2], headers: [])]).encode(&writer, version: 0)
        for cut in 0..<writer.bytes.count {
            var reader = ByteReader(Array(writer.bytes[0..<cut]))
            #expect(throws: WireError.self) { _ = try GatewayPollResponse.decode(&reader, version: 0) }
        }
    }
}
