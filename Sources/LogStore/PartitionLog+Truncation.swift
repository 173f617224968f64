import Core
import Foundation
import KafkaWire
import RocksDB
import Synchronization

// Truncation: a follower cuts its log back to its leader's history.
extension PartitionLog {
    /// Removes every record at or after `offset` (replication: a follower
    /// drops what the leader does not have). A batch that holds `offset` is
    /// removed whole, so the new log end offset can be below `offset`; it is
    /// returned. The index, epochs, producer state and high watermark follow.
    @discardableResult
    public func truncate(to offset: Int64) throws(LogStoreError) -> Int64 {
        try context.layout.around { () throws(LogStoreError) -> Int64 in try state.withLock { state throws(LogStoreError) -> Int64 in
            guard !state.isDeleted else { throw LogStoreError(.unknownTopic, "topic \(topicName) was deleted") }
            guard offset < state.logEndOffset else { return state.logEndOffset }
            try writePendingEntries(&state)
            let target = max(offset, state.logStartOffset)
            let iterator = context.database.makeIterator(in: context.families.log, lowerBound: prefix, upperBound: Keys.end(of: prefix))
            iterator.seekForPrevious(Keys.batch(prefix: prefix, baseOffset: target))
            if !iterator.isValid || (BatchLocation(iterator.valueView)?.lastOffset ?? -1) < target {
                iterator.seek(Keys.batch(prefix: prefix, baseOffset: target))
            }
            guard iterator.isValid else { return state.logEndOffset }
            let cut = Int64(bitPattern: Keys.readUInt64(iterator.keyView, at: prefix.count))
            var dropped: [BatchLocation] = []
            while iterator.isValid {
                guard let location = BatchLocation(iterator.valueView) else {
                    throw LogStoreError(.corrupt, "a batch location of \(topicName)/\(index) is unreadable")
                }
                dropped.append(location)
                iterator.next()
            }
            try storage { try iterator.checkError() }
            // The conversations whose index entries go; nil (a scan of the
            // whole index) when a dropped batch cannot be read.
            var conversations: Set<[UInt8]>? = nil
            if conversationIndex {
                var found = Set<[UInt8]>()
                for location in dropped {
                    guard let stored = try readBatch(at: location, segments: state.segments) else {
                        conversations = nil
                        break
                    }
                    do {
                        let batch = try RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax)
                        found.formUnion(try PartitionLog.conversationKeys(of: batch))
                        conversations = found
                    } catch {
                        throw LogStoreError(.corrupt, "stored batch in \(topicName)/\(index) fails its checks during truncation: \(error)")
                    }
                }
            }
            // Segments first: a crash between the two leaves RocksDB ahead of
            // the segments, which opening repairs; the other order could let
            // recovery's replay bring the truncated batches back.
            state.truncations &+= 1
            try cutSegments(at: dropped[0], state: &state)
            try applyTruncation(cut: cut, conversations: conversations, state: &state)
            return cut
        } }
    }

    /// Cuts the segments back to where the batch at `location` began: that
    /// segment is shortened and synced, later ones removed.
    ///
    /// A closed segment is never shortened in place: a backup may hold it
    /// as a hard link (`LogStore.backup`), which must keep every byte. Its
    /// kept part is copied to a new file that takes its name instead. The
    /// active segment, which backups copy, is cut in place.
    func cutSegments(at location: BatchLocation, state: inout State) throws(LogStoreError) {
        guard let position = state.segments.firstIndex(where: { $0.baseOffset == location.segmentBase }) else {
            throw LogStoreError(.corrupt, "\(topicName)/\(index) has no segment \(location.segmentBase)")
        }
        let segment = state.segments[position]
        if position < state.segments.count - 1 {
            let kept = segment.path + Self.cutSuffix
            _ = try segment.copyPrefix(location.position, to: kept)
            guard rename(kept, segment.path) == 0 else { throw SegmentFile.failure("rename", kept) }
            try SegmentFile.syncDirectory(directory)
            state.segments[position] = try SegmentFile(directory: directory, baseOffset: segment.baseOffset, create: false)
        } else {
            try segment.truncate(to: location.position)
            try segment.sync()
        }
        let later = state.segments[(position + 1)...]
        if !later.isEmpty {
            later.forEach { $0.unlink() }
            try SegmentFile.syncDirectory(directory)
            state.segments.removeSubrange((position + 1)...)
        }
        state.activeSize = location.position
        state.activeClosed = false
        state.activeFirstTimestamp = nil
    }

    /// A closed segment's kept part while it is copied (`cutSegments`);
    /// opening the store removes one a crash left.
    static let cutSuffix = ".cut"

    /// Removes from RocksDB and `state` everything at or after `cut`: batch
    /// locations, the index entries of `conversations` (of every
    /// conversation, by a scan of the index, when nil), leader epochs,
    /// producer sequences; synced, because the segments were cut already.
    func applyTruncation(cut: Int64, conversations: Set<[UInt8]>?, state: inout State) throws(LogStoreError) {
        let families = context.families
        var droppedBytes: Int64 = 0
        var droppedBatches: Int64 = 0
        let iterator = context.database.makeIterator(
            in: families.log, lowerBound: Keys.batch(prefix: prefix, baseOffset: cut), upperBound: Keys.end(of: prefix))
        iterator.seekToFirst()
        while iterator.isValid {
            droppedBytes += Int64(BatchLocation(iterator.valueView)?.sizeBytes ?? 0)
            droppedBatches += 1
            iterator.next()
        }
        try storage { try iterator.checkError() }

        let write = WriteBatch()
        write.deleteRange(from: Keys.batch(prefix: prefix, baseOffset: cut), to: Keys.end(of: prefix), in: families.log)
        if conversationIndex {
            if let conversations {
                for conversation in conversations {
                    try deleteIndexEntries(of: conversation, where: { $0 >= cut }, fromNewest: true, into: write)
                }
            } else {
                try deleteAllIndexEntries(where: { $0 >= cut }, into: write)
            }
        }
        var next = state
        next.logEndOffset = cut
        next.highWatermark = min(next.highWatermark, cut)
        next.sizeBytes -= droppedBytes
        next.batchCount -= droppedBatches
        if let conversations {
            for conversation in conversations { next.nextSequences.remove(conversation) }
        } else {
            next.nextSequences.removeAll()
        }
        while let last = next.epochs.last, last.startOffset >= cut {
            write.delete(Keys.epoch(prefix: prefix, epoch: last.epoch), in: families.epochs)
            next.epochs.removeLast()
        }
        for (producerID, entry) in next.producers {
            let kept = entry.batches.filter { $0.lastOffset < cut }
            guard kept != entry.batches else { continue }
            let key = Keys.producer(prefix: prefix, producerID: producerID)
            if kept.isEmpty {
                // With no batch left the producer is unknown again, and an
                // unknown producer may continue at any sequence.
                next.producers[producerID] = nil
                write.delete(key, in: families.producers)
            } else {
                let updated = ProducerEntry(epoch: entry.epoch, batches: kept)
                next.producers[producerID] = updated
                write.put(key, updated.encoded(), in: families.producers)
            }
        }
        write.put(prefix, next.encoded(), in: families.partitionState)
        try storage { try context.database.write(write, sync: true) }
        state = next
    }

    /// Deletes every index entry of this partition whose offset matches: a
    /// scan of the partition's whole index, for recovery, which cannot read
    /// the batches whose entries it removes.
    func deleteAllIndexEntries(where matches: (Int64) -> Bool, into write: WriteBatch) throws(LogStoreError) {
        let iterator = context.database.makeIterator(
            in: context.families.conversationIndex, lowerBound: prefix, upperBound: Keys.end(of: prefix), fillCache: false)
        iterator.seekToFirst()
        while iterator.isValid {
            if matches(Int64(bitPattern: Keys.readUInt64(iterator.valueView, at: 0))) {
                write.delete(iterator.key, in: context.families.conversationIndex)
            }
            iterator.next()
        }
        try storage { try iterator.checkError() }
    }

    /// Deletes a conversation's index entries whose offsets match, walking
    /// from the newest (truncation) or the oldest (retention) entry and
    /// stopping at the first that does not match: offsets grow with sequences.
    func deleteIndexEntries(of conversation: [UInt8], where matches: (Int64) -> Bool, fromNewest: Bool, into write: WriteBatch) throws(LogStoreError) {
        let conversationPrefix = Keys.conversation(prefix: prefix, conversation: conversation)
        let iterator = context.database.makeIterator(
            in: context.families.conversationIndex, lowerBound: conversationPrefix, upperBound: Keys.end(of: conversationPrefix))
        if fromNewest { iterator.seekToLast() } else { iterator.seekToFirst() }
        while iterator.isValid {
            let offset = Int64(bitPattern: Keys.readUInt64(iterator.valueView, at: 0))
            guard matches(offset) else { break }
            write.delete(iterator.key, in: context.families.conversationIndex)
            if fromNewest { iterator.previous() } else { iterator.next() }
        }
        try storage { try iterator.checkError() }
    }
}
