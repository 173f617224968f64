import Core
import Foundation
import KafkaWire
import Logging

/// The shell around `ClassicGroups`: keeps the continuations of parked
/// JoinGroup and SyncGroup requests by token, resumes them as the state
/// machine's actions say, and arms one timer for the machine's next
/// deadline (no polling tick). Time comes from `clock`, deadlines from
/// `deadlines`, so tests drive both by hand.
///
/// An actor: each request runs the machine to completion without
/// suspending, so there is no state to re-check after an `await`.
actor GroupCoordinator {
    private var groups: ClassicGroups
    private var joins: [ClassicGroups.Token: CheckedContinuation<JoinGroupResponse, Never>] = [:]
    private var syncs: [ClassicGroups.Token: CheckedContinuation<SyncGroupResponse, Never>] = [:]
    private let clock: any MonotonicClock
    private let deadlines: any DeadlineScheduler
    /// The deadline the timer is armed for, and its handle.
    private var armed: (deadline: Duration, handle: UInt64)? = nil
    let logger: Logger

    init(initialRebalanceDelay: Duration = .milliseconds(500), clock: any MonotonicClock = SystemClock(),
         deadlines: any DeadlineScheduler, logger: Logger = Logger(label: "postduif.groups")) {
        groups = ClassicGroups(initialRebalanceDelay: initialRebalanceDelay)
        self.clock = clock
        self.deadlines = deadlines
        self.logger = logger
    }

    func join(_ request: JoinGroupRequest, clientID: String, clientHost: String) async -> JoinGroupResponse {
        logger.debug("join request", metadata: ["group": "\(request.groupID)", "member": "\(request.memberID)"])
        let newMemberID = "\(clientID.isEmpty ? "member" : clientID)-\(UUID().uuidString.lowercased())"
        return await withCheckedContinuation { continuation in
            let (outcome, actions) = groups.join(request, clientID: clientID, clientHost: clientHost, newMemberID: newMemberID, now: clock.now)
            switch outcome {
            case .answer(let response): continuation.resume(returning: response)
            case .parked(let token): joins[token] = continuation
            }
            perform(actions)
        }
    }

    func sync(_ request: SyncGroupRequest) async -> SyncGroupResponse {
        logger.debug("member syncs", metadata: ["group": "\(request.groupID)", "member": "\(request.memberID)", "generation": "\(request.generationID)"])
        return await withCheckedContinuation { continuation in
            let (outcome, actions) = groups.sync(request, now: clock.now)
            switch outcome {
            case .answer(let response): continuation.resume(returning: response)
            case .parked(let token): syncs[token] = continuation
            }
            perform(actions)
        }
    }

    func heartbeat(_ request: HeartbeatRequest) -> ErrorCode {
        let code = groups.heartbeat(request, now: clock.now)
        rearm()
        return code
    }

    func leave(_ request: LeaveGroupRequest) -> ErrorCode {
        logger.debug("member leaves", metadata: ["group": "\(request.groupID)", "member": "\(request.memberID)"])
        let (code, actions) = groups.leave(request, now: clock.now)
        perform(actions)
        return code
    }

    /// Whether the group has no members (or is unknown).
    func isEmpty(_ groupID: String) -> Bool {
        groups.groups[groupID]?.members.isEmpty ?? true
    }

    /// Whether the coordinator knows the group (it has had members since start).
    func knows(_ groupID: String) -> Bool {
        groups.groups[groupID] != nil
    }

    /// Forgets an empty group (DeleteGroups).
    func forget(_ groupID: String) {
        groups.forget(groupID)
    }

    /// The topics the group's consumers subscribe to (OffsetDelete refuses those).
    func subscribedTopics(_ groupID: String) -> Set<String> {
        groups.subscribedTopics(groupID)
    }

    func validateCommit(groupID: String, generation: Int32, memberID: String) -> ErrorCode {
        groups.validateCommit(groupID: groupID, generation: generation, memberID: memberID)
    }

    func describe(_ groupIDs: [String]) -> [DescribeGroupsResponse.Group] {
        groups.describe(groupIDs)
    }

    func list() -> [(groupID: String, protocolType: String)] {
        groups.list()
    }

    /// The timer fired: sessions that ran out end, rounds whose deadline passed complete.
    func deadlineReached() {
        armed = nil
        perform(groups.expire(now: clock.now))
    }

    /// Answers parked requests, then arms the timer for the next deadline.
    private func perform(_ actions: [ClassicGroups.Action]) {
        for action in actions {
            switch action {
            case .answerJoin(let token, let response):
                if response.errorCode == 0 {
                    logger.debug("generation complete", metadata: ["member": "\(response.memberID)", "generation": "\(response.generationID)"])
                }
                joins.removeValue(forKey: token)?.resume(returning: response)
            case .answerSync(let token, let response):
                syncs.removeValue(forKey: token)?.resume(returning: response)
            }
        }
        rearm()
    }

    private func rearm() {
        let next = groups.nextDeadline
        if let armed, armed.deadline == next { return }
        if let armed { deadlines.remove(armed.handle) }
        armed = nil
        guard let next else { return }
        let handle = deadlines.add(timeout: max(next - clock.now, .zero)) { [weak self] in
            // The deadline scheduler calls from its own thread; the machine lives here.
            Task { await self?.deadlineReached() }
        }
        armed = (next, handle)
    }
}
