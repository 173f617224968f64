import Core
import Foundation
import KafkaWire
import RocksDB
import Synchronization

// Verification: every batch and index entry checked, for `postduif inspect`.
extension PartitionLog {
    /// Checks every stored batch (CRC, layout, key agreeing with the batch's
    /// base offset, no gaps between batches) and, with `checkIndex`, that
    /// every conversation index entry points at a record of its conversation.
    public func verify(checkIndex: Bool = true) throws(LogStoreError) -> [Damage] {
        var damage: [Damage] = []
        let (start, end, segments) = try withEntriesWritten { ($0.logStartOffset, $0.logEndOffset, $0.segments) }
        let families = context.families
        let iterator = context.database.makeIterator(in: families.log, lowerBound: prefix, upperBound: Keys.end(of: prefix), fillCache: false)
        iterator.seekToFirst()
        var expected: Int64? = nil
        var keysByOffset: [Int64: [UInt8]] = [:]
        // Below the compaction checkpoint, batches compaction emptied leave
        // gaps, as in Kafka: offsets are kept, records are not.
        // A compacted topic's follower copies its leader's gaps anywhere.
        let cleanedEnd = configuration.cleanupPolicy.contains(.compact) ? Int64.max
            : try storage { try context.database.get(Keys.cleanerCheckpoint(prefix: prefix), in: families.partitionState) }
                .map { Int64(bitPattern: Keys.readUInt64($0, at: 0)) } ?? 0
        while iterator.isValid {
            let keyOffset = Int64(bitPattern: Keys.readUInt64(iterator.keyView, at: prefix.count))
            do {
                guard let location = BatchLocation(iterator.valueView) else {
                    throw LogStoreError(.corrupt, "its location is unreadable")
                }
                guard let stored = try readBatch(at: location, segments: segments, refreshable: true, checked: false) else {
                    throw LogStoreError(.corrupt, "segment \(location.segmentBase) lacks its \(location.sizeBytes) bytes at \(location.position)")
                }
                let batch = try RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax)
                if batch.lastOffset != location.lastOffset || batch.maxTimestamp != location.maxTimestamp {
                    damage.append(Damage(topic: topicName, partition: index, offset: keyOffset, problem: "its location disagrees with the batch's header"))
                }
                if batch.baseOffset != keyOffset {
                    damage.append(Damage(topic: topicName, partition: index, offset: keyOffset, problem: "batch says base offset \(batch.baseOffset)"))
                }
                if let expected, expected != keyOffset, !(keyOffset > expected && keyOffset <= cleanedEnd) {
                    damage.append(Damage(topic: topicName, partition: index, offset: keyOffset, problem: "gap: previous batch ended before \(expected)"))
                } else if expected == nil && keyOffset != start && !(keyOffset > start && keyOffset <= cleanedEnd) {
                    damage.append(Damage(topic: topicName, partition: index, offset: keyOffset, problem: "first batch does not start at the log start offset \(start)"))
                }
                if checkIndex && conversationIndex {
                    for record in try batch.records() {
                        keysByOffset[keyOffset + Int64(record.offsetDelta)] = record.key
                    }
                }
                expected = batch.nextOffset
            } catch {
                damage.append(Damage(topic: topicName, partition: index, offset: keyOffset, problem: "\(error)"))
                expected = nil
            }
            iterator.next()
        }
        try storage { try iterator.checkError() }
        if let expected, expected != end {
            damage.append(Damage(topic: topicName, partition: index, offset: expected, problem: "log end offset is \(end) but the last batch ends at \(expected)"))
        }
        guard checkIndex && conversationIndex else { return damage }
        let indexIterator = context.database.makeIterator(in: families.conversationIndex, lowerBound: prefix, upperBound: Keys.end(of: prefix), fillCache: false)
        indexIterator.seekToFirst()
        var previous: (conversation: [UInt8], sequence: UInt64, offset: Int64)? = nil
        var indexed = 0
        while indexIterator.isValid {
            let key = indexIterator.keyView
            let length = Int(key[prefix.count])
            let conversation = [UInt8](key[(prefix.count + 1)..<(prefix.count + 1 + length)])
            let sequence = Keys.readUInt64(key, at: prefix.count + 1 + length)
            let offset = Int64(bitPattern: Keys.readUInt64(indexIterator.valueView, at: 0))
            indexed += 1
            if keysByOffset[offset] != conversation {
                damage.append(Damage(topic: topicName, partition: index, offset: offset, problem: "index entry \(String(decoding: conversation, as: UTF8.self))#\(sequence) points at a record of another conversation or none"))
            }
            if let previous, previous.conversation == conversation {
                if sequence != previous.sequence + 1 || offset <= previous.offset {
                    damage.append(Damage(topic: topicName, partition: index, offset: offset, problem: "index sequence \(sequence) after \(previous.sequence) is out of order"))
                }
            }
            previous = (conversation, sequence, offset)
            indexIterator.next()
        }
        try storage { try indexIterator.checkError() }
        if indexed != keysByOffset.count {
            damage.append(Damage(topic: topicName, partition: index, offset: start, problem: "index holds \(indexed) entries for \(keysByOffset.count) records"))
        }
        return damage
    }
}
