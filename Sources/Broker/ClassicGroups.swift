import Core
import KafkaWire

/// Kafka's classic consumer-group protocol (`ClassicGroup`) as a pure state
/// machine: members join, one round of joins makes a generation, the
/// leader's SyncGroup hands every member its assignment, heartbeats keep
/// members alive, sessions and rounds end at their deadlines.
///
/// Events in (a request, or the clock reaching `nextDeadline`), actions out.
/// A JoinGroup or SyncGroup that must wait for its round is parked under a
/// token; its answer comes later as an action naming the token. Time is the
/// caller's `now`. `GroupCoordinator` is the actor shell that keeps the
/// parked requests' continuations and arms one timer for `nextDeadline`.
struct ClassicGroups {
    typealias Token = UInt64

    enum State: String {
        case empty = "Empty"
        case preparingRebalance = "PreparingRebalance"
        case completingRebalance = "CompletingRebalance"
        case stable = "Stable"
    }

    /// What a request gets: an answer now, or a wait under a token.
    enum Outcome<Response: Equatable>: Equatable {
        case answer(Response)
        case parked(Token)
    }

    /// An answer to a request parked earlier.
    enum Action: Equatable {
        case answerJoin(Token, JoinGroupResponse)
        case answerSync(Token, SyncGroupResponse)
    }

    struct Member {
        var id: String
        var clientID: String
        var clientHost: String
        var sessionTimeout: Duration
        var rebalanceTimeout: Duration
        var protocols: [(name: String, metadata: [UInt8])]
        var assignment: [UInt8] = []
        var lastHeard: Duration
        var hasJoined = false
        /// Its JoinGroup parked until the round completes.
        var joinToken: Token? = nil
        /// Its SyncGroup parked until the leader's arrives.
        var syncToken: Token? = nil

        var isWaiting: Bool { joinToken != nil || syncToken != nil }
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
        var rebalanceDeadline: Duration? = nil
    }

    /// Kafka's group.min/max.session.timeout.ms.
    static let sessionTimeoutRange = Duration.seconds(6)...Duration.seconds(1800)

    private(set) var groups: [String: Group] = [:]
    private var nextToken: Token = 0
    /// How long an empty group waits for more members before its first
    /// generation (Kafka's group.initial.rebalance.delay.ms, 3 s there).
    let initialRebalanceDelay: Duration

    init(initialRebalanceDelay: Duration) {
        self.initialRebalanceDelay = initialRebalanceDelay
    }

    // MARK: JoinGroup

    /// A JoinGroup. `newMemberID` names the member when the request asks
    /// for an id (the shell makes it: a random suffix is not this machine's
    /// business).
    mutating func join(_ request: JoinGroupRequest, clientID: String, clientHost: String, newMemberID: String,
                       now: Duration) -> (Outcome<JoinGroupResponse>, [Action]) {
        func failure(_ code: ErrorCode) -> (Outcome<JoinGroupResponse>, [Action]) {
            (.answer(JoinGroupResponse(errorCode: code.rawValue, memberID: request.memberID)), [])
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
            memberID = newMemberID
        } else {
            guard group.members[request.memberID] != nil else { return failure(.unknownMemberId) }
            memberID = request.memberID
        }
        var actions: [Action] = []
        var member = group.members[memberID] ?? Member(
            id: memberID, clientID: clientID, clientHost: clientHost, sessionTimeout: session,
            rebalanceTimeout: .zero, protocols: [], lastHeard: now)
        member.sessionTimeout = session
        member.rebalanceTimeout = .milliseconds(Int64(max(request.rebalanceTimeoutMilliseconds, request.sessionTimeoutMilliseconds)))
        member.protocols = request.protocols
        member.lastHeard = now
        member.hasJoined = true
        // A member joining again while its previous JoinGroup waits: that one ends.
        if let previous = member.joinToken {
            actions.append(.answerJoin(previous, JoinGroupResponse(errorCode: ErrorCode.unknownMemberId.rawValue, memberID: memberID)))
        }
        nextToken &+= 1
        let token = nextToken
        member.joinToken = token
        if group.members[memberID] == nil { group.order.append(memberID) }
        group.members[memberID] = member
        group.protocolType = request.protocolType
        if group.state != .preparingRebalance {
            let wasEmpty = group.state == .empty
            actions += prepareRebalance(&group, now: now, delay: wasEmpty ? initialRebalanceDelay : nil)
            group.members[memberID]?.hasJoined = true
        }
        actions += completeJoinIfReady(&group, now: now)
        groups[request.groupID] = group
        return (.parked(token), actions)
    }

