import Archive
import ArgumentParser
import ChatWire
import Foundation
import KafkaNIO
import PostduifClient

/// `postduif archive`: the reference service on the stream, keeping every
/// conversation as a public record (Docs/services.md, "The archive").
struct ArchiveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "archive",
        abstract: "Keep every conversation as a public record; verify, export and destroy by the selection list.",
        subcommands: [Follow.self, Verify.self, Export.self, Destroy.self],
        defaultSubcommand: Follow.self)

    struct Place: ParsableArguments {
        @Option(help: "The archive's folder (POSTDUIF_ARCHIVE_DIR).")
        var dir: String = Environment.string("ARCHIVE_DIR") ?? "./archive"

        @Option(help: "The selection list: retention classes and which conversations get which (JSON; see Docs/services.md). Without: every record is kept permanently.")
        var selectionList: String?

        func open() throws -> ArchiveStore {
            var selection = SelectionList()
            if let path = selectionList ?? Environment.string("ARCHIVE_SELECTION_LIST") {
                guard let data = FileManager.default.contents(atPath: path) else { throw OperatorError("cannot read the selection list \(path)") }
                do {
                    selection = try JSONDecoder().decode(SelectionList.self, from: data)
                } catch {
                    throw OperatorError("the selection list \(path) is not valid: \(error)")
                }
                guard selection.classes[selection.default] != nil else { throw OperatorError("the selection list's default class \(selection.default) is not among its classes") }
            }
            do {
                return try ArchiveStore(root: dir, selection: selection)
            } catch {
                throw OperatorError("cannot open the archive in \(dir): \(error)")
            }
        }
    }

    /// Follows the conversations in its own group and archives them.
    struct Follow: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Follow the conversations topic in the archive's own consumer group and archive every event once.",
            discussion: """
                Resumes exactly where it stopped, after a crash too: the archive's \
                own state names the next offset per partition and each file's \
                length, and a batch counts only once that state is written.
                """)

        @OptionGroup var place: Place
        @OptionGroup var connection: Acl.Connection

        @Option(help: "The consumer group (POSTDUIF_ARCHIVE_GROUP).")
        var group: String = Environment.string("ARCHIVE_GROUP") ?? "postduif-archive"

        @Option(help: "The topic to archive.")
        var topic: String = ChatTopicNames.conversations

        func run() async throws {
            let store = try place.open()
            let client = KafkaClient(ClientConfiguration(bootstrap: [connection.broker], clientID: "postduif-archive", security: try connection.security()))
            var settings = GroupConsumer.Configuration(group: group)
            settings.offsetReset = .earliest
            let started = ContinuousClock.now
            let consumer = GroupConsumer(client: client, configuration: settings, clock: { Int64((ContinuousClock.now - started) / .milliseconds(1)) })
            let media = ArchiveMedia(client: client, group: group + "-media", clock: { Int64((ContinuousClock.now - started) / .milliseconds(1)) })
            await consumer.subscribe([topic])
            print("archiving \(topic) into \(place.dir) as group \(group)")
            var placed: Set<TopicPartition> = []
            while true {
                let records: [ConsumedRecord]
                do {
                    // Partitions newly assigned start where the archive's own
                    // state says, not where the group last committed.
                    let assigned = await consumer.assignment
                    for partition in assigned where !placed.contains(partition) {
                        if let next = store.offsets[partition.partition] { await consumer.seek(partition, to: next) }
                    }
                    placed = Set(assigned)
                    records = try await consumer.poll(maxWaitMilliseconds: 1_000)
                } catch {
                    FileHandle.standardError.write(Data("archive: \(error); trying again\n".utf8))
                    try await Task.sleep(for: .seconds(1))
                    continue
                }
                guard !records.isEmpty else { continue }
                let known = store.offsets
                let fresh = records.filter { $0.offset >= known[$0.partition] ?? 0 }
                var next: [Int32: Int64] = [:]
                for record in records { next[record.partition] = max(next[record.partition] ?? 0, record.offset + 1) }
                let events = fresh.compactMap { record -> ArchivedEvent? in
                    guard let key = record.key, let value = record.value else { return nil }
                    return ArchivedEvent(roomID: String(decoding: key, as: UTF8.self), partition: record.partition, offset: record.offset, timestamp: record.timestamp, value: value)
                }
                // The files the events carry, read before the batch is
                // written: a broker that cannot answer now is asked again, and
                // after that the run stops (it resumes from the archive's state).
                let ids = events.flatMap { ArchiveStore.mediaIDs(in: $0.value) }
                var files: [String: ArchivedMedia] = [:]
                for attempt in 1...5 {
                    do {
                        files = try await media.files(ids)
                        break
                    } catch {
                        guard attempt < 5 else { throw OperatorError("cannot read the chat's files: \(error)") }
                        FileHandle.standardError.write(Data("archive: reading files: \(error); trying again\n".utf8))
                        try await Task.sleep(for: .seconds(1))
                    }
                }
                try store.append(events, media: files, next: next)
                // The group's offsets follow the archive's (for lag alerts).
                try? await consumer.commit(Dictionary(uniqueKeysWithValues: next.map { (TopicPartition(topic, $0.key), $0.value) }))
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check every archived byte against the hash chain and the manifests; exit 1 if anything differs.")
        @OptionGroup var place: Place

        func run() throws {
            let store = try place.open()
            let problems = store.verify()
            guard problems.isEmpty else {
                for problem in problems { print("NOT INTACT: \(problem)") }
                throw ExitCode(1)
            }
            print("intact: chain head \(store.chainHead)")
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write one conversation's archived events in order, one JSON object per line (for a records request).")
        @OptionGroup var place: Place

        @Option(help: "The room id.")
        var room: String

        @Option(help: "The file to write (standard output when omitted).")
        var to: String?

        func run() throws {
            let data = try place.open().export(roomID: room)
            if let to {
                guard FileManager.default.createFile(atPath: to, contents: data) else { throw OperatorError("cannot write \(to)") }
            } else {
                FileHandle.standardOutput.write(data)
            }
        }
    }

    struct Destroy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Destroy what has passed its retention under the selection list, logging each file in destruction-log.jsonl and the hash chain.")
        @OptionGroup var place: Place

        @Option(help: "Judge retention as of this time, ms since 1970 (default: now).")
        var nowMs: Int64?

        func run() throws {
            let store = try place.open()
            let destroyed = try store.destroyExpired(now: nowMs ?? Int64(Date().timeIntervalSince1970 * 1000))
            print(destroyed.isEmpty ? "nothing has passed its retention" : "destroyed \(destroyed.count) files:\n" + destroyed.joined(separator: "\n"))
        }
    }
}
