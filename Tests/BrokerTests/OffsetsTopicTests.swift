import Foundation
import KafkaWire
import LogStore
import Testing

@testable import Broker

@Suite("Group offsets in __consumer_offsets")
struct OffsetsTopicTests {
    @Test("a group lands where Kafka puts it: abs(String.hashCode) % partitions")
    func placement() {
        // Java: "hello".hashCode() == 99162322; "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        #expect(OffsetsTopic.partition(for: "hello", count: 50) == 99_162_322 % 50)
        #expect(OffsetsTopic.partition(for: "polygenelubricants", count: 50) == 0)
        #expect(OffsetsTopic.partition(for: "", count: 10) == 0)
    }

    @Test("a new leader rebuilds the view from the log; an older commit never overwrites a newer one")
    func loadAndApply() async throws {
        let path = NSTemporaryDirectory() + "postduif-offsets-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try LogStore(path: path, options: LogStoreOptions(durability: .none))
        defer { store.close() }
        try store.createTopic(OffsetsTopic.name, configuration: TopicConfiguration(partitionCount: 1))
        let log = try store.partition(topic: OffsetsTopic.name, index: 0)
        let offsets = OffsetsTopic(partitionCount: 1)
        func entry(_ partition: Int32, _ offset: Int64) -> GroupOffsetEntry {
            GroupOffsetEntry(topic: "chat", partition: partition, committed: CommittedOffset(offset: offset, leaderEpoch: 3, metadata: "m"))
        }
        for (group, entries) in [("g", [entry(0, 10), entry(1, 5)]), ("g", [entry(0, 20)]), ("other", [entry(0, 7)])] {
            let pending = try log.write(try OffsetsTopic.batch(group: group, entries, timestamp: 1), leaderEpoch: 1)
            _ = try await pending.durable()
        }
        try offsets.load(partition: 0, epoch: 1, log: log)
        let loaded = offsets.committed(group: "g").sorted { $0.partition < $1.partition }
        #expect(loaded == [entry(0, 20), entry(1, 5)])
        #expect(offsets.committed(group: "other") == [entry(0, 7)])

        // A commit that finishes late but was appended earlier (log offset 0) loses to the loaded one.
        offsets.apply(partition: 0, epoch: 1, group: "g", [entry(0, 11)], baseOffset: 0)
        #expect(offsets.committed(group: "g").first { $0.partition == 0 }?.committed.offset == 20)
        offsets.apply(partition: 0, epoch: 1, group: "g", [entry(0, 30)], baseOffset: 4)
        #expect(offsets.committed(group: "g").first { $0.partition == 0 }?.committed.offset == 30)
        // A commit for an epoch no longer led changes nothing.
        offsets.apply(partition: 0, epoch: 2, group: "g", [entry(0, 40)], baseOffset: 5)
        #expect(offsets.committed(group: "g").first { $0.partition == 0 }?.committed.offset == 30)
        offsets.forget(partition: 0)
        #expect(offsets.committed(group: "g").isEmpty)
    }
}
