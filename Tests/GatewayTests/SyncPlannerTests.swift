import Core
import Logging
import Synchronization
import Testing

@testable import Gateway

/// The gateway's long-poll planner and the pieces it stands on, with time
/// given by hand: no broker, no sockets, no sleeps.
@Suite struct SyncPlannerTests {
    let state = ChatState(serverName: "gov.example", timelinePartitions: 2)
    let clock = ManualClock(at: .seconds(100))
    let api: MatrixAPI

    init() {
        var api = MatrixAPI(state: state, link: BrokerLink(bootstrap: "127.0.0.1:1", logger: Logger(label: "test")),
                            configuration: GatewayConfiguration(), logger: Logger(label: "test"))
        api.clock = clock
        self.api = api
    }

    func query(since: SyncPosition?, timeout: Duration) -> MatrixAPI.SyncQuery {
        MatrixAPI.SyncQuery(session: Session(userID: "@minister:gov.example", deviceID: "D"), since: since, fullState: false, deadline: clock.now + timeout)
    }

    @Test func aLongPollWithNothingNewWaitsUntilItsDeadlineThenAnswers() throws {
        let position = state.cache.position
        let waiting = query(since: position, timeout: .seconds(30))
        guard case .wait = try api.syncStep(waiting, now: clock.now) else {
            Issue.record("a sync with nothing new answered before its deadline")
            return
        }
        clock.advance(by: .seconds(29))
        guard case .wait = try api.syncStep(waiting, now: clock.now) else {
            Issue.record("answered a second early")
            return
        }
        clock.advance(by: .seconds(1))
        guard case .answer(let body, _) = try api.syncStep(waiting, now: clock.now) else {
            Issue.record("still waiting at the deadline")
            return
        }
        #expect(body.contains("\"next_batch\":\"\(position.token)\""))
    }

    @Test func aFirstSyncAnswersAtOnceWhateverItsTimeout() throws {
        guard case .answer(let body, _) = try api.syncStep(query(since: nil, timeout: .seconds(30)), now: clock.now) else {
            Issue.record("a first sync waited")
            return
        }
        #expect(body.contains("next_batch"))
    }

    @Test func aParkedSyncIsWokenWhenItsUserIsAndNotBefore() {
        let woken = Mutex(0)
        let generation = state.generations.of("@minister:gov.example")
        let key = state.park("@minister:gov.example", after: generation, timeout: .seconds(30)) { woken.withLock { $0 += 1 } }
        #expect(key != nil)
        state.wake(users: ["@someone-else:gov.example"])
        #expect(woken.withLock { $0 } == 0)
        state.wake(users: ["@minister:gov.example"])
        #expect(woken.withLock { $0 } == 1)
        // Something arrived since the generation it read: no parking at all.
        #expect(state.park("@minister:gov.example", after: generation, timeout: .seconds(30)) { woken.withLock { $0 += 1 } } == nil)
        #expect(woken.withLock { $0 } == 1)
    }

    @Test func anUnparkedSyncIsNeverCalled() {
        let woken = Mutex(0)
        let user = "@minister:gov.example"
        let key = state.park(user, after: state.generations.of(user), timeout: .seconds(30)) { woken.withLock { $0 += 1 } }
        state.unpark(user, key: try! #require(key))
        state.wake(users: [user])
        #expect(woken.withLock { $0 } == 0)
        #expect(state.syncWaiters.count == 0)
    }
}

@Suite struct SyncTokenTests {
    @Test func aTokenRoundTripsAndAForeignOneIsRefused() throws {
        var position = SyncPosition(timeline: [12, 0, 7], state: 40)
        position.markers = 3
        position.userData = 9
        position.typing = 2
        position.toDevice = 5
        #expect(position.token == "s40_12_0_7_3_9_2_5")
        #expect(SyncPosition(token: position.token, partitions: 3) == position)
        // A token of before user data and typing: those start from nothing.
        var older = position
        older.userData = 0
        older.typing = 0
        older.toDevice = 0
        #expect(SyncPosition(token: "s40_12_0_7_3", partitions: 3) == older)
        for bad in ["", "s", "x40_1_2_3_4", "s40_12_0_7", "s40_12_0_7_3_9", "s40_12_0_7_3_9_2", "s40__0_7_3_9_2_5", "s40_12_0_7_3_9_2_5_", "s1234567890123456789_0_0_0_0_0_0_0"] {
            #expect(SyncPosition(token: bad, partitions: 3) == nil, "accepted \(bad)")
        }
    }
}

@Suite struct GatewayTextTests {
    @Test func pathParametersArePercentDecodedOrLeftAsSent() {
        #expect(MatrixAPI.pathParameter("txn%2D1") == "txn-1")
        #expect(MatrixAPI.pathParameter("%21room%3Agov.example") == "!room:gov.example")
        #expect(MatrixAPI.percentDecoded("%ZZ") == nil)
        #expect(MatrixAPI.pathParameter("plain") == "plain")
    }

    @Test func jsonStringsEscapeWhatJSONRequires() {
        #expect(JSONText.string("plain") == "\"plain\"")
        #expect(JSONText.string("a\"b\\c\nd\u{01}") == "\"a\\\"b\\\\c\\nd\\u0001\"")
    }
}
