import Foundation
import KafkaWire
import LogStore
import RocksDB
import Testing

/// An executable built beside the test bundle.
func builtExecutable(_ name: String) throws -> URL {
    let candidates = [
        Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent(name),
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name),
        URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/debug/\(name)"),
    ]
    guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
        Issue.record("\(name) not found beside the tests; build with `swift build --build-tests`")
        throw CancellationError()
    }
    return found
}

/// Runs a command to its end and returns its exit status and output.
func runToEnd(_ executable: URL, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

@Suite struct InspectTests {
    /// A store with two topics, then one stored batch's payload flipped
    /// in its segment file, as a bad disk sector would.
    func damagedStore() async throws -> (path: String, damagedOffset: Int64) {
        let path = NSTemporaryDirectory() + "postduif-inspect-\(UUID().uuidString)"
        let segmentPath: String
        var lastAudit: AppendResult? = nil
        do {
            let store = try LogStore(path: path)
            defer { store.close() }
            try store.createTopic("conversations", configuration: TopicConfiguration(partitionCount: 2, conversationIndex: true))
            try store.createTopic("audit", configuration: TopicConfiguration())
            for index in 0..<6 {
                _ = try await store.partition(topic: "conversations", index: Int32(index % 2)).append(makeBatch(count: 3, conversations: ["x", "y"]))
                lastAudit = try await store.partition(topic: "audit", index: 0).append(makeBatch(count: 2))
            }
            segmentPath = try #require(try store.partition(topic: "audit", index: 0).segmentPaths.last)
        }
        // The last batch ends the segment: flip a byte of its last record.
        let handle = try #require(FileHandle(forUpdatingAtPath: segmentPath))
        defer { try? handle.close() }
        let end = try handle.seekToEnd()
        try handle.seek(toOffset: end - 2)
        var byte = try #require(try handle.read(upToCount: 1))
        byte[0] ^= 0x40
        try handle.seek(toOffset: end - 2)
        try handle.write(contentsOf: byte)
        return (path, try #require(lastAudit).baseOffset)
    }

    @Test func verifyReportsAFlippedByteWithItsTopicPartitionAndOffset() async throws {
        let (path, damagedOffset) = try await damagedStore()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try LogStore(path: path)
        defer { store.close() }
        let damage = try store.allPartitions.flatMap { try $0.verify() }
        #expect(damage.count == 1)
        #expect(damage.first?.topic == "audit" && damage.first?.partition == 0 && damage.first?.offset == damagedOffset)
        #expect(damage.first?.problem.contains("CRC-32C mismatch") == true)
    }

    @Test func inspectListsPartitionsAndExitsNonZeroOnDamage() async throws {
        let postduif = try builtExecutable("postduif")
        let (path, damagedOffset) = try await damagedStore()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (status, output) = try runToEnd(postduif, ["inspect", "--data", path])
        #expect(status == 1, "\(output)")
        #expect(output.contains("conversations"))
        #expect(output.contains("audit/0 at offset \(damagedOffset): CRC-32C mismatch"), "\(output)")
        #expect(output.contains("3 partitions"))
    }

    @Test func inspectOfAHealthyStoreExitsZeroAndCountsConversations() async throws {
        let postduif = try builtExecutable("postduif")
        let path = NSTemporaryDirectory() + "postduif-inspect-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let store = try LogStore(path: path)
            defer { store.close() }
            try store.createTopic("conversations", configuration: TopicConfiguration(conversationIndex: true))
            _ = try await store.partition(topic: "conversations", index: 0).append(makeBatch(count: 9, conversations: ["a", "b", "c"]))
        }
        let (status, output) = try runToEnd(postduif, ["inspect", "--data", path])
        #expect(status == 0, "\(output)")
        let line = try #require(output.split(separator: "\n").first { $0.hasPrefix("conversations") })
        // topic partition start end hw batches bytes conversations ...
        let columns = line.split(separator: " ")
        #expect(columns[3] == "9" && columns[5] == "1" && columns[7] == "3", "\(line)")
        #expect(output.contains("verified"))
    }

    @Test func inspectOfAMissingDirectorySaysSo() throws {
        let postduif = try builtExecutable("postduif")
        let (status, output) = try runToEnd(postduif, ["inspect", "--data", "/nonexistent/postduif"])
        #expect(status != 0)
        #expect(output.contains("holds no Postduif data"))
    }
}
