import NIOCore
import NIOHTTP1
import Testing

@testable import Gateway

/// The sync fast path's rules of order, without a channel.
@Suite struct FastPathOrderTests {
    var order = FastPathOrder(bodyBytesMax: 16, takesSends: true)

    static func head(_ method: HTTPMethod, _ uri: String, _ headers: HTTPHeaders = [:]) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)
    }

    static let sync = head(.GET, "/_matrix/client/v3/sync?since=s1_0_0&timeout=30000")
    static let joined = head(.GET, "/_matrix/client/v3/joined_rooms")
    static let send = head(.PUT, "/_matrix/client/v3/rooms/%21r%3Agov.example/send/m.room.message/t1")

    @Test mutating func aSyncOnAnIdleConnectionIsTakenAtItsEnd() {
        #expect(order.receive(.head(Self.sync)).isEmpty)
        #expect(order.receive(.end(nil)) == [.sync(Self.sync)])
    }

    @Test mutating func aSyncBehindAnUnansweredRequestGoesToTheRouter() {
        #expect(order.receive(.head(Self.joined)) == [.forward(.head(Self.joined))])
        #expect(order.receive(.end(nil)) == [.forward(.end(nil))])
        // The router has not answered joined_rooms yet: the sync follows it there.
        #expect(order.receive(.head(Self.sync)) == [.forward(.head(Self.sync))])
        #expect(order.receive(.end(nil)) == [.forward(.end(nil))])
        order.responseEnded()
        order.responseEnded()
        #expect(order.outstanding == 0)
        #expect(order.receive(.head(Self.sync)).isEmpty)
        #expect(order.receive(.end(nil)) == [.sync(Self.sync)])
    }

    @Test mutating func aSyncWithABodyGoesToTheRouterWhole() {
        let body = ByteBuffer(string: "{}")
        #expect(order.receive(.head(Self.sync)).isEmpty)
        #expect(order.receive(.body(body)) == [.forward(.head(Self.sync)), .forward(.body(body))])
        #expect(order.receive(.end(nil)) == [.forward(.end(nil))])
        #expect(order.outstanding == 1)
    }

    @Test mutating func whatComesWhileASyncIsParkedWaitsInOrder() {
        _ = order.receive(.head(Self.sync))
        _ = order.receive(.end(nil))
        order.busy = .parked
        #expect(order.receive(.head(Self.joined)).isEmpty)
        #expect(order.receive(.end(nil)).isEmpty)
        #expect(order.nextQueued() == nil, "a part left the queue while the sync was parked")
        order.busy = .none
        var actions: [FastPathOrder.Action] = []
        while let part = order.nextQueued() { actions += order.take(part) }
        #expect(actions == [.forward(.head(Self.joined)), .forward(.end(nil))])
    }

    @Test mutating func aSendIsTakenWithItsBodyAndAnOversizedOneLosesIt() {
        #expect(order.receive(.head(Self.send)).isEmpty)
        #expect(order.receive(.body(ByteBuffer(string: "{\"body\":\"hi\"}"))).isEmpty)
        let path = FastPathOrder.SendPath(roomID: "!r:gov.example", eventType: "m.room.message", txnID: "t1")
        #expect(order.receive(.end(nil)) == [.send(Self.send, path, ByteBuffer(string: "{\"body\":\"hi\"}"))])
        _ = order.receive(.head(Self.send))
        _ = order.receive(.body(ByteBuffer(string: "{\"body\":\"0123456789\"}")))
        #expect(order.receive(.end(nil)) == [.send(Self.send, path, nil)])
    }

    @Test func sendsGoToTheRouterWhenTheBrokerIsElsewhere() {
        var remote = FastPathOrder(bodyBytesMax: 16, takesSends: false)
        #expect(remote.receive(.head(Self.send)) == [.forward(.head(Self.send))])
    }

    @Test func onlyPlainKeepAliveSyncsAndWholeSendPathsAreTaken() {
        #expect(FastPathOrder.isPlainSync(Self.sync))
        #expect(!FastPathOrder.isPlainSync(Self.head(.GET, "/_matrix/client/v3/syncing")))
        #expect(!FastPathOrder.isPlainSync(Self.head(.GET, "/_matrix/client/v3/sync", ["connection": "close"])))
        #expect(!FastPathOrder.isPlainSync(Self.head(.GET, "/_matrix/client/v3/sync", ["content-length": "2"])))
        #expect(!FastPathOrder.isPlainSync(Self.head(.POST, "/_matrix/client/v3/sync")))
        #expect(FastPathOrder.sendPath(Self.head(.PUT, "/_matrix/client/v3/rooms/!r/send/m.room.message/")) == nil)
        #expect(FastPathOrder.sendPath(Self.head(.PUT, "/_matrix/client/v3/rooms/!r/state/m.room.name/x")) == nil)
        #expect(FastPathOrder.sendPath(Self.head(.PUT, "/_matrix/client/v3/rooms/!r/send/m.room.message/t", ["expect": "100-continue"])) == nil)
    }
}