    /// Starts a rebalance: every member must join again before the deadline.
    private func prepareRebalance(_ group: inout Group, now: Duration, delay: Duration?) -> [Action] {
        group.state = .preparingRebalance
        let timeout = delay ?? group.members.values.map(\.rebalanceTimeout).max() ?? .seconds(30)
        group.rebalanceDeadline = now + timeout
        var actions: [Action] = []
        for id in group.members.keys {
            group.members[id]!.hasJoined = false
            // A member waiting for its assignment learns of the new round.
            if let token = group.members[id]!.syncToken {
                group.members[id]!.syncToken = nil
                actions.append(.answerSync(token, SyncGroupResponse(errorCode: ErrorCode.rebalanceInProgress.rawValue, assignment: [])))
            }
        }
        return actions
    }

    /// Completes the join round when every member has rejoined (and an
    /// initial delay, if any, has passed) or when the deadline has passed.
    private func completeJoinIfReady(_ group: inout Group, now: Duration) -> [Action] {
        guard group.state == .preparingRebalance else { return [] }
        let everyoneJoined = group.members.values.allSatisfy { $0.hasJoined && $0.joinToken != nil }
        let deadlinePassed = group.rebalanceDeadline.map { now >= $0 } ?? true
        let initialDelayPassed = group.generation > 0 || deadlinePassed
        guard (everyoneJoined && initialDelayPassed) || deadlinePassed else { return [] }
        var actions: [Action] = []
        // Members that did not rejoin in time leave the group.
        for (id, member) in group.members where !(member.hasJoined && member.joinToken != nil) {
            group.members[id] = nil
            if let token = member.joinToken {
                actions.append(.answerJoin(token, JoinGroupResponse(errorCode: ErrorCode.unknownMemberId.rawValue, memberID: id)))
            }
        }
        group.order.removeAll { group.members[$0] == nil }
        guard !group.order.isEmpty else {
            group.state = .empty
            group.rebalanceDeadline = nil
            return actions
        }
        group.generation += 1
        group.protocolName = Self.selectProtocol(group)
        if group.members[group.leader] == nil { group.leader = group.order[0] }
        group.state = .completingRebalance
        group.rebalanceDeadline = nil
        let protocolName = group.protocolName
        let members = group.order.map { id in
            JoinGroupResponse.Member(memberID: id, metadata: group.members[id]!.protocols.first { $0.name == protocolName }?.metadata ?? [])
        }
        for id in group.order {
            let token = group.members[id]!.joinToken
            group.members[id]!.joinToken = nil
            group.members[id]!.lastHeard = now
            if let token {
                actions.append(.answerJoin(token, JoinGroupResponse(
                    errorCode: 0, generationID: group.generation, protocolName: group.protocolName, leader: group.leader,
                    memberID: id, members: id == group.leader ? members : [])))
            }
        }
        return actions
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

    mutating func sync(_ request: SyncGroupRequest, now: Duration) -> (Outcome<SyncGroupResponse>, [Action]) {
        func failure(_ code: ErrorCode) -> (Outcome<SyncGroupResponse>, [Action]) {
            (.answer(SyncGroupResponse(errorCode: code.rawValue, assignment: [])), [])
        }
        guard var group = groups[request.groupID], group.members[request.memberID] != nil else { return failure(.unknownMemberId) }
        guard request.generationID == group.generation else { return failure(.illegalGeneration) }
        group.members[request.memberID]!.lastHeard = now
        defer { groups[request.groupID] = group }
        switch group.state {
        case .empty, .preparingRebalance:
            return failure(.rebalanceInProgress)
        case .stable:
            return (.answer(SyncGroupResponse(errorCode: 0, assignment: group.members[request.memberID]!.assignment)), [])
        case .completingRebalance:
            if request.memberID == group.leader {
                for id in group.order {
                    group.members[id]!.assignment = request.assignments[id] ?? []
                }
                group.state = .stable
                var actions: [Action] = []
                for id in group.order {
                    if let token = group.members[id]!.syncToken {
                        group.members[id]!.syncToken = nil
                        actions.append(.answerSync(token, SyncGroupResponse(errorCode: 0, assignment: group.members[id]!.assignment)))
                    }
                }
                return (.answer(SyncGroupResponse(errorCode: 0, assignment: group.members[request.memberID]!.assignment)), actions)
            }
            var actions: [Action] = []
            // A member syncing again while its previous SyncGroup waits: that one ends.
            if let previous = group.members[request.memberID]!.syncToken {
                actions.append(.answerSync(previous, SyncGroupResponse(errorCode: ErrorCode.rebalanceInProgress.rawValue, assignment: [])))
            }
            nextToken &+= 1
            group.members[request.memberID]!.syncToken = nextToken
            return (.parked(nextToken), actions)
        }
    }

    // MARK: Heartbeat, LeaveGroup

    mutating func heartbeat(_ request: HeartbeatRequest, now: Duration) -> ErrorCode {
        guard var group = groups[request.groupID], group.members[request.memberID] != nil else { return .unknownMemberId }
        guard request.generationID == group.generation else { return .illegalGeneration }
        group.members[request.memberID]!.lastHeard = now
        groups[request.groupID] = group
        return group.state == .preparingRebalance ? .rebalanceInProgress : .none
    }

    mutating func leave(_ request: LeaveGroupRequest, now: Duration) -> (ErrorCode, [Action]) {
        guard var group = groups[request.groupID], let member = group.members[request.memberID] else { return (.unknownMemberId, []) }
        var actions = remove(member, from: &group, now: now)
        actions += completeJoinIfReady(&group, now: now)
        groups[request.groupID] = group
        return (.none, actions)
    }

    private func remove(_ member: Member, from group: inout Group, now: Duration) -> [Action] {
        group.members[member.id] = nil
        group.order.removeAll { $0 == member.id }
        var actions: [Action] = []
        if let token = member.joinToken {
            actions.append(.answerJoin(token, JoinGroupResponse(errorCode: ErrorCode.unknownMemberId.rawValue, memberID: member.id)))
        }
        if let token = member.syncToken {
            actions.append(.answerSync(token, SyncGroupResponse(errorCode: ErrorCode.unknownMemberId.rawValue, assignment: [])))
        }
        if group.members.isEmpty {
            group.state = .empty
            group.rebalanceDeadline = nil
        } else if group.state != .preparingRebalance {
            actions += prepareRebalance(&group, now: now, delay: nil)
        }
        return actions
    }

    // MARK: Deadlines

    /// The earliest moment something changes by itself: a session running
    /// out (of a member with no request parked) or a join round's deadline.
    var nextDeadline: Duration? {
        var earliest: Duration? = nil
        for group in groups.values {
            if group.state == .preparingRebalance, let deadline = group.rebalanceDeadline {
                earliest = min(earliest ?? deadline, deadline)
            }
            for member in group.members.values where !member.isWaiting {
                let expiry = member.lastHeard + member.sessionTimeout
                earliest = min(earliest ?? expiry, expiry)
            }
        }
        return earliest
    }

    /// The clock reached a deadline: members whose session ran out leave,
    /// and join rounds whose deadline passed complete.
    mutating func expire(now: Duration) -> [Action] {
        var actions: [Action] = []
        for groupID in Array(groups.keys) {
            guard var group = groups[groupID] else { continue }
            // A session ends at its deadline, the moment `nextDeadline` names.
            for member in group.members.values where !member.isWaiting && now - member.lastHeard >= member.sessionTimeout {
                actions += remove(member, from: &group, now: now)
            }
            actions += completeJoinIfReady(&group, now: now)
            groups[groupID] = group
        }
        return actions
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

    /// Forgets a group that has no members.
    mutating func forget(_ groupID: String) {
        guard groups[groupID]?.members.isEmpty ?? false else { return }
        groups[groupID] = nil
    }

    /// The topics a consumer group's members subscribe to, from their
    /// protocol metadata (Kafka's ConsumerProtocolSubscription: a version,
    /// then the topic names); empty for other protocol types.
    func subscribedTopics(_ groupID: String) -> Set<String> {
        guard let group = groups[groupID], group.protocolType == "consumer" else { return [] }
        var topics = Set<String>()
        for member in group.members.values {
            for (_, metadata) in member.protocols {
                var reader = ByteReader(metadata)
                guard (try? reader.readInt16()) != nil,
                      let names = try? reader.readArray(elementBytesMin: 2, "topics", { (reader: inout ByteReader) throws(WireError) -> String in try reader.readString() })
                else { continue }
                topics.formUnion(names)
            }
        }
        return topics
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
