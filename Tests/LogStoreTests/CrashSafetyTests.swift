import Core
import Foundation
import KafkaWire
import LogStore
import Testing

// Fault model: the process dies at an arbitrary instruction (SIGKILL), with
// appends in flight on several tasks and partitions. The operating system
// survives, so what a write(2) handed it survives too; what this test proves
// is that the store's own state (offsets, index, producer state, partition
// state) is consistent after any such death and that no acknowledged batch
// is lost. Losing power is fsync's job, exercised by RocksDB's synced WAL.

/// The CrashWriter executable, built beside the test bundle by `swift build --build-tests`.
func crashWriterURL() throws -> URL {
    try builtExecutable("CrashWriter")
}

struct Acknowledgement: Hashable {
    var partition: Int32
    var baseOffset: Int64
    var lastOffset: Int64
    var firstValue: String
}

/// Reads lines from a pipe until `count` acknowledgements arrived or the
/// child ended; a line cut by the kill is discarded.
func readAcknowledgements(from handle: FileHandle, count: Int) -> [Acknowledgement] {
    var acknowledgements: [Acknowledgement] = []
    var pending = Data()
    while acknowledgements.count < count {
        let chunk = handle.availableData
        if chunk.isEmpty { break }  // end of file: the child exited
        pending.append(chunk)
        while let newline = pending.firstIndex(of: 0x0a) {
            let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
            pending.removeSubrange(pending.startIndex...newline)
            let fields = line.split(separator: " ")
            guard fields.count == 5, fields[0] == "ack", let partition = Int32(fields[1]), let base = Int64(fields[2]), let last = Int64(fields[3]) else { continue }
            acknowledgements.append(Acknowledgement(partition: partition, baseOffset: base, lastOffset: last, firstValue: String(fields[4])))
        }
    }
    return acknowledgements
}

@Suite struct CrashSafetyTests {
    @Test func everyAcknowledgedBatchSurvivesRepeatedSIGKILL() throws {
        let executable = try crashWriterURL()
        let directory = NSTemporaryDirectory() + "postduif-crash-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let seed = UInt64.random(in: 1...UInt64.max)
        var generator = SystemRandomNumberGenerator()
        var acknowledged: [Acknowledgement] = []
        let killsCount = 24

        for run in 0..<killsCount {
            let process = Process()
            process.executableURL = executable
            process.arguments = [directory, "r\(run)", String(seed &+ UInt64(run))]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            // Kill after a random number of acknowledgements (sometimes at
            // the very first), so kills land at different points of the
            // append path: mid-write, mid-sync, between batches.
            let killAfter = Int.random(in: 1...150, using: &generator)
            let seen = readAcknowledgements(from: output.fileHandleForReading, count: killAfter)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal, "run \(run) (seed \(seed)) ended by itself: \(process.terminationStatus)")
            // Lines already in the pipe were acknowledged before the kill too.
            let rest = readAcknowledgements(from: output.fileHandleForReading, count: Int.max)
            acknowledged += seen + rest
        }

        #expect(acknowledged.count >= killsCount, "seed \(seed)")
        let store = try LogStore(path: directory)
        defer { store.close() }
        for partition in store.allPartitions {
            let damage = try partition.verify(checkIndex: true)
            #expect(damage.isEmpty, "seed \(seed): \(damage)")
        }
        var recordsByPartition: [Int32: [Int64: String]] = [:]
        for partition in store.allPartitions {
            let read = try partition.read(from: 0, bytesMax: Int.max)
            var offsets: [Int64: String] = [:]
            var expectedOffset: Int64 = 0
            for bytes in read.batches {
                let batch = try RecordBatch(validating: bytes)
                #expect(batch.baseOffset == expectedOffset, "seed \(seed): hole before \(batch.baseOffset) in partition \(partition.index)")
                expectedOffset = batch.nextOffset
                for (position, record) in try batch.records().enumerated() {
                    offsets[batch.baseOffset + Int64(position)] = String(decoding: record.value ?? [], as: UTF8.self)
                }
            }
            #expect(expectedOffset == partition.logEndOffset)
            recordsByPartition[partition.index] = offsets
        }
        for acknowledgement in acknowledged {
            let stored = recordsByPartition[acknowledgement.partition]?[acknowledgement.baseOffset]
            #expect(stored == acknowledgement.firstValue, "seed \(seed): acknowledged \(acknowledgement) lost or changed")
            #expect(recordsByPartition[acknowledgement.partition]?[acknowledgement.lastOffset] != nil)
        }
        // The conversation index agrees with the log: every record is indexed
        // exactly once (verify checked each entry points at its record).
        let partition = try store.partition(topic: "conversations", index: 0)
        let history = try partition.history(conversation: Array("c7".utf8), from: .after(sequence: 0), limit: Limits.historyMessagesMax)
        #expect(!history.isEmpty)
        #expect(history.map(\.sequence) == (0..<history.count).map { UInt64($0 + 1) }, "seed \(seed): sequences have holes")
    }
}
