import KafkaNIO
import KafkaWire
import NIOCore
import NIOPosix
import Testing

/// A broker cut off by the network answers nothing and closes nothing; a
/// request to it must fail by itself rather than wait for TCP to give up.
@Suite("Client request timeouts")
struct RequestTimeoutTests {
    /// A server that accepts connections and reads everything, answering nothing.
    final class Swallow: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    }

    @Test func anUnansweredRequestFailsAfterTheTimeoutAndClosesTheConnection() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in channel.pipeline.addHandler(Swallow()) }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(server.localAddress?.port)
        let connection = try await KafkaClientConnection.connect(host: "127.0.0.1", port: port, requestTimeout: .milliseconds(300))
        let started = ContinuousClock.now
        do {
            _ = try await connection.request(.metadata, version: 8) { MetadataRequest(topics: nil, allowAutoTopicCreation: false).encode(&$0, version: 8) }
            Issue.record("a request to a server that answers nothing was answered")
        } catch KafkaClientError.timedOut {
            let waited = ContinuousClock.now - started
            #expect(waited >= .milliseconds(300) && waited < .seconds(3), "waited \(waited)")
        }
        // The connection is closed: the next request fails at once.
        await #expect(throws: KafkaClientError.self) {
            _ = try await connection.request(.metadata, version: 8) { MetadataRequest(topics: nil, allowAutoTopicCreation: false).encode(&$0, version: 8) }
        }
        try await server.close()
    }
}
