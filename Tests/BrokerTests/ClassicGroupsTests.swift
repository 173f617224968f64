import Core
import KafkaWire
import Synchronization
import TestSupport
import Testing

@testable import Broker

/// The consumer-group state machine, a test per transition, with time given
/// by hand: no sockets, no sleeps.
@Suite struct ClassicGroupsTests {
    typealias Action = ClassicGroups.Action

    func joinRequest(_ member: String = "", session: Int32 = 10_000, rebalance: Int32 = 20_000, protocols: [String] = ["range"]) -> JoinGroupRequest {
        JoinGroupRequest(groupID: "g", sessionTimeoutMilliseconds: session, rebalanceTimeoutMilliseconds: rebalance, memberID: member,
                         protocolType: "consumer", protocols: protocols.map { ($0, Array($0.utf8)) })
    }

    /// Joins and returns the parked token (failing the test if it was answered at once).
    func join(_ groups: inout ClassicGroups, _ request: JoinGroupRequest, as id: String, at now: Duration) -> (ClassicGroups.Token, [Action]) {
        let (outcome, actions) = groups.join(request, clientID: "c", clientHost: "h", newMemberID: id, now: now)
        guard case .parked(let token) = outcome else {
            Issue.record("join was answered at once: \(outcome)")
            return (0, actions)
        }
        return (token, actions)
    }

    func answers(_ actions: [Action]) -> [ClassicGroups.Token: JoinGroupResponse] {
        var found: [ClassicGroups.Token: JoinGroupResponse] = [:]
        for case .answerJoin(let token, let response) in actions { found[token] = response }
        return found
    }

    @Test func theFirstMemberWaitsOutTheInitialDelayThenLeadsGenerationOne() {
        var groups = ClassicGroups(initialRebalanceDelay: .seconds(3))
        let (token, actions) = join(&groups, joinRequest(), as: "a", at: .zero)
        #expect(actions.isEmpty)
        #expect(groups.nextDeadline == .seconds(3))
        #expect(groups.expire(now: .milliseconds(2_999)).isEmpty)
        let done = answers(groups.expire(now: .seconds(3)))
        #expect(done[token]?.errorCode == 0 && done[token]?.generationID == 1 && done[token]?.leader == "a")
        #expect(done[token]?.members.map(\.memberID) == ["a"])
        #expect(groups.groups["g"]?.state == .completingRebalance)
    }

    @Test func aSecondMemberMakesEveryoneRejoinAndTheRoundEndsWhenAllHave() {
        var groups = ClassicGroups(initialRebalanceDelay: .zero)
        let (first, _) = join(&groups, joinRequest(), as: "a", at: .zero)
        _ = groups.expire(now: .zero)
        #expect(groups.sync(SyncGroupRequest(groupID: "g", generationID: 1, memberID: "a", assignments: ["a": [1]]), now: .zero).0 == .answer(SyncGroupResponse(errorCode: 0, assignment: [1])))
        #expect(groups.groups["g"]?.state == .stable)
        _ = first
        // b joins: a rebalance; a's heartbeat says so; a rejoins; both get generation 2.
        let (b, none) = join(&groups, joinRequest(), as: "b", at: .seconds(1))
        #expect(none.isEmpty)
        #expect(groups.heartbeat(HeartbeatRequest(groupID: "g", generationID: 1, memberID: "a"), now: .seconds(1)) == .rebalanceInProgress)
        let (a, actions) = join(&groups, joinRequest("a"), as: "unused", at: .seconds(2))
        let done = answers(actions)
        #expect(done[a]?.generationID == 2 && done[b]?.generationID == 2)
        #expect(done[a]?.leader == "a" && done[a]?.members.count == 2 && done[b]?.members.isEmpty == true)
    }

    @Test func aMemberThatDoesNotRejoinBeforeTheDeadlineLeavesTheGroup() {
        var groups = ClassicGroups(initialRebalanceDelay: .zero)
        _ = join(&groups, joinRequest(session: 30_000, rebalance: 5_000), as: "a", at: .zero)
        _ = groups.expire(now: .zero)
        _ = groups.sync(SyncGroupRequest(groupID: "g", generationID: 1, memberID: "a", assignments: [:]), now: .zero)
        let (b, _) = join(&groups, joinRequest(session: 30_000, rebalance: 5_000), as: "b", at: .seconds(1))
        // a is alive (its heartbeats) but does not rejoin. The round's deadline
        // is the longest rebalance timeout (at least the session) from its start.
        #expect(groups.heartbeat(HeartbeatRequest(groupID: "g", generationID: 1, memberID: "a"), now: .seconds(20)) == .rebalanceInProgress)
        #expect(groups.nextDeadline == .seconds(31))
        #expect(groups.expire(now: .milliseconds(30_999)).isEmpty)
        let done = answers(groups.expire(now: .seconds(31)))
        #expect(done[b]?.generationID == 2 && done[b]?.leader == "b")
        #expect(groups.groups["g"]?.members.keys.sorted() == ["b"])
    }

    @Test func theLeadersSyncAnswersTheMembersWaitingForTheirAssignment() {
        var groups = ClassicGroups(initialRebalanceDelay: .zero)
        _ = join(&groups, joinRequest(), as: "a", at: .zero)
        _ = groups.expire(now: .zero)
        _ = groups.sync(SyncGroupRequest(groupID: "g", generationID: 1, memberID: "a", assignments: [:]), now: .zero)
        _ = join(&groups, joinRequest(), as: "b", at: .zero)
        _ = join(&groups, joinRequest("a"), as: "unused", at: .zero)
        let (waiting, _) = groups.sync(SyncGroupRequest(groupID: "g", generationID: 2, memberID: "b", assignments: [:]), now: .zero)
        guard case .parked(let token) = waiting else { Issue.record("the follower's sync was answered before the leader's"); return }
        let (leaderAnswer, actions) = groups.sync(SyncGroupRequest(groupID: "g", generationID: 2, memberID: "a", assignments: ["a": [1], "b": [2]]), now: .zero)
        #expect(leaderAnswer == .answer(SyncGroupResponse(errorCode: 0, assignment: [1])))
        #expect(actions == [.answerSync(token, SyncGroupResponse(errorCode: 0, assignment: [2]))])
    }

