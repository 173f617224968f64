import Testing

@testable import Cluster

@Suite struct ControllerTests {
    let p0 = PartitionID(topic: "chat", index: 0)
    let p1 = PartitionID(topic: "chat", index: 1)

    /// Three live brokers and a topic of two partitions, replicas [1,2,3] and [2,3,1].
    func cluster(unclean: Bool = false) throws -> Controller {
        var controller = Controller(uncleanElection: unclean)
        for broker: Int32 in [1, 2, 3] { #expect(controller.handle(.brokerRegistered(broker)).isEmpty) }
        let assignment = try controller.assign(topic: "chat", partitionCount: 2, replicationFactor: 3)
        #expect(assignment.replicas == [[1, 2, 3], [2, 3, 1]])
        _ = controller.handle(.topicObserved(assignment))
        for action in controller.initialStates(for: assignment) {
            guard case .writePartition(let id, nil, let state) = action else {
                Issue.record("a new partition's record must be created, not swapped: \(action)")
                continue
            }
            _ = controller.handle(.partitionObserved(id, state))
        }
        return controller
    }

    @Test func assignmentSpreadsLeadersAndNeedsEnoughBrokers() throws {
        var controller = Controller()
        for broker: Int32 in [3, 1, 2] { _ = controller.handle(.brokerRegistered(broker)) }
        let assignment = try controller.assign(topic: "t", partitionCount: 4, replicationFactor: 2)
        #expect(assignment.replicas == [[1, 2], [2, 3], [3, 1], [1, 2]])
        #expect(throws: ControllerError.notEnoughBrokers(needed: 4, alive: 3)) { try controller.assign(topic: "t", partitionCount: 1, replicationFactor: 4) }
        #expect(throws: ControllerError.invalidReplicationFactor(0)) { try controller.assign(topic: "t", partitionCount: 1, replicationFactor: 0) }
        let initial = controller.initialStates(for: assignment)
        #expect(initial.first == .writePartition(PartitionID(topic: "t", index: 0), previous: nil, next: PartitionState(leader: 1, leaderEpoch: 0, isr: [1, 2])))
    }

    @Test func aDeadLeaderIsReplacedByTheNextInSyncReplicaWithANewEpoch() throws {
        var controller = try cluster()
        let actions = controller.handle(.brokerExpired(1))
        let before0 = PartitionState(leader: 1, leaderEpoch: 0, isr: [1, 2, 3])
        let before1 = PartitionState(leader: 2, leaderEpoch: 0, isr: [2, 3, 1])
        #expect(actions == [
            .writePartition(p0, previous: before0, next: PartitionState(leader: 2, leaderEpoch: 1, isr: [2, 3], version: 1)),
            // Not its leader: only leaves the ISR, the leader epoch stays.
            .writePartition(p1, previous: before1, next: PartitionState(leader: 2, leaderEpoch: 0, isr: [2, 3], version: 1)),
        ])
    }

    @Test func withNoLiveInSyncReplicaThePartitionGoesOfflineUntilOneReturns() throws {
        var controller = try cluster()
        // Broker 3 fell out of the ISR earlier (it lagged).
        _ = controller.handle(.partitionObserved(p0, PartitionState(leader: 1, leaderEpoch: 0, isr: [1, 2], version: 1)))
        for action in controller.handle(.brokerExpired(2)) { controller.applied(action) }
        #expect(controller.partitions[p0] == PartitionState(leader: 1, leaderEpoch: 0, isr: [1], version: 2))
        // The last in-sync replica dies: 3 is alive but not in sync, and unclean election is off.
        let actions = controller.handle(.brokerExpired(1))
        #expect(actions.contains(.writePartition(p0, previous: PartitionState(leader: 1, leaderEpoch: 0, isr: [1], version: 2),
                                                 next: PartitionState(leader: -1, leaderEpoch: 1, isr: [1], version: 3))))
        for action in actions { controller.applied(action) }
        // Broker 1, the last in-sync replica, comes back: it leads again, with a new epoch.
        let back = controller.handle(.brokerRegistered(1))
        #expect(back.contains(.writePartition(p0, previous: PartitionState(leader: -1, leaderEpoch: 1, isr: [1], version: 3),
                                              next: PartitionState(leader: 1, leaderEpoch: 2, isr: [1], version: 4))))
    }

    @Test func aLeaderlessRecordSeenAfterItsInSyncReplicaReturnedIsTakenBack() throws {
        // Fault campaign seed 130 round 10: broker 3, the partition's last
        // in-sync replica and leader, stopped and registered again before
        // the controller saw the record that took its leadership away;
        // the registration found the partition led, the record then had
        // nobody to elect, and the partition stayed offline.
        var controller = try cluster()
        let led = PartitionState(leader: 3, leaderEpoch: 1, isr: [3], version: 2)
        _ = controller.handle(.partitionObserved(p1, led))
        _ = controller.handle(.brokerExpired(3))
        #expect(controller.handle(.brokerRegistered(3)).isEmpty)
        let offline = PartitionState(leader: -1, leaderEpoch: 2, isr: [3], version: 3)
        #expect(controller.handle(.partitionObserved(p1, offline)) == [
            .writePartition(p1, previous: offline, next: PartitionState(leader: 3, leaderEpoch: 3, isr: [3], version: 4)),
        ])
        // With no in-sync replica alive it stays offline, unwritten.
        _ = controller.handle(.brokerExpired(3))
        #expect(controller.handle(.partitionObserved(p1, offline)).isEmpty)
    }

    @Test func uncleanElectionPicksAnyLiveReplicaWhenAsked() throws {
        var controller = try cluster(unclean: true)
        _ = controller.handle(.partitionObserved(p0, PartitionState(leader: 1, leaderEpoch: 0, isr: [1], version: 1)))
        let actions = controller.handle(.brokerExpired(1))
        #expect(actions.contains(.writePartition(p0, previous: PartitionState(leader: 1, leaderEpoch: 0, isr: [1], version: 1),
                                                 next: PartitionState(leader: 2, leaderEpoch: 1, isr: [2], version: 2))))
    }

    @Test func aRecordNamingADeadLeaderIsFixedWhenSeen() throws {
        var controller = Controller()
        _ = controller.handle(.brokerRegistered(2))
        _ = controller.handle(.brokerRegistered(3))
        let stale = PartitionState(leader: 1, leaderEpoch: 4, isr: [1, 2, 3], version: 9)
        let actions = controller.handle(.partitionObserved(p0, stale))
        #expect(actions == [.writePartition(p0, previous: stale, next: PartitionState(leader: 2, leaderEpoch: 5, isr: [2, 3], version: 10))])
    }

    @Test func deadFollowersLeaveTheISRWhenTheRecordIsSeen() throws {
        var controller = Controller()
        _ = controller.handle(.brokerRegistered(1))
        let stale = PartitionState(leader: 1, leaderEpoch: 2, isr: [1, 2, 3], version: 5)
        #expect(controller.handle(.partitionObserved(p0, stale)) == [.writePartition(p0, previous: stale, next: PartitionState(leader: 1, leaderEpoch: 2, isr: [1], version: 6))])
    }

    @Test func aLiveLeaderIsLeftAlone() throws {
        var controller = try cluster()
        #expect(controller.handle(.brokerRegistered(4)).isEmpty)
        #expect(controller.handle(.brokerExpired(4)).isEmpty)
    }
}
