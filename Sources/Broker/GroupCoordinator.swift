import Foundation
import KafkaWire
import Logging

/// The classic consumer-group coordinator (Kafka's `ClassicGroup`): members
/// join, one round of joins makes a generation, the leader's SyncGroup hands
/// every member its assignment, heartbeats keep members alive.
///
/// An actor: every method re-checks the group's state after it resumes from
/// a suspension, because other members' requests run in between. Waiting
/// JoinGroup and SyncGroup requests are parked as continuations and resumed
/// by the request or timer tick that completes their round.
actor GroupCoordinator {
    enum State: String {
        case empty = "Empty"
        case preparingRebalance = "PreparingRebalance"
        case completingRebalance = "CompletingRebalance"
        case stable = "Stable"
    }

    struct Member {
        var id: String
        var clientID: String
        var clientHost: String
        var sessionTimeout: Duration
        var rebalanceTimeout: Duration
        var protocols: [(name: String, metadata: [UInt8])]
        var assignment: [UInt8] = []
        var lastHeard: ContinuousClock.Instant
        var hasJoined = false
        var joinWaiter: CheckedContinuation<JoinGroupResponse, Never>? = nil
        var syncWaiter: CheckedContinuation<SyncGroupResponse, Never>? = nil
    }

    struct Group {
        var id: String
        var state: State = .empty
        var generation: Int32 = 0
        var protocolType = ""
        var protocolName = ""
        var leader = ""
        var members: [String: Member] = [:]
        /// Join order, so the first member leads and responses are stable.
        var order: [String] = []
        var rebalanceDeadline: ContinuousClock.Instant? = nil
    }

    /// Kafka's group.min/max.session.timeout.ms.
    static let sessionTimeoutRange = Duration.seconds(6)...Duration.seconds(1800)

    private var groups: [String: Group] = [:]
    private let clock = ContinuousClock()
    /// How long an empty group waits for more members before its first
    /// generation (Kafka's group.initial.rebalance.delay.ms, 3 s there).
    let initialRebalanceDelay: Duration

    let logger: Logger

    init(initialRebalanceDelay: Duration = .milliseconds(500), logger: Logger = Logger(label: "postduif.groups")) {
        self.initialRebalanceDelay = initialRebalanceDelay
        self.logger = logger
    }

    // MARK: JoinGroup

    func join(_ request: JoinGroupRequest, clientID: String, clientHost: String) async -> JoinGroupResponse {
        logger.debug("join request", metadata: ["group": "\(request.groupID)", "member": "\(request.memberID)", "state": "\(groups[request.groupID]?.state.rawValue ?? "none")"])
        func failure(_ code: ErrorCode) -> JoinGroupResponse {
            JoinGroupResponse(errorCode: code.rawValue, memberID: request.memberID)
        }
        guard !request.groupID.isEmpty else { return failure(.invalidGroupId) }
        let session = Duration.milliseconds(Int64(request.sessionTimeoutMilliseconds))
        guard Self.sessionTimeoutRange.contains(session) else { return failure(.invalidSessionTimeout) }
        guard !request.protocols.isEmpty else { return failure(.inconsistentGroupProtocol) }
        var group = groups[request.groupID] ?? Group(id: request.groupID)
        if !group.members.isEmpty {
            guard group.protocolType == request.protocolType else { return failure(.inconsistentGroupProtocol) }
            let offered = Set(request.protocols.map(\.name))
            let shared = group.members.values.reduce(offered) { $0.intersection($1.protocols.map(\.name)) }
            guard !shared.isEmpty else { return failure(.inconsistentGroupProtocol) }
        }
        let memberID: String
        if request.memberID.isEmpty {
            memberID = "\(clientID.isEmpty ? "member" : clientID)-\(UUID().uuidString.lowercased())"
        } else {
            guard group.members[request.memberID] != nil else { return failure(.unknownMemberId) }
            memberID = request.memberID
        }
        let now = clock.now
        var member = group.members[memberID] ?? Member(
            id: memberID, clientID: clientID, clientHost: clientHost, sessionTimeout: session,
            rebalanceTimeout: .zero, protocols: [], lastHeard: now)
        member.sessionTimeout = session
        member.rebalanceTimeout = .milliseconds(Int64(max(request.rebalanceTimeoutMilliseconds, request.sessionTimeoutMilliseconds)))
        member.protocols = request.protocols
        member.lastHeard = now
        member.hasJoined = true
        if group.members[memberID] == nil { group.order.append(memberID) }
        group.members[memberID] = member
        group.protocolType = request.protocolType
        if group.state != .preparingRebalance {
            let wasEmpty = group.state == .empty
            prepareRebalance(&group, now: now, delay: wasEmpty ? initialRebalanceDelay : nil)
            group.members[memberID]?.hasJoined = true
        }
        groups[request.groupID] = group
        logger.debug("member joins", metadata: ["group": "\(request.groupID)", "member": "\(memberID)", "state": "\(group.state.rawValue)", "members": "\(group.members.count)"])
        return await withCheckedContinuation { continuation in
            // Re-checked after suspending: the group may have changed between
            // the update above and this registration (actor reentrancy).
            guard groups[request.groupID]?.members[memberID] != nil else {
                continuation.resume(returning: failure(.unknownMemberId))
                return
            }
            groups[request.groupID]!.members[memberID]!.joinWaiter?.resume(returning: failure(.unknownMemberId))
            groups[request.groupID]!.members[memberID]!.joinWaiter = continuation
            completeJoinIfReady(groupID: request.groupID, now: clock.now)
        }
    }

    /// Starts a rebalance: every member must join again before the deadline.
    private func prepareRebalance(_ group: inout Group, now: ContinuousClock.Instant, delay: Duration?) {
        group.state = .preparingRebalance
        let timeout = delay ?? group.members.values.map(\.rebalanceTimeout).max() ?? .seconds(30)
        group.rebalanceDeadline = now + timeout
        for id in group.members.keys {
            group.members[id]!.hasJoined = false
            // A member waiting for its assignment learns of the new round.
            if let waiter = group.members[id]!.syncWaiter {
                group.members[id]!.syncWaiter = nil
                waiter.resume(returning: SyncGroupResponse(errorCode: ErrorCode.rebalanceInProgress.rawValue, assignment: []))
            }
        }
    }

    /// Completes the join round when every member has rejoined (and an
    /// initial delay, if any, has passed) or when the deadline has passed.
    private func completeJoinIfReady(groupID: String, now: ContinuousClock.Instant) {
        guard var group = groups[groupID], group.state == .preparingRebalance else { return }
        let everyoneJoined = group.members.values.allSatisfy { $0.hasJoined && $0.joinWaiter != nil }
        let deadlinePassed = group.rebalanceDeadline.map { now >= $0 } ?? true
        let initialDelayPassed = group.generation > 0 || deadlinePassed
        guard (everyoneJoined && initialDelayPassed) || deadlinePassed else { return }
        // Members that did not rejoin in time leave the group.
        for (id, member) in group.members where !(member.hasJoined && member.joinWaiter != nil) {
            group.members[id] = nil
            member.joinWaiter?.resume(returning: JoinGroupResponse(errorCode: ErrorCode.unknownMemberId.rawValue, memberID: id))
        }
        group.order.removeAll { group.members[$0] == nil }
        guard !group.order.isEmpty else {
            group.state = .empty
            group.rebalanceDeadline = nil
            groups[groupID] = group
            return
        }
        group.generation += 1
        group.protocolName = Self.selectProtocol(group)
        logger.debug("generation complete", metadata: ["group": "\(groupID)", "generation": "\(group.generation)", "members": "\(group.order.count)", "protocol": "\(group.protocolName)"])
        if group.members[group.leader] == nil { group.leader = group.order[0] }
        group.state = .completingRebalance
        group.rebalanceDeadline = nil
        let members = group.order.map { id in
            JoinGroupResponse.Member(memberID: id, metadata: group.members[id]!.protocols.first { $0.name == group.protocolName }?.metadata ?? [])
        }
        for id in group.order {
            let waiter = group.members[id]!.joinWaiter
            group.members[id]!.joinWaiter = nil
            group.members[id]!.lastHeard = now
            waiter?.resume(returning: JoinGroupResponse(
                errorCode: 0, generationID: group.generation, protocolName: group.protocolName, leader: group.leader,
                memberID: id, members: id == group.leader ? members : []))
        }
        groups[groupID] = group
    }

    /// Kafka's vote: each member votes for the first of its protocols that
    /// every member supports; the most votes win (ties by first member's order).
    static func selectProtocol(_ group: Group) -> String {
        let candidates = group.members.values.reduce(Set(group.members[group.order[0]]!.protocols.map(\.name))) {
            $0.intersection($1.protocols.map(\.name))
        }
        var votes: [String: Int] = [:]
        for id in group.order {
            if let choice = group.members[id]!.protocols.first(where: { candidates.contains($0.name) })?.name {
                votes[choice, default: 0] += 1
            }
        }
        let order = group.members[group.order[0]]!.protocols.map(\.name)
        return order.filter { candidates.contains($0) }.max { (votes[$0] ?? 0) < (votes[$1] ?? 0) } ?? order[0]
    }

    // MARK: SyncGroup

    func sync(_ request: SyncGroupRequest) async -> SyncGroupResponse {
        logger.debug("member syncs", metadata: ["group": "\(request.groupID)", "member": "\(request.memberID)", "generation": "\(request.generationID)", "state": "\(groups[request.groupID]?.state.rawValue ?? "none")"])
        func failure(_ code: ErrorCode) -> SyncGroupResponse { SyncGroupResponse(errorCode: code.rawValue, assignment: []) }
        guard var group = groups[request.groupID], group.members[request.memberID] != nil else { return failure(.unknownMemberId) }
        guard request.generationID == group.generation else { return failure(.illegalGeneration) }
        group.members[request.memberID]!.lastHeard = clock.now
        switch group.state {
        case .empty, .preparingRebalance:
            groups[request.groupID] = group
            return failure(.rebalanceInProgress)
        case .stable:
            groups[request.groupID] = group
            return SyncGroupResponse(errorCode: 0, assignment: group.members[request.memberID]!.assignment)
        case .completingRebalance:
            if request.memberID == group.leader {
                for id in group.order {
                    group.members[id]!.assignment = request.assignments[id] ?? []
                }
                group.state = .stable
                for id in group.order where id != request.memberID {
                    if let waiter = group.members[id]!.syncWaiter {
                        group.members[id]!.syncWaiter = nil
                        waiter.resume(returning: SyncGroupResponse(errorCode: 0, assignment: group.members[id]!.assignment))
                    }
                }
                groups[request.groupID] = group
                return SyncGroupResponse(errorCode: 0, assignment: group.members[request.memberID]!.assignment)
            }
            groups[request.groupID] = group
            return await withCheckedContinuation { continuation in
                // Re-checked after suspending: the leader may have synced, or a
                // new rebalance begun, in between.
                guard let current = groups[request.groupID], let member = current.members[request.memberID], current.generation == request.generationID else {
                    continuation.resume(returning: failure(.rebalanceInProgress))
                    return
                }
                if current.state == .stable {
                    continuation.resume(returning: SyncGroupResponse(errorCode: 0, assignment: member.assignment))
                } else if current.state != .completingRebalance {
                    continuation.resume(returning: failure(.rebalanceInProgress))
                } else {
                    member.syncWaiter?.resume(returning: failure(.rebalanceInProgress))
                    groups[request.groupID]!.members[request.memberID]!.syncWaiter = continuation
                }
            }
        }
    }

    // MARK: Heartbeat, LeaveGroup

    func heartbeat(_ request: HeartbeatRequest) -> ErrorCode {
        logger.trace("heartbeat", metadata: ["group": "\(request.groupID)", "member": "\(request.memberID)", "generation": "\(request.generationID)", "state": "\(groups[request.groupID]?.state.rawValue ?? "none")"])
        guard var group = groups[request.groupID], group.members[request.memberID] != nil else { return .unknownMemberId }
        guard request.generationID == group.generation else { return .illegalGeneration }
        group.members[request.memberID]!.lastHeard = clock.now
        groups[request.groupID] = group
        return group.state == .preparingRebalance ? .rebalanceInProgress : .none
    }

    func leave(_ request: LeaveGroupRequest) -> ErrorCode {
        guard var group = groups[request.groupID], let member = group.members[request.memberID] else { return .unknownMemberId }
        remove(member, from: &group, now: clock.now)
        groups[request.groupID] = group
        completeJoinIfReady(groupID: request.groupID, now: clock.now)
        return .none
    }

    private func remove(_ member: Member, from group: inout Group, now: ContinuousClock.Instant) {
        logger.debug("member leaves", metadata: ["group": "\(group.id)", "member": "\(member.id)"])
        group.members[member.id] = nil
        group.order.removeAll { $0 == member.id }
        member.joinWaiter?.resume(returning: JoinGroupResponse(errorCode: ErrorCode.unknownMemberId.rawValue, memberID: member.id))
        member.syncWaiter?.resume(returning: SyncGroupResponse(errorCode: ErrorCode.unknownMemberId.rawValue, assignment: []))
        if group.members.isEmpty {
            group.state = .empty
            group.rebalanceDeadline = nil
        } else if group.state != .preparingRebalance {
            prepareRebalance(&group, now: now, delay: nil)
        }
    }

    // MARK: Timers

    /// Expires members whose session ran out and completes join rounds whose
    /// deadline passed. Called a few times a second.
    func tick() {
        let now = clock.now
        for groupID in Array(groups.keys) {
            guard var group = groups[groupID] else { continue }
            for member in group.members.values where member.joinWaiter == nil && member.syncWaiter == nil && now - member.lastHeard > member.sessionTimeout {
                remove(member, from: &group, now: now)
            }
            groups[groupID] = group
            completeJoinIfReady(groupID: groupID, now: now)
        }
    }

    // MARK: Offsets and descriptions

    /// Whether a commit with this generation and member may be stored
    /// (`ClassicGroup.validateOffsetCommit`).
    func validateCommit(groupID: String, generation: Int32, memberID: String) -> ErrorCode {
        guard let group = groups[groupID], !group.members.isEmpty else {
            // A group the coordinator does not manage: simple commits only.
            return generation < 0 ? .none : .illegalGeneration
        }
        if generation < 0 && memberID.isEmpty { return .illegalGeneration }
        guard group.members[memberID] != nil else { return .unknownMemberId }
        guard generation == group.generation else { return .illegalGeneration }
        // As Kafka's ClassicGroup: no commits between JoinGroup and SyncGroup.
        return group.state == .completingRebalance ? .rebalanceInProgress : .none
    }

    func describe(_ groupIDs: [String]) -> [DescribeGroupsResponse.Group] {
        groupIDs.map { id in
            guard let group = groups[id] else {
                return .init(errorCode: 0, groupID: id, state: "Dead", protocolType: "", protocolName: "", members: [])
            }
            let members = group.order.map { memberID -> DescribeGroupsResponse.Member in
                let member = group.members[memberID]!
                return .init(
                    memberID: memberID, clientID: member.clientID, clientHost: member.clientHost,
                    metadata: member.protocols.first { $0.name == group.protocolName }?.metadata ?? [],
                    assignment: group.state == .stable ? member.assignment : [])
            }
            return .init(errorCode: 0, groupID: id, state: group.state.rawValue, protocolType: group.protocolType, protocolName: group.state == .stable ? group.protocolName : "", members: members)
        }
    }

    func list() -> [(groupID: String, protocolType: String)] {
        groups.values.sorted { $0.id < $1.id }.map { ($0.id, $0.protocolType) }
    }
}