    @Test func aSessionEndsAtItsDeadlineAndTheOthersRebalance() {
        var groups = ClassicGroups(initialRebalanceDelay: .seconds(1))
        _ = join(&groups, joinRequest(session: 6_000), as: "a", at: .zero)
        _ = join(&groups, joinRequest(session: 10_000), as: "b", at: .zero)
        #expect(answers(groups.expire(now: .seconds(1))).count == 2)
        _ = groups.sync(SyncGroupRequest(groupID: "g", generationID: 1, memberID: "a", assignments: [:]), now: .seconds(1))
        _ = groups.sync(SyncGroupRequest(groupID: "g", generationID: 1, memberID: "b", assignments: [:]), now: .seconds(1))
        #expect(groups.groups["g"]?.state == .stable)
        _ = groups.heartbeat(HeartbeatRequest(groupID: "g", generationID: 1, memberID: "b"), now: .seconds(5))
        #expect(groups.nextDeadline == .seconds(7))
        #expect(groups.expire(now: .milliseconds(6_999)).isEmpty && groups.groups["g"]?.members.count == 2)
        _ = groups.expire(now: .seconds(7))
        #expect(groups.groups["g"]?.members.keys.sorted() == ["b"])
        #expect(groups.groups["g"]?.state == .preparingRebalance)
    }

    @Test func leavingEndsTheMembersWaitsAndAnEmptyGroupIsEmpty() {
        var groups = ClassicGroups(initialRebalanceDelay: .seconds(3))
        let (token, _) = join(&groups, joinRequest(), as: "a", at: .zero)
        let (code, actions) = groups.leave(LeaveGroupRequest(groupID: "g", memberID: "a"), now: .seconds(1))
        #expect(code == .none)
        #expect(answers(actions)[token]?.errorCode == ErrorCode.unknownMemberId.rawValue)
        #expect(groups.groups["g"]?.state == .empty && groups.nextDeadline == nil)
    }

    @Test func joiningAgainWhileAJoinWaitsEndsTheOlderOne() {
        var groups = ClassicGroups(initialRebalanceDelay: .seconds(3))
        let (older, _) = join(&groups, joinRequest(), as: "a", at: .zero)
        let (newer, actions) = join(&groups, joinRequest("a"), as: "unused", at: .seconds(1))
        #expect(answers(actions)[older]?.errorCode == ErrorCode.unknownMemberId.rawValue)
        #expect(older != newer)
    }

    @Test func refusalsComeAtOnce() {
        var groups = ClassicGroups(initialRebalanceDelay: .zero)
        func code(_ request: JoinGroupRequest) -> Int16? {
            if case .answer(let response) = groups.join(request, clientID: "c", clientHost: "h", newMemberID: "x", now: .zero).0 { return response.errorCode }
            return nil
        }
        #expect(code(joinRequest(session: 1_000)) == ErrorCode.invalidSessionTimeout.rawValue)
        #expect(code(joinRequest("stranger")) == ErrorCode.unknownMemberId.rawValue)
        #expect(code(joinRequest(protocols: [])) == ErrorCode.inconsistentGroupProtocol.rawValue)
        _ = join(&groups, joinRequest(protocols: ["range"]), as: "a", at: .zero)
        #expect(code(joinRequest(protocols: ["roundrobin"])) == ErrorCode.inconsistentGroupProtocol.rawValue)
        #expect(groups.heartbeat(HeartbeatRequest(groupID: "g", generationID: 7, memberID: "a"), now: .zero) == .illegalGeneration)
        #expect(groups.validateCommit(groupID: "other", generation: -1, memberID: "") == .none)
        #expect(groups.validateCommit(groupID: "other", generation: 3, memberID: "") == .illegalGeneration)
    }
}

/// The actor shell: its timer comes from the machine's next deadline, on a
/// manual clock.
@Suite struct GroupCoordinatorTests {
    @Test func theShellArmsItsTimerForTheNextDeadlineAndAnswersParkedJoins() async {
        let clock = ManualClock()
        let deadlines = ManualDeadlines(clock: clock)
        let coordinator = GroupCoordinator(initialRebalanceDelay: .seconds(3), clock: clock, deadlines: deadlines)
        let request = JoinGroupRequest(groupID: "g", sessionTimeoutMilliseconds: 10_000, rebalanceTimeoutMilliseconds: 10_000, memberID: "",
                                       protocolType: "consumer", protocols: [("range", [])])
        let joined = Task { await coordinator.join(request, clientID: "c", clientHost: "h") }
        #expect(await eventually { deadlines.count == 1 })
        clock.advance(by: .seconds(3))
        deadlines.fire()
        let answer = await joined.value
        #expect(answer.errorCode == 0 && answer.generationID == 1)
        // Now the session's deadline is armed, and nothing else.
        #expect(deadlines.count == 1)
        #expect(await coordinator.describe(["g"]).first?.state == "CompletingRebalance")
        clock.advance(by: .seconds(10))
        deadlines.fire()
        #expect(await eventually { await coordinator.describe(["g"]).first?.state == "Empty" })
        #expect(deadlines.count == 0)
    }
}
