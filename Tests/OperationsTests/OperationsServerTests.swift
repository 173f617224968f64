import AsyncHTTPClient
import Logging
import Operations
import Synchronization
import Testing

/// The operators' port on a real loopback socket, asked by a real HTTP client.
@Suite struct OperationsServerTests {
    @Test func healthReadyAndMetricsAnswerAsTheNodeStands() async throws {
        let ready = Atomic<Bool>(false)
        let server = OperationsServer(host: "127.0.0.1", port: 0, logger: Logger(label: "test"),
                                      metricsText: { "postduif_test_total 1\n" }, isReady: { ready.load(ordering: .relaxed) })
        let (ports, portsIn) = AsyncStream.makeStream(of: Int.self)
        let serving = Task { try await server.run { portsIn.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        func get(_ path: String) async throws -> (status: UInt, body: String) {
            let response = try await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 1 << 20)
            return (response.status.code, String(buffer: body))
        }
        #expect(try await get("/health").status == 200)
        #expect(try await get("/ready").status == 503)
        ready.store(true, ordering: .relaxed)
        #expect(try await get("/ready").status == 200)
        let metrics = try await get("/metrics")
        #expect(metrics.status == 200 && metrics.body.contains("postduif_test_total 1"))
        #expect(try await get("/nothing-here").status == 404)
        try await client.shutdown()
        serving.cancel()
        _ = try? await serving.value
    }
}
