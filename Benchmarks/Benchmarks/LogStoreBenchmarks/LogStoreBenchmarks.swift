// Append, read and history benchmarks of the log store.
//
// Workload (issue "Foundation", Docs/benchmarks.md): 1 KiB records keyed over
// 10,000 conversations, in batches of 16 KiB and 64 KiB, appended to a
// conversation topic (index on) and to a plain topic; reads of 1 MiB; and
// the last 50 messages of one conversation from a store of 10 million.
//
// Environment: POSTDUIF_BENCH_DIR picks the folder (and so the disk) the
// stores live on; it must be the disk fio measures. The 10-million-message
// history store is built once into that folder and reused.
import Benchmark
import Foundation
import KafkaWire
import LogStore

let benchDirectory = ProcessInfo.processInfo.environment["POSTDUIF_BENCH_DIR"] ?? NSTemporaryDirectory()
let conversationsCount = 10_000
let appendsPerIteration = 8
let recordBytes = 1024

/// SplitMix64, seeded: the same batches in every run.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Batches of `batchBytes` holding 1 KiB records with random conversation keys.
func makeBatches(batchBytes: Int, count: Int, recordBytes: Int = recordBytes, seed: UInt64 = 7) -> [[UInt8]] {
    var generator = SeededGenerator(state: seed)
    let recordsPerBatch = max(1, batchBytes / recordBytes)
    return (0..<count).map { _ in
        var builder = RecordBatchBuilder()
        for _ in 0..<recordsPerBatch {
            let value = (0..<recordBytes).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let conversation = "conversation-\(generator.next() % UInt64(conversationsCount))"
            builder.append(key: Array(conversation.utf8), value: value, timestamp: 1_795_000_000_000)
        }
        return builder.build()
    }
}

final class StoreFixture: @unchecked Sendable {
    // Used from one benchmark at a time; the store itself is thread-safe.
    let path: String
    let store: LogStore
    let partitions: [PartitionLog]
    let batches: [[UInt8]]
    var next = 0
    /// When the first measured append started, for the MB/s line.
    var started: ContinuousClock.Instant? = nil
    var startBytes: Int64 = 0
    var startCPUSeconds: Double = 0

    init(durability: Durability, conversationIndex: Bool, batchBytes: Int, partitionsCount: Int32 = 1) throws {
        path = benchDirectory + "/postduif-bench-\(UUID().uuidString)"
        let store = try LogStore(path: path, options: LogStoreOptions(durability: durability))
        self.store = store
        let name = conversationIndex ? "conversations" : "plain"
        try store.createTopic(name, configuration: TopicConfiguration(partitionCount: partitionsCount, conversationIndex: conversationIndex, batchBytesMax: 1 << 20))
        partitions = try (0..<partitionsCount).map { try store.partition(topic: name, index: $0) }
        batches = makeBatches(batchBytes: batchBytes, count: 64)
    }

    func nextBatch() -> [UInt8] {
        next += 1
        return batches[next % batches.count]
    }

    func remove() {
        store.close()
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Eight sequential appends (or one round of concurrent appends) per iteration. Malloc
/// counting is left out here: its interposer costs more than an append's
/// own allocations and would understate throughput. The teardown prints
/// MB/s from the bytes appended and the wall time since the first
/// iteration, the figure Docs/benchmarks.md compares with fio.
func appendBenchmark(_ name: String, durability: Durability, conversationIndex: Bool, batchBytes: Int, concurrentAppends: Int = 1) {
    let fixture = UncheckedBox<StoreFixture?>(nil)
    Benchmark(
        name,
        configuration: .init(
            metrics: [.throughput, .wallClock, .cpuTotal, .peakMemoryResident],
            timeUnits: .microseconds, warmupIterations: 0, maxDuration: .seconds(10), maxIterations: 1_000_000,
            setup: { fixture.value = try StoreFixture(durability: durability, conversationIndex: conversationIndex, batchBytes: batchBytes, partitionsCount: Int32(concurrentAppends)) },
            teardown: {
                if let store = fixture.value, let started = store.started {
                    let elapsed = ContinuousClock.now - started
                    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                    let bytes = store.partitions.reduce(Int64(0)) { $0 + $1.sizeBytes } - store.startBytes
                    let cpuSecondsPerGB = (processCPUSeconds() - store.startCPUSeconds) / (Double(bytes) / 1e9)
                    let line = String(
                        format: "RESULT %@: %.1f MB/s (%lld MiB in %.1f s, %llu WAL syncs, %.0f appends/s, %.2f CPU s/GB)",
                        name, Double(bytes) / 1e6 / seconds, bytes >> 20, seconds, store.store.walSyncCount,
                        Double(bytes) / Double(batchBytes) / seconds, cpuSecondsPerGB)
                    print(line)
                    store.remove()
                }
            })
    ) { benchmark in
        guard let store = fixture.value else { return }
        if store.started == nil {
            store.started = ContinuousClock.now
            store.startCPUSeconds = processCPUSeconds()
        }
        if concurrentAppends == 1 {
            // Several appends per iteration, so the harness's own work per
            // iteration does not count as the store's.
            for _ in 0..<appendsPerIteration {
                blackHole(try await store.partitions[0].append(store.nextBatch()))
            }
        } else {
            // Concurrent appenders, one partition each, as many producers would be.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<concurrentAppends {
                    let batch = store.nextBatch()
                    let partition = store.partitions[index]
                    group.addTask { blackHole(try await partition.append(batch)) }
                }
                try await group.waitForAll()
            }
        }
    }
}

