import Foundation
import Testing

@testable import Cluster

/// Moves, controlled shutdown and elections in the controller's state
/// machine: the rules alone, without etcd.
@Suite struct ReassignmentTests {
    let p0 = PartitionID(topic: "chat", index: 0)

    /// Four live brokers; "chat" has one partition on [1,2,3], led by 1.
    func cluster() throws -> Controller {
        var controller = Controller()
        for broker: Int32 in [1, 2, 3, 4] { _ = controller.handle(.brokerRegistered(broker)) }
        let assignment = TopicAssignment(name: "chat", replicas: [[1, 2, 3]])
        _ = controller.handle(.topicObserved(assignment))
        _ = controller.handle(.partitionObserved(p0, PartitionState(leader: 1, leaderEpoch: 0, isr: [1, 2, 3])))
        return controller
    }

    /// Applies what the controller decides, as the driver does after its writes.
    func apply(_ actions: [Controller.Action], to controller: inout Controller) {
        for action in actions { controller.applied(action) }
    }

    @Test func aMoveAddsFirstAndEndsOnceTheTargetIsInSync() throws {
        var controller = try cluster()
        let moving = try controller.reassign(p0, to: [4, 2, 3])
        #expect(moving.move(of: 0) == PartitionMove(partition: 0, original: [1, 2, 3], target: [4, 2, 3]))
        #expect(moving.replicas == [[4, 2, 3, 1]])
        #expect(moving.move(of: 0)?.adding == [4] && moving.move(of: 0)?.removing == [1])
        // Broker 4 is not in sync yet: nothing ends.
        #expect(controller.handle(.topicObserved(moving)).isEmpty)
        // It joins the ISR (the leader's write): the leader leaves for the
        // target's first in-sync replica, then the topic drops the move.
        let joined = PartitionState(leader: 1, leaderEpoch: 0, isr: [1, 2, 3, 4], version: 1)
        let actions = controller.handle(.partitionObserved(p0, joined))
        #expect(actions == [
            .writePartition(p0, previous: joined, next: PartitionState(leader: 4, leaderEpoch: 1, isr: [2, 3, 4], version: 2)),
            .writeTopic(TopicAssignment(name: "chat", replicas: [[4, 2, 3]])),
        ])
        apply(actions, to: &controller)
        #expect(controller.assignments["chat"]?.moves == [])
        #expect(controller.replicas(of: p0) == [4, 2, 3])
    }

    @Test func aMoveKeepingTheLeaderOnlyShrinksTheISR() throws {
        var controller = try cluster()
        let moving = try controller.reassign(p0, to: [1, 2])
        // The target is already in sync: the move ends at once.
        let actions = controller.handle(.topicObserved(moving))
        #expect(actions == [
            .writePartition(p0, previous: PartitionState(leader: 1, leaderEpoch: 0, isr: [1, 2, 3]), next: PartitionState(leader: 1, leaderEpoch: 0, isr: [1, 2], version: 1)),
            .writeTopic(TopicAssignment(name: "chat", replicas: [[1, 2]])),
        ])
    }

    @Test func aCancelledMoveReturnsToTheOriginalReplicas() throws {
        var controller = try cluster()
        _ = controller.handle(.topicObserved(try controller.reassign(p0, to: [4, 2, 3])))
        let cancelled = try controller.reassign(p0, to: nil)
        #expect(cancelled == TopicAssignment(name: "chat", replicas: [[1, 2, 3]]))
        #expect(controller.handle(.topicObserved(cancelled)).isEmpty)
        #expect(throws: ControllerError.noReassignmentInProgress(p0)) { try controller.reassign(p0, to: nil) }
    }

    @Test func aCancelAfterTheLeaderMovedToAnAddedReplicaHandsBack() throws {
        var controller = try cluster()
        _ = controller.handle(.topicObserved(try controller.reassign(p0, to: [4, 2, 3])))
        // Broker 4 was elected (by ElectLeaders) while the move was under way.
        _ = controller.handle(.partitionObserved(p0, PartitionState(leader: 4, leaderEpoch: 1, isr: [1, 2, 4], version: 3)))
        let cancelled = try controller.reassign(p0, to: nil)
        let actions = controller.handle(.topicObserved(cancelled))
        #expect(actions == [.writePartition(p0, previous: PartitionState(leader: 4, leaderEpoch: 1, isr: [1, 2, 4], version: 3),
                                            next: PartitionState(leader: 1, leaderEpoch: 2, isr: [1, 2], version: 4))])
    }

    @Test func aTargetNamingAnUnknownOrRepeatedBrokerIsRefused() throws {
        let controller = try cluster()
        #expect(throws: ControllerError.invalidReplicaAssignment("broker 9 is not registered in the cluster")) { try controller.reassign(p0, to: [1, 9]) }
        #expect(throws: ControllerError.invalidReplicaAssignment("the target replicas of chat/0 name a broker twice")) { try controller.reassign(p0, to: [2, 2]) }
        #expect(throws: ControllerError.invalidReplicaAssignment("the target replicas of chat/0 are empty")) { try controller.reassign(p0, to: []) }
        #expect(throws: ControllerError.unknownPartition(PartitionID(topic: "chat", index: 5))) { try controller.reassign(PartitionID(topic: "chat", index: 5), to: [1]) }
    }

    @Test func aBrokerShuttingDownHandsItsLeadershipsToInSyncFollowers() throws {
        var controller = try cluster()
        let actions = controller.handle(.brokerShuttingDown(1))
        #expect(actions == [.writePartition(p0, previous: PartitionState(leader: 1, leaderEpoch: 0, isr: [1, 2, 3]),
                                            next: PartitionState(leader: 2, leaderEpoch: 1, isr: [1, 2, 3], version: 1))])
        apply(actions, to: &controller)
        // It is not elected again while it stops, not even as preferred leader.
        #expect(controller.preferredLeaderElections().isEmpty)
        #expect(controller.electLeader(p0, type: .preferred) == .failure(.preferredLeaderNotAvailable))
        // Back (its announcement ended with its lease, it registered again): preferred again.
        apply(controller.handle(.brokerExpired(1)), to: &controller)
        _ = controller.handle(.brokerRegistered(1))
        _ = controller.handle(.partitionObserved(p0, PartitionState(leader: 2, leaderEpoch: 1, isr: [1, 2, 3], version: 3)))
        #expect(controller.preferredLeaderElections() == [
            .writePartition(p0, previous: PartitionState(leader: 2, leaderEpoch: 1, isr: [1, 2, 3], version: 3),
                            next: PartitionState(leader: 1, leaderEpoch: 2, isr: [1, 2, 3], version: 4)),
        ])
    }

    @Test func aShuttingDownLeaderAloneInSyncKeepsItsPartition() throws {
        var controller = try cluster()
        _ = controller.handle(.partitionObserved(p0, PartitionState(leader: 1, leaderEpoch: 0, isr: [1], version: 1)))
        #expect(controller.handle(.brokerShuttingDown(1)).isEmpty)
    }

    @Test func electionsAnswerAsKafkasDo() throws {
        var controller = try cluster()
        #expect(controller.electLeader(p0, type: .preferred) == .failure(.notNeeded))
        #expect(controller.electLeader(p0, type: .unclean) == .failure(.notNeeded))
        #expect(controller.electLeader(PartitionID(topic: "none", index: 0), type: .preferred) == .failure(.unknownPartition))
        // Offline, its last in-sync replica dead; 3 is alive but out of sync.
        _ = controller.handle(.partitionObserved(p0, PartitionState(leader: -1, leaderEpoch: 4, isr: [1], version: 9)))
        _ = controller.handle(.brokerExpired(1))
        #expect(controller.electLeader(p0, type: .preferred) == .failure(.preferredLeaderNotAvailable))
        #expect(controller.electLeader(p0, type: .unclean) == .success(.writePartition(
            p0, previous: PartitionState(leader: -1, leaderEpoch: 4, isr: [1], version: 9), next: PartitionState(leader: 2, leaderEpoch: 5, isr: [2], version: 10))))
    }

    @Test func assignmentsStoredBeforeMovesDecodeWithNone() throws {
        let stored = #"{"name":"chat","replicas":[[1,2]],"configs":{}}"#
        let decoded = try JSONDecoder().decode(TopicAssignment.self, from: Data(stored.utf8))
        #expect(decoded.moves.isEmpty)
    }
}
