// The child process of the crash-safety test (Tests/LogStoreTests/CrashSafetyTests).
//
// It appends batches to a conversation topic in fsync mode, forever, and
// prints one line per acknowledged append, flushed at once:
//     ack <partition> <baseOffset> <lastOffset> <first record's value>
// The test kills it with SIGKILL at a moment of its choosing and then checks
// that every acknowledged batch survived. Arguments: <data directory> <run id> <seed>.
import Core
import Foundation
import KafkaWire
import LogStore

let arguments = CommandLine.arguments
guard arguments.count == 4, let seed = UInt64(arguments[3]) else {
    FileHandle.standardError.write(Data("usage: CrashWriter <data directory> <run id> <seed>\n".utf8))
    exit(2)
}
let directory = arguments[1]
let runID = arguments[2]

let store = try LogStore(path: directory, options: LogStoreOptions(durability: .fsync))
if store.topic(named: "conversations") == nil {
    try store.createTopic("conversations", configuration: TopicConfiguration(partitionCount: 2, conversationIndex: true))
}
let partitions = [try store.partition(topic: "conversations", index: 0), try store.partition(topic: "conversations", index: 1)]
var generator = SeededGenerator(seed: seed)

// Several appends in flight at once, so group commit and concurrent
// partitions are part of what a kill interrupts.
try await withThrowingTaskGroup(of: Void.self) { group in
    for worker in 0..<4 {
        var workerGenerator = SeededGenerator(seed: generator.next())
        group.addTask {
            var sequence = 0
            while true {
                sequence += 1
                let partitionIndex = Int(workerGenerator.next() % 2)
                var builder = RecordBatchBuilder(compression: sequence % 3 == 0 ? .lz4 : .none)
                let count = 1 + Int(workerGenerator.next() % 20)
                for position in 0..<count {
                    let conversation = "c\(workerGenerator.next() % 50)"
                    builder.append(
                        key: Array(conversation.utf8),
                        value: Array("\(runID)-\(worker)-\(sequence)-\(position)".utf8),
                        timestamp: Int64(Date().timeIntervalSince1970 * 1000))
                }
                let result = try await partitions[partitionIndex].append(builder.build())
                // One write(2) per line: nothing sits in a buffer when the kill comes.
                FileHandle.standardOutput.write(Data("ack \(partitionIndex) \(result.baseOffset) \(result.lastOffset) \(runID)-\(worker)-\(sequence)-0\n".utf8))
            }
        }
    }
    try await group.waitForAll()
}
