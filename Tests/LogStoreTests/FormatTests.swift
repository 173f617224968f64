import Foundation
import RocksDB
import Testing

@testable import LogStore

/// The store records its format; a binary meets a store of another format
/// (one a newer release wrote, say) with a message naming both, and opens
/// nothing (Docs/deploy-vms.md, "Upgrading and rolling back").
@Suite struct FormatTests {
    @Test func aStoreOfAnotherFormatIsRefusedWithAMessageNamingBoth() throws {
        let path = NSTemporaryDirectory() + "postduif-format-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try LogStore(path: path, options: LogStoreOptions(durability: .none))
        try store.createTopic("kept", configuration: TopicConfiguration())
        store.close()

        let database = try Families.open(path: path, options: DatabaseOptions())
        let families = Families(database)
        #expect(try database.get(LogStore.formatKey, in: families.topics) == LogStore.format, "the format is recorded")
        try database.put(LogStore.formatKey, Array("segments-2".utf8), in: families.topics, sync: true)
        database.close()

        do {
            let opened = try LogStore(path: path, options: LogStoreOptions(durability: .none))
            opened.close()
            Issue.record("a store of another format opened")
        } catch {
            #expect(error.message.contains("segments-2") && error.message.contains("this version reads segments-1"), "\(error.message)")
        }
    }
}
