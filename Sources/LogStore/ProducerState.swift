import Core
import KafkaWire

/// What an idempotent producer's batch does to the log: be appended, or be
/// recognised as a retry of a batch already stored.
public enum SequenceVerdict: Equatable, Sendable {
    case append
    /// A retry: answer with the stored batch's offsets, write nothing.
    case duplicate(baseOffset: Int64, lastOffset: Int64)
}

/// One producer's state in one partition: its epoch and its last five
/// batches' sequences and offsets (Kafka's `ProducerStateEntry`). A pure value;
/// the partition persists it in the same write as the batch it describes.
struct ProducerEntry: Equatable, Sendable {
    struct BatchRecord: Equatable, Sendable {
        var firstSequence: Int32
        var lastSequence: Int32
        var baseOffset: Int64
        var lastOffset: Int64
    }

    var epoch: Int16
    var batches: [BatchRecord]

    /// The verdict for a batch of this producer, or the refusal (Kafka's
    /// rules from `ProducerAppendInfo`).
    static func verdict(for entry: ProducerEntry?, epoch: Int16, firstSequence: Int32, lastSequence: Int32) throws(LogStoreError) -> SequenceVerdict {
        guard let entry else { return .append }  // an unknown producer may start anywhere
        if epoch < entry.epoch {
            throw LogStoreError(.producerFenced, "producer epoch \(epoch) is older than the current \(entry.epoch)")
        }
        if epoch > entry.epoch {
            guard firstSequence == 0 else {
                throw LogStoreError(.outOfOrderSequence, "a new producer epoch \(epoch) must start at sequence 0, not \(firstSequence)")
            }
            return .append
        }
        if let match = entry.batches.first(where: { $0.firstSequence == firstSequence && $0.lastSequence == lastSequence }) {
            return .duplicate(baseOffset: match.baseOffset, lastOffset: match.lastOffset)
        }
        guard let last = entry.batches.last else { return .append }
        let expected = last.lastSequence == Int32.max ? 0 : last.lastSequence + 1
        guard firstSequence == expected else {
            throw LogStoreError(.outOfOrderSequence, "sequence \(firstSequence) does not follow \(last.lastSequence) for producer epoch \(epoch)")
        }
        return .append
    }

    /// The entry after appending a batch.
    static func recording(_ entry: ProducerEntry?, epoch: Int16, batch: BatchRecord) -> ProducerEntry {
        var next = entry ?? ProducerEntry(epoch: epoch, batches: [])
        if epoch != next.epoch {
            next = ProducerEntry(epoch: epoch, batches: [])
        }
        next.batches.append(batch)
        if next.batches.count > Limits.producerBatchesRemembered {
            next.batches.removeFirst(next.batches.count - Limits.producerBatchesRemembered)
        }
        return next
    }

    func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 3 + batches.count * 24)
        writer.writeInt8(1)  // format version
        writer.writeInt16(epoch)
        writer.writeInt8(Int8(batches.count))
        for batch in batches {
            writer.writeInt32(batch.firstSequence)
            writer.writeInt32(batch.lastSequence)
            writer.writeInt64(batch.baseOffset)
            writer.writeInt64(batch.lastOffset)
        }
        return writer.bytes
    }

    init(epoch: Int16, batches: [BatchRecord]) {
        self.epoch = epoch
        self.batches = batches
    }

    init(decoding bytes: [UInt8]) throws(WireError) {
        var reader = ByteReader(bytes)
        let version = try reader.readInt8()
        guard version == 1 else { throw .malformed("producer state version \(version)") }
        epoch = try reader.readInt16()
        let count = Int(try reader.readInt8())
        guard count >= 0 && count <= Limits.producerBatchesRemembered else { throw .malformed("producer state with \(count) batches") }
        batches = []
        for _ in 0..<count {
            batches.append(BatchRecord(
                firstSequence: try reader.readInt32(), lastSequence: try reader.readInt32(),
                baseOffset: try reader.readInt64(), lastOffset: try reader.readInt64()))
        }
    }
}
