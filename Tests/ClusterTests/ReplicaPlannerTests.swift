import Testing

@testable import Cluster

@Suite struct ReplicaPlannerTests {
    func id(_ index: Int32) -> PartitionID { PartitionID(topic: "t", index: index) }

    @Test func drainMovesEveryReplicaOffToTheLeastLoaded() {
        // Broker 4 joined empty; broker 1 leaves.
        let planner = ReplicaPlanner(replicas: [id(0): [1, 2, 3], id(1): [2, 3, 1], id(2): [3, 1, 2]], brokers: [1, 2, 3, 4])
        let plan = planner.drain(1)
        #expect(plan.count == 3)
        #expect(plan.values.allSatisfy { !$0.contains(1) && Set($0).count == 3 })
        // The first replacement goes to broker 4 (empty), in broker 1's place.
        #expect(plan[id(0)] == [4, 2, 3])
    }

    @Test func drainPrefersARackThePartitionDoesNotUse() {
        let planner = ReplicaPlanner(replicas: [id(0): [1, 2]], brokers: [1, 2, 3, 4], racks: [1: "a", 2: "b", 3: "b", 4: "a"])
        #expect(planner.drain(1) == [id(0): [4, 2]])
    }

    @Test func rebalanceEvensReplicasThenLeaders() {
        // Made on three brokers; 4 and 5 joined later.
        var replicas: [PartitionID: [Int32]] = [:]
        for index: Int32 in 0..<10 {
            replicas[id(index)] = [index % 3 + 1, (index + 1) % 3 + 1, (index + 2) % 3 + 1]
        }
        let planner = ReplicaPlanner(replicas: replicas, brokers: [1, 2, 3, 4, 5])
        let plan = planner.rebalance()
        var after = planner
        for (id, target) in plan { after.replicas[id] = target }
        let load = after.load.values
        #expect(load.max()! - load.min()! <= 1)
        let leaders = after.leaders.values
        #expect(leaders.max()! - leaders.min()! <= 1)
        #expect(after.replicas.values.allSatisfy { Set($0).count == 3 })
        // Balanced already: nothing to do.
        #expect(after.rebalance().isEmpty)
    }

    @Test func newTopicsAlternateRacks() throws {
        var controller = Controller()
        for broker: Int32 in [1, 2, 3, 4] { _ = controller.handle(.brokerRegistered(broker)) }
        controller.racks = [1: "a", 2: "a", 3: "b", 4: "b"]
        let assignment = try controller.assign(topic: "t", partitionCount: 4, replicationFactor: 2)
        for replicas in assignment.replicas {
            #expect(Set(replicas.map { controller.racks[$0]! }).count == 2, "\(replicas) share a rack")
        }
    }
}