/// User plus system CPU time of this process, RocksDB's background threads
/// included: the cost of an append on a machine where CPU is the limit.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// A box a benchmark's setup fills and its closure reads (sequentially).
final class UncheckedBox<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

/// The 10-million-message conversation store, built once and reused (v3:
/// the segment-file layout of ADR 0013; stores of earlier layouts are refused).
func historyStore(messagesCount: Int) throws -> LogStore {
    let path = benchDirectory + "/postduif-bench-history-v3-\(messagesCount)"
    let marker = path + "/complete"
    if !FileManager.default.fileExists(atPath: marker) {
        try? FileManager.default.removeItem(atPath: path)
        let store = try LogStore(path: path, options: LogStoreOptions(durability: .none))
        try store.createTopic("conversations", configuration: TopicConfiguration(partitionCount: 1, conversationIndex: true))
        let partition = try store.partition(topic: "conversations", index: 0)
        // Chat-sized messages: 200 bytes, 64 to a batch, the conversations
        // taken in turn, so each of the 10,000 holds exactly 1,000 messages.
        let recordsPerBatch = 64
        let batchesCount = messagesCount / recordsPerBatch
        let value = [UInt8](repeating: 0x61, count: 200)
        let started = ContinuousClock.now
        let semaphore = DispatchSemaphore(value: 0)
        Task {
            var message = 0
            for _ in 0..<batchesCount {
                var builder = RecordBatchBuilder()
                for _ in 0..<recordsPerBatch {
                    builder.append(key: Array("conversation-\(message % conversationsCount)".utf8), value: value, timestamp: 1_795_000_000_000)
                    message += 1
                }
                _ = try await partition.append(builder.build())
            }
            semaphore.signal()
        }
        semaphore.wait()
        try partition.advanceHighWatermark(to: partition.logEndOffset)
        print("built the history store of \(partition.logEndOffset) messages in \(ContinuousClock.now - started)")
        store.close()
        FileManager.default.createFile(atPath: marker, contents: Data())
    }
    return try LogStore(path: path, options: LogStoreOptions(durability: .none))
}

let benchmarks: @Sendable () -> Void = {
    appendBenchmark("append 64KiB batches, fsync, conversation index", durability: .fsync, conversationIndex: true, batchBytes: 64 << 10)
    appendBenchmark("append 16KiB batches, fsync, conversation index", durability: .fsync, conversationIndex: true, batchBytes: 16 << 10)
    appendBenchmark("append 64KiB batches, fsync, plain topic", durability: .fsync, conversationIndex: false, batchBytes: 64 << 10)
    appendBenchmark("append 64KiB batches x4 concurrent, fsync, conversation index", durability: .fsync, conversationIndex: true, batchBytes: 64 << 10, concurrentAppends: 4)
    appendBenchmark("append 64KiB batches x4 concurrent, fsync, plain topic", durability: .fsync, conversationIndex: false, batchBytes: 64 << 10, concurrentAppends: 4)
    appendBenchmark("append 64KiB batches, none, conversation index", durability: .none, conversationIndex: true, batchBytes: 64 << 10)
    appendBenchmark("append 16KiB batches, none, conversation index", durability: .none, conversationIndex: true, batchBytes: 16 << 10)
    appendBenchmark("append 64KiB batches, none, plain topic", durability: .none, conversationIndex: false, batchBytes: 64 << 10)

    let readFixture = UncheckedBox<(StoreFixture, Int64)?>(nil)
    Benchmark(
        "read 1MiB from a random offset",
        configuration: .init(
            metrics: [.throughput, .wallClock, .cpuTotal, .mallocCountTotal],
            timeUnits: .microseconds, maxDuration: .seconds(5),
            setup: {
                let fixture = try StoreFixture(durability: .none, conversationIndex: false, batchBytes: 64 << 10)
                for _ in 0..<4096 { _ = try await fixture.partitions[0].append(fixture.nextBatch()) }
                readFixture.value = (fixture, fixture.partitions[0].logEndOffset)
            },
            teardown: { readFixture.value?.0.remove() })
    ) { benchmark in
        guard let (fixture, end) = readFixture.value else { return }
        let read = try fixture.partitions[0].read(from: Int64.random(in: 0..<(end - 1024)), bytesMax: 1 << 20)
        blackHole(read)
    }

    let history = UncheckedBox<LogStore?>(nil)
    Benchmark(
        "history: last 50 messages of one conversation, 10M-message store",
        configuration: .init(
            metrics: [.throughput, .wallClock, .cpuTotal, .mallocCountTotal],
            timeUnits: .microseconds, warmupIterations: 100, maxDuration: .seconds(10), maxIterations: 20_000,
            setup: { history.value = try historyStore(messagesCount: 10_000_000) },
            teardown: { history.value?.close() })
    ) { benchmark in
        guard let store = history.value else { return }
        let partition = try store.partition(topic: "conversations", index: 0)
        let conversation = Array("conversation-\(Int.random(in: 0..<conversationsCount))".utf8)
        let page = try partition.history(conversation: conversation, limit: 50)
        precondition(page.count == 50, "a conversation of the history store has fewer than 50 messages")
        blackHole(page)
    }
}
