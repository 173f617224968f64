import Core
import Testing

@testable import Gateway

/// The parts of the gateway's chat state, each on its own.
@Suite struct ChatPartsTests {
    func event(_ roomID: String, offset: Int64) -> RoomEvent {
        RoomEvent(roomID: roomID, eventID: "$0_\(offset)", type: "m.room.message", sender: "@a:gov.example", partition: 0, offset: offset, json: "{}")
    }

    @Test func theCacheAnswersOnlyForWhatItCoversAndForgetsAPartitionThatRestarts() {
        let cache = TimelineCache(partitions: 1)
        cache.start(partition: 0, at: 10)
        // Nothing delivered yet: the cache cannot vouch for the room.
        #expect(cache.events(roomID: "!r", after: 10, upTo: 20) == nil)
        #expect(cache.append(event("!r", offset: 12)))
        #expect(!cache.append(event("!r", offset: 12)), "a repeated delivery was cached twice")
        #expect(cache.events(roomID: "!r", after: 12, upTo: 20)?.events.map(\.offset) == [12])
        // Before the first delivered event the cache does not know.
        #expect(cache.events(roomID: "!r", after: 11, upTo: 20) == nil)
        let epoch = cache.positionWithToken.epoch
        cache.restart(partition: 0, at: 30)
        #expect(cache.positionWithToken.epoch != epoch)
        #expect(cache.events(roomID: "!r", after: 12, upTo: 20) == nil)
        cache.cover(["!r"], from: [0: 30])
        #expect(cache.events(roomID: "!r", after: 30, upTo: 40)?.events.isEmpty == true)
    }

    @Test func thePositionOnlyMovesForward() {
        let cache = TimelineCache(partitions: 2)
        cache.advance(partition: 1, to: 5)
        cache.advance(partition: 1, to: 3)
        cache.advance(state: 7)
        cache.advance(markers: 2)
        cache.advance(userData: 4)
        cache.advance(userData: 1)
        cache.advance(typing: 6)
        cache.advance(typing: 5)
        cache.advance(toDevice: 3)
        #expect(cache.position.token == "s7_0_5_2_4_6_3")
    }

    @Test func aUserIdleTooLongIsNoLongerLocalNorRegistered() {
        let clock = ManualClock()
        let registration = FanOutRegistration(clock: clock)
        registration.polling("broker-1", active: true)
        registration.touch(user: "@a:gov.example")
        #expect(registration.confirm(["@a:gov.example"], at: "broker-1") == ["@a:gov.example"])
        #expect(registration.isRegistered("@a:gov.example"))
        clock.advance(by: .seconds(301))
        #expect(registration.localUsers(idle: 300).isEmpty)
        #expect(!registration.isRegistered("@a:gov.example"))
    }

    @Test func aNewWorkerIsNoticedOnceAndTheSameOneNot() {
        let registration = FanOutRegistration(clock: ManualClock())
        #expect(registration.record(worker: "w1", partition: 0))
        #expect(!registration.record(worker: "w1", partition: 0))
        #expect(registration.record(worker: "w2", partition: 0))
        #expect(registration.worker(partition: 0) == "w2")
    }
}
