import Foundation
import HTTPTypes
import HummingbirdWebSocket
import NIOCore
import PostduifClient

extension HTTPProxy {
    /// `GET /topics/{topic}/ws` (with the query of `/topics/{topic}/events`)
    /// upgrades to a WebSocket that carries a text message per record;
    /// every other request stays HTTP. Authentication and the checks of
    /// the topic come before the upgrade: a refusal is an HTTP answer.
    func webSocketUpgrade(_ head: HTTPRequest, channel: any Channel) async -> ShouldUpgradeResult<WebSocketDataHandler<HTTP1WebSocketUpgradeChannel.Context>> {
        guard let path = head.path, let components = URLComponents(string: path) else { return .dontUpgrade }
        let parts = components.path.split(separator: "/")
        guard parts.count == 3, parts[0] == "topics", parts[2] == "ws", let topic = String(parts[1]).removingPercentEncoding else { return .dontUpgrade }
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { first, _ in first })
        let consumer: GroupConsumer
        let autoCommit: Bool
        let format: EmbeddedFormat
        do {
            let caller = try await caller(authorization: head.headerFields[.authorization], channel: channel)
            guard let chosen = EmbeddedFormat(rawValue: query["format"] ?? "binary") else { throw ProxyError.unprocessable("format is json or binary") }
            format = chosen
            (consumer, autoCommit) = try await subscription(topic: topic, query: query, caller)
        } catch {
            // A refused upgrade gets only a bare 400 from the upgrader, so
            // the socket opens and closes at once with the proxy's error
            // (policy violation, the reason "40101 ..."), which browsers
            // show to the page.
            let refusal = (error as? ProxyError) ?? ProxyError.kafka(error)
            if refusal.code == 40101 { await pauseAfterRefusedLogin() }
            return .upgrade([:]) { _, outbound, _ in
                try await outbound.close(.policyViolation, reason: String("\(refusal.code) \(refusal.message)".prefix(120)))
            }
        }
        return .upgrade([:]) { inbound, outbound, _ in
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The client's messages are not used; its close ends the stream.
                group.addTask { for try await _ in inbound {} }
                group.addTask {
                    while !Task.isCancelled {
                        // A long wait: an idle subscription costs a Fetch every
                        // few seconds, not every second (10,000 of them idle).
                        let records = try await consumer.poll(maxWaitMilliseconds: 5_000)
                        for record in records {
                            let data = try JSONSerialization.data(withJSONObject: try self.recordJSON(record, format), options: [.withoutEscapingSlashes])
                            // Awaited: a slow reader slows the reading.
                            try await outbound.write(.text(String(decoding: data, as: UTF8.self)))
                        }
                        if autoCommit && !records.isEmpty { try? await consumer.commit() }
                    }
                }
                try await group.next()
                group.cancelAll()
            }
            await consumer.close(commit: autoCommit)
        }
    }
}
