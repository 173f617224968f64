import ArgumentParser
import Cluster
import Foundation
import KafkaWire
import PostduifClient

/// `postduif cluster status|rebalance|drain|reassign|elect-leaders`: an
/// operator's view and levers of a running cluster, through the Kafka API
/// (Metadata, ListPartitionReassignments, AlterPartitionReassignments,
/// ElectLeaders, by PostduifClient's `Admin`) like any admin client, so
/// they pass the same ACLs.
/// Plans print in the JSON of Kafka's kafka-reassign-partitions tool.
struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "See a cluster's brokers and partitions; rebalance, drain a broker, move partitions, elect leaders.",
        subcommands: [Status.self, Rebalance.self, Drain.self, Reassign.self, ElectLeaders.self]
    )

    /// What Metadata and ListPartitionReassignments say of the cluster.
    struct Picture {
        var metadata: MetadataResponse
        var moving: [PartitionID: ListPartitionReassignmentsResponse.Partition]

        static func read(_ admin: Admin) async throws -> Picture {
            let metadata = try await admin.client.metadata(nil)
            var moving: [PartitionID: ListPartitionReassignmentsResponse.Partition] = [:]
            for (place, move) in try await admin.partitionReassignments() { moving[PartitionID(topic: place.topic, index: place.partition)] = move }
            return Picture(metadata: metadata, moving: moving)
        }

        /// Every partition's replicas (the target's, for one being moved).
        var replicas: [PartitionID: [Int32]] {
            var replicas: [PartitionID: [Int32]] = [:]
            for topic in metadata.topics {
                for partition in topic.partitions {
                    let id = PartitionID(topic: topic.name, index: partition.index)
                    let move = moving[id]
                    replicas[id] = move.map { move in move.replicas.filter { !move.removing.contains($0) } } ?? partition.replicaNodes
                }
            }
            return replicas
        }

        /// Every partition's replicas as Metadata gives them (old and new, for one being moved).
        var currentReplicas: [PartitionID: [Int32]] {
            var replicas: [PartitionID: [Int32]] = [:]
            for topic in metadata.topics {
                for partition in topic.partitions { replicas[PartitionID(topic: topic.name, index: partition.index)] = partition.replicaNodes }
            }
            return replicas
        }

        var planner: ReplicaPlanner {
            ReplicaPlanner(replicas: replicas, brokers: metadata.brokers.map(\.nodeID),
                           racks: Dictionary(uniqueKeysWithValues: metadata.brokers.compactMap { broker in broker.rack.map { (broker.nodeID, $0) } }))
        }
    }

    /// A plan as Kafka's tool writes it: {"version":1,"partitions":[{"topic","partition","replicas"}]}.
    struct PlanFile: Codable {
        struct Entry: Codable {
            var topic: String
            var partition: Int32
            var replicas: [Int32]
        }

        var version = 1
        var partitions: [Entry]

        init(_ plan: [PartitionID: [Int32]]) {
            partitions = plan.keys.sorted().map { Entry(topic: $0.topic, partition: $0.index, replicas: plan[$0]!) }
        }

        var plan: [PartitionID: [Int32]] {
            Dictionary(partitions.map { (PartitionID(topic: $0.topic, index: $0.partition), $0.replicas) }, uniquingKeysWith: { _, last in last })
        }

        var json: String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
        }
    }

    /// --execute, --wait and --timeout, for the commands that make a plan.
    struct Execution: ParsableArguments {
        @Flag(help: "Apply the plan (AlterPartitionReassignments).") var execute = false
        @Flag(help: "With --execute: wait until every move finished.") var wait = false
        @Option(help: "With --wait: give up after this many seconds.") var timeout = 600
    }

    /// AlterPartitionReassignments with these targets (nil: cancel); each
    /// partition's outcome, in order.
    static func alter(_ targets: [PartitionID: [Int32]?], on admin: Admin) async throws -> [(PartitionID, Result<Void, ClientError>)] {
        var byPlace: [TopicPartition: [Int32]?] = [:]
        for (id, replicas) in targets { byPlace[TopicPartition(id.topic, id.index)] = replicas }
        return try await admin.alterPartitionReassignments(byPlace).map { (PartitionID(topic: $0.key.topic, index: $0.key.partition), $0.value) }.sorted { $0.0 < $1.0 }
    }

    /// Applies a plan (AlterPartitionReassignments); with `wait`, polls
    /// until every partition of it has its target replicas and is no longer
    /// being moved (what kafka-reassign-partitions --verify checks). Not
    /// being moved alone is not enough: a broker whose view has not yet
    /// seen the move would call it finished before it began.
    static func apply(_ plan: [PartitionID: [Int32]], on admin: Admin, wait: Bool, timeoutSeconds: Int) async throws {
        guard !plan.isEmpty else {
            print("nothing to move")
            return
        }
        var failed = 0
        for (id, outcome) in try await alter(plan.mapValues { Optional($0) }, on: admin) {
            if case .failure(let error) = outcome {
                print("\(id): refused: \(error)")
                failed += 1
            }
        }
        print("started \(plan.count - failed) moves")
        guard wait, failed < plan.count else {
            if failed > 0 { throw ExitCode(1) }
            return
        }
        let started = ContinuousClock.now
        while true {
            let picture = try await Picture.read(admin)
            let moving = plan.keys.filter { id in picture.moving[id] != nil || picture.currentReplicas[id].map { $0 != plan[id] } ?? true }
            if moving.isEmpty { break }
            guard ContinuousClock.now - started < .seconds(timeoutSeconds) else {
                throw OperatorError("\(moving.count) partitions still moving after \(timeoutSeconds) s: \(moving.sorted().map(\.description).joined(separator: ", "))")
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        print("done: every move finished in \((ContinuousClock.now - started).components.seconds) s")
        if failed > 0 { throw ExitCode(1) }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Brokers, racks, the controller, replicas and leaders per broker, under-replicated, offline and moving partitions.")
        @OptionGroup var connection: Acl.Connection

        func run() async throws {
            let picture = try await Acl.calling(connection) { try await Picture.read($0) }
            let metadata = picture.metadata
            var replicas: [Int32: Int] = [:]
            var leaders: [Int32: Int] = [:]
            var underReplicated: [String] = []
            var offline: [String] = []
            for topic in metadata.topics {
                for partition in topic.partitions {
                    for replica in partition.replicaNodes { replicas[replica, default: 0] += 1 }
                    if partition.leaderID >= 0 { leaders[partition.leaderID, default: 0] += 1 }
                    let name = "\(topic.name)/\(partition.index)"
                    if partition.leaderID < 0 {
                        offline.append(name)
                    } else if partition.isrNodes.count < partition.replicaNodes.count {
                        underReplicated.append("\(name) isr \(partition.isrNodes.sorted()) of \(partition.replicaNodes)")
                    }
                }
            }
            print("cluster \(metadata.clusterID ?? "?"), controller \(metadata.controllerID)")
            print("broker\taddress\track\treplicas\tleaders")
            for broker in metadata.brokers.sorted(by: { $0.nodeID < $1.nodeID }) {
                let mark = broker.nodeID == metadata.controllerID ? " (controller)" : ""
                print("\(broker.nodeID)\(mark)\t\(broker.host):\(broker.port)\t\(broker.rack ?? "-")\t\(replicas[broker.nodeID] ?? 0)\t\(leaders[broker.nodeID] ?? 0)")
            }
            let partitions = metadata.topics.reduce(0) { $0 + $1.partitions.count }
            print("\(metadata.topics.count) topics, \(partitions) partitions: \(underReplicated.count) under-replicated, \(offline.count) offline, \(picture.moving.count) moving")
            for line in underReplicated { print("under-replicated\t\(line)") }
            for line in offline { print("offline\t\(line)") }
            for (id, move) in picture.moving.sorted(by: { $0.key < $1.key }) {
                print("moving\t\(id) replicas \(move.replicas) adding \(move.adding) removing \(move.removing)")
            }
        }
    }

    struct Rebalance: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Spread replicas and preferred leaders evenly: prints the plan; --execute applies it.")
        @OptionGroup var connection: Acl.Connection
        @OptionGroup var execution: Execution

        func run() async throws {
            try await Acl.calling(connection) { admin in
                let picture = try await Picture.read(admin)
                guard picture.moving.isEmpty else { throw OperatorError("\(picture.moving.count) partitions are being moved; rebalance once they are done") }
                let plan = picture.planner.rebalance()
                print(PlanFile(plan).json)
                if execution.execute { try await ClusterCommand.apply(plan, on: admin, wait: execution.wait, timeoutSeconds: execution.timeout) }
            }
        }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move every replica off a broker (to decommission it): prints the plan; --execute applies it.")
        @Argument(help: "The broker's id.") var broker: Int32
        @OptionGroup var connection: Acl.Connection
        @OptionGroup var execution: Execution

        func run() async throws {
            try await Acl.calling(connection) { admin in
                let planner = try await Picture.read(admin).planner
                let plan = planner.drain(broker)
                let stuck = planner.replicas.filter { $0.value.contains(broker) && plan[$0.key] == nil }.keys.sorted()
                print(PlanFile(plan).json)
                if !stuck.isEmpty {
                    throw OperatorError("no broker can take \(stuck.map(\.description).joined(separator: ", ")): each already has every other broker")
                }
                if execution.execute { try await ClusterCommand.apply(plan, on: admin, wait: execution.wait, timeoutSeconds: execution.timeout) }
            }
        }
    }

    struct Reassign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply a plan file in kafka-reassign-partitions' JSON, or cancel its moves.")
        @Option(help: "The plan: {\"version\":1,\"partitions\":[{\"topic\":…,\"partition\":…,\"replicas\":[…]}]}.") var plan: String
        @OptionGroup var connection: Acl.Connection
        @Flag(help: "Cancel the plan's moves under way instead (their partitions return to their replicas before).") var cancel = false
        @Flag(help: "Wait until every move finished.") var wait = false
        @Option(help: "With --wait: give up after this many seconds.") var timeout = 600

        func run() async throws {
            let file: PlanFile
            do {
                file = try JSONDecoder().decode(PlanFile.self, from: Data(contentsOf: URL(fileURLWithPath: plan)))
            } catch {
                throw OperatorError("cannot read the plan \(plan): \(error)")
            }
            try await Acl.calling(connection) { admin in
                guard cancel else { return try await ClusterCommand.apply(file.plan, on: admin, wait: wait, timeoutSeconds: timeout) }
                for (id, outcome) in try await ClusterCommand.alter(file.plan.mapValues { _ -> [Int32]? in nil }, on: admin) {
                    switch outcome {
                    case .success: print("\(id): cancelled")
                    case .failure(let error): print("\(id): \(error)")
                    }
                }
            }
        }
    }

    struct ElectLeaders: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "elect-leaders",
            abstract: "Give leadership to preferred replicas in sync; --unclean elects any live replica of a partition without a leader (it may lose acknowledged records).")
        @OptionGroup var connection: Acl.Connection
        @Flag(help: "Unclean election, for offline partitions only: whatever the lost in-sync replicas had and the new leader lacks is gone.") var unclean = false
        @Option(help: "Only this topic's partitions.") var topic: String?
        @Option(help: "With --topic: only this partition.") var partition: Int32?

        func run() async throws {
            try await Acl.calling(connection) { admin in
                var chosen: [TopicPartition]? = nil
                if let topic {
                    if let partition {
                        chosen = [TopicPartition(topic, partition)]
                    } else {
                        chosen = try await Picture.read(admin).replicas.keys.filter { $0.topic == topic }.map { TopicPartition($0.topic, $0.index) }
                    }
                }
                var elected = 0
                for (place, outcome) in try await admin.electLeaders(unclean: unclean, chosen).sorted(by: { $0.key < $1.key }) {
                    switch outcome {
                    case .success:
                        elected += 1
                        print("\(place): elected")
                    case .failure(let error):
                        print("\(place): \(error)")
                    }
                }
                print("\(elected) leaders elected")
            }
        }
    }
}
