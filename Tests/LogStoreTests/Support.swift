import Core
import Foundation
import KafkaWire
import LogStore

/// A log store in a fresh temporary directory, removed when the test ends.
final class TemporaryStore {
    let path: String
    private(set) var store: LogStore

    init(durability: Durability = .fsync) throws {
        path = NSTemporaryDirectory() + "postduif-logstore-\(UUID().uuidString)"
        store = try LogStore(path: path, options: LogStoreOptions(durability: durability))
    }

    /// Closes and opens the store again, as a restart would.
    func reopen(durability: Durability = .fsync) throws {
        store.close()
        store = try LogStore(path: path, options: LogStoreOptions(durability: durability))
    }

    deinit {
        store.close()
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// A batch of `count` records; keys cycle through `conversations`.
func makeBatch(
    count: Int = 1, conversations: [String] = ["room-a"], valuePrefix: String = "m", valueBytes: Int = 0,
    timestamp: Int64 = 1_795_000_000_000, compression: CompressionCodec = .none,
    producerID: Int64 = -1, producerEpoch: Int16 = -1, baseSequence: Int32 = -1
) -> [UInt8] {
    var builder = RecordBatchBuilder(compression: compression)
    builder.producerID = producerID
    builder.producerEpoch = producerEpoch
    builder.baseSequence = baseSequence
    for position in 0..<count {
        let conversation = conversations[position % conversations.count]
        let value = Array("\(valuePrefix)\(position)".utf8) + [UInt8](repeating: 0x2e, count: valueBytes)
        builder.append(key: Array(conversation.utf8), value: value, timestamp: timestamp + Int64(position))
    }
    return builder.build()
}

func text(_ bytes: [UInt8]?) -> String { String(decoding: bytes ?? [], as: UTF8.self) }

extension LogRead {
    var parsed: [RecordBatch] { batches.map { try! RecordBatch(validating: $0, bytesMax: Limits.batchBytesConfigurableMax) } }
}

extension PartitionLog {
    /// Every batch of the partition, as stored, from its start to its end.
    func storedBatches() throws -> [[UInt8]] {
        var result: [[UInt8]] = []
        var offset = logStartOffset
        while offset < logEndOffset {
            let read = try read(from: offset, bytesMax: 1 << 20, maxOffset: logEndOffset)
            guard let last = read.batches.last else { break }
            result += read.batches
            offset = try RecordBatch(validating: last, bytesMax: Limits.batchBytesConfigurableMax).nextOffset
        }
        return result
    }
}
