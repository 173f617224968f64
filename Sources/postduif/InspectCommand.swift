import ArgumentParser
import Broker
import Cluster
import Coordination
import Foundation
import Gateway
import LogStore
import Logging
import Metrics
import Operations
import Prometheus
import ServiceLifecycle

/// `postduif inspect --data DIR`: what an operator checks first, and the
/// damage report after a disk problem.
struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List topics and partitions with offsets, sizes and conversation counts, and verify every stored batch.",
        discussion: """
            Opens the data directory (the broker must not be running: RocksDB \
            allows one process at a time), prints one line per partition, then \
            checks every stored batch's CRC-32C and layout, that offsets have no \
            holes, and that the conversation index points at the right records. \
            Exits 1 when it finds damage, listing each problem with its topic, \
            partition and offset.
            """
    )

    @Option(name: .long, help: "The broker's data directory.")
    var data: String = "./data"

    @Flag(name: .long, help: "Skip the conversation index check (faster on large stores).")
    var skipIndex = false

    func run() async throws {
        guard FileManager.default.fileExists(atPath: data + "/CURRENT") else {
            throw OperatorError("\(data) holds no Postduif data (no RocksDB CURRENT file)")
        }
        let store: LogStore
        do {
            store = try LogStore(path: data, options: LogStoreOptions(durability: .fsync))
        } catch {
            throw OperatorError("cannot open \(data): \(error)")
        }
        defer { store.close() }
        let (table, partitions, damage) = try Self.report(store, checkIndex: !skipIndex)
        print(table)
        let topics = store.topicDescriptors
        print("\(topics.count) topics, \(partitions) partitions in \(data)")
        if damage.isEmpty {
            print("verified: every batch's CRC-32C and layout, offsets without holes\(skipIndex ? "" : ", conversation index agrees with the log")")
        } else {
            print("DAMAGE: \(damage.count) problems")
            for problem in damage { print("  \(problem)") }
            throw ExitCode(1)
        }
    }

    /// One line per partition (offsets, sizes, conversations, epoch,
    /// producers) and every problem `verify` finds: what `inspect` prints,
    /// and what `restore` checks a restored copy with.
    static func report(_ store: LogStore, checkIndex: Bool) throws -> (table: String, partitions: Int, damage: [Damage]) {
        let header = ["topic", "partition", "start", "end", "hw", "batches", "bytes", "conversations", "epoch", "producers"]
        var rows: [[String]] = []
        var damage: [Damage] = []
        for partition in store.allPartitions {
            let summary = partition.summary
            let conversations = partition.configuration.conversationIndex ? String(try partition.conversationCount()) : "-"
            rows.append([
                summary.topic, String(summary.partition), String(summary.logStartOffset), String(summary.logEndOffset),
                String(summary.highWatermark), String(summary.batchCount), String(summary.sizeBytes), conversations,
                summary.leaderEpoch.map(String.init) ?? "-", String(summary.producerCount),
            ])
            damage += try partition.verify(checkIndex: checkIndex)
        }
        return (table(header: header, rows: rows), rows.count, damage)
    }

    static func table(header: [String], rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { column, cell in
                column == 0 ? cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[column] - cell.count) + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
