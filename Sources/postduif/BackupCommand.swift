import ArgumentParser
import Broker
import Foundation
import KafkaNIO
import KafkaWire
import LogStore
import PostduifClient

/// `postduif backup --to DIR`: a running broker copies its store to a new
/// folder on its own machine (a RocksDB checkpoint plus the segments, cut
/// at one position per partition) while it goes on taking writes.
struct Backup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Have a running broker copy its data to a new folder on its machine, without stopping writes.",
        discussion: """
            The folder must not exist and must be on the data directory's file \
            system (closed segments are hard-linked; each partition's active \
            segment and RocksDB's WAL are copied). The copy opens like a data \
            directory after a crash: `postduif restore` puts it in place and \
            verifies it, `postduif inspect --data DIR` reads it. With the \
            authorizer on, the principal needs Alter on the cluster.
            """
    )

    @OptionGroup var connection: Acl.Connection

    @Option(name: .long, help: "The folder to make, as the broker's machine sees it.")
    var to: String

    func run() async throws {
        // To this broker itself, not any broker of its cluster: the copy is
        // made on its machine.
        let link: KafkaClientConnection
        do {
            link = try await connection.admin().client.openConnection(connection.broker)
        } catch {
            throw OperatorError("cannot reach \(connection.broker): \(error)")
        }
        defer { Task { await link.close() } }
        let started = ContinuousClock.now
        var reader: ByteReader
        do {
            reader = try await link.request(extensionKey: BackupAPI.key, version: 0) { BackupRequest(directory: to).encode(&$0, version: 0) }
        } catch {
            throw OperatorError("the broker did not answer the backup (with the authorizer on, the principal needs Alter on the cluster): \(error)")
        }
        let answer = try BackupResponse.decode(&reader, version: 0)
        guard answer.errorCode == 0 else {
            throw OperatorError("backup failed: \(answer.errorMessage ?? "error \(answer.errorCode)")")
        }
        let elapsed = ContinuousClock.now - started
        print("backup at \(answer.path): \(answer.partitions) partitions, \(answer.segmentsLinked) closed segments linked (\(answer.bytesLinked) bytes), "
            + "\(answer.segmentsCopied) active segments copied (\(answer.bytesCopied) bytes) in \(elapsed.milliseconds) ms")
    }
}

/// `postduif restore --from BACKUP --data DIR`: a backup made the data
/// directory of a stopped node, opened once and verified.
struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a backup the data directory of a stopped node, and verify it.",
        discussion: """
            Copies the backup (which stays as it is) to --data, which must not \
            exist or be empty, opens it (replaying what the active segments \
            hold past the backup's cut, as after a crash), verifies every batch \
            and the conversation index, and closes it cleanly. In a cluster, \
            start the broker afterwards with its usual identity: it follows its \
            leaders and copies what it lacks from them.
            """
    )

    @Option(name: .long, help: "The backup folder `postduif backup` made.")
    var from: String

    @Option(name: .long, help: "The data directory to make.")
    var data: String

    func run() async throws {
        guard FileManager.default.fileExists(atPath: from + "/CURRENT") else {
            throw OperatorError("\(from) is not a backup (no RocksDB CURRENT file)")
        }
        if FileManager.default.fileExists(atPath: data) {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: data)) ?? []
            guard entries.isEmpty else { throw OperatorError("\(data) is not empty: restore makes a new data directory") }
            try FileManager.default.removeItem(atPath: data)
        }
        do {
            try FileManager.default.copyItem(atPath: from, toPath: data)
        } catch {
            try? FileManager.default.removeItem(atPath: data)
            throw OperatorError("cannot copy \(from) to \(data): \(error)")
        }
        let store: LogStore
        do {
            store = try LogStore(path: data, options: LogStoreOptions(durability: .fsync))
        } catch {
            throw OperatorError("the restored copy at \(data) does not open: \(error)")
        }
        defer { store.close() }
        for note in store.recoveryNotes { print("replayed: \(note)") }
        let (table, partitions, damage) = try Inspect.report(store, checkIndex: true)
        print(table)
        guard damage.isEmpty else {
            for problem in damage { print("  \(problem)") }
            throw OperatorError("the restored copy has \(damage.count) problems")
        }
        print("restored \(partitions) partitions to \(data): verified")
    }
}
