import Core
import Foundation
import KafkaWire
import RocksDB
import Synchronization

// Appends: a leader's batch stamped with offsets and sequences, a follower's copied as is.
extension PartitionLog {
    /// Appends a batch a producer sent: validates it, gives it the next
    /// offsets, stamps the leader epoch, writes it to the active segment, and
    /// records its location, its conversations' index entries and the
    /// producer's sequence in one RocksDB write. Returns once the
    /// write is durable under the store's durability mode.
    ///
    /// A retry of one of an idempotent producer's last five batches writes
    /// nothing and returns the stored offsets.
    public func append(_ bytes: [UInt8], leaderEpoch: Int32 = 0) async throws -> AppendResult {
        try await write(bytes, leaderEpoch: leaderEpoch).durable()
    }

    /// The first half of `append`: validates and writes the batch, without
    /// waiting for durability. The caller awaits `durable()` on the result
    /// before acknowledging it. Splitting the two lets one connection write
    /// its next request while the previous one waits for its sync, so
    /// consecutive requests share syncs and keep their order.
    ///
    /// `built`: the batch was built in this process a moment ago
    /// (`Broker.appendOne`), so its CRC-32C is not computed again.
    public func write(_ bytes: [UInt8], leaderEpoch: Int32 = 0, built: Bool = false) throws -> PendingAppend {
        var batch: RecordBatch
        var conversations: [[UInt8]] = []
        let configuration = configuration
        do {
            batch = built ? try RecordBatch(builtBytes: bytes, bytesMax: configuration.batchBytesMax)
                : try RecordBatch(validating: bytes, bytesMax: configuration.batchBytesMax)
            try batch.validateForProduce()
            if configuration.timestampType == .logAppendTime {
                batch = try RecordBatch(validating: batch.withLogAppendTime(context.wallClock.nowMilliseconds), bytesMax: configuration.batchBytesMax)
            }
            if conversationIndex {
                conversations = try PartitionLog.conversationKeys(of: batch)
            }
        } catch {
            throw LogStoreError(.batchRefused(error), "batch refused for \(topicName)/\(index): \(error)")
        }
        precondition(leaderEpoch >= 0, "negative leader epoch \(leaderEpoch)")
        let (result, ticket) = try appendLocked(batch, conversations: conversations, leaderEpoch: leaderEpoch)
        return PendingAppend(result: result, ticket: ticket, groupCommit: context.durability == .fsync ? context.groupCommit : nil)
    }

    /// A follower's append: a batch as the leader stored it, offsets and
    /// leader epoch already assigned, kept byte for byte. Its base offset
    /// must be this log's end offset (a follower truncates to the leader's
    /// history before it fetches). Producer sequences and the conversation
    /// index are recorded as on the leader, so the follower can lead next.
    ///
    /// `fence`, from `fenceReplicas`, refuses the append (`.replicaFenced`)
    /// once the log's role has changed since: a fetch answered by a former
    /// leader can arrive long after its request (TCP retransmits across a
    /// healed network cut) and must not land in a log that leads now.
    /// Starts a new role for this log (following a leader, or leading):
    /// copies fenced by an earlier value are refused from now on. Returns
    /// the fence for the new follower's copies.
    public func fenceReplicas() -> UInt64 {
        state.withLock { state in
            state.replicaFence &+= 1
            return state.replicaFence
        }
    }

    public func appendReplica(_ bytes: [UInt8], fence: UInt64? = nil) async throws -> AppendResult {
        try await writeReplica(bytes, fence: fence).durable()
    }

    /// `appendReplica` without waiting for durability: a follower writes
    /// every batch of a fetch answer and then waits once, for the last, so
    /// catching up costs a sync per fetch rather than per batch.
    public func writeReplica(_ bytes: [UInt8], fence: UInt64? = nil) throws -> PendingAppend {
        let batch: RecordBatch
        var conversations: [[UInt8]] = []
        do {
            batch = try RecordBatch(validating: bytes, bytesMax: configuration.batchBytesMax)
            if conversationIndex {
                conversations = try PartitionLog.conversationKeys(of: batch)
            }
        } catch {
            throw LogStoreError(.batchRefused(error), "replicated batch refused for \(topicName)/\(index): \(error)")
        }
        let (result, ticket) = try appendLocked(batch, conversations: conversations, leaderEpoch: batch.partitionLeaderEpoch, replica: true, fence: fence)
        return PendingAppend(result: result, ticket: ticket, groupCommit: context.durability == .fsync ? context.groupCommit : nil)
    }

    static func conversationKeys(of batch: RecordBatch) throws(RecordBatchError) -> [[UInt8]] {
        try batch.recordKeys().enumerated().map { (position, key) throws(RecordBatchError) -> [UInt8] in
            guard let key, !key.isEmpty else {
                throw .invalidRecord("record \(position) has no key; a conversation topic's key is the conversation id")
            }
            guard key.count <= Limits.conversationIDBytesMax else {
                throw .invalidRecord("record \(position)'s conversation id is \(key.count) bytes, over \(Limits.conversationIDBytesMax)")
            }
            return key
        }
    }

    /// `replica`: the batch comes from the leader with its offsets and epoch
    /// set; it is stored unchanged and its producer sequences are recorded
    /// without being judged (the leader judged them).
    func appendLocked(_ incoming: RecordBatch, conversations: [[UInt8]], leaderEpoch: Int32, replica: Bool = false, fence: UInt64? = nil) throws(LogStoreError) -> (AppendResult, UInt64) {
        try state.withLock { state throws(LogStoreError) -> (AppendResult, UInt64) in
            do throws(LogStoreError) {
                return try append(incoming, conversations: conversations, leaderEpoch: leaderEpoch, replica: replica, fence: fence, state: &state)
            } catch {
                // The first batch left unwritten is the gap; batches refused
                // behind it (below) do not move it.
                if !replica && incoming.producerID >= 0 && error.isStorageFailure
                    && state.unwritten[incoming.producerID]?.epoch != incoming.producerEpoch {
                    state.unwritten[incoming.producerID] = UnwrittenBatch(epoch: incoming.producerEpoch, firstSequence: incoming.baseSequence, code: error.code)
                }
                throw error
            }
        }
    }

    /// `appendLocked`'s work, under the state's lock.
    private func append(_ incoming: RecordBatch, conversations: [[UInt8]], leaderEpoch: Int32, replica: Bool, fence: UInt64?, state: inout State) throws(LogStoreError) -> (AppendResult, UInt64) {
        guard !state.isDeleted else { throw LogStoreError(.unknownTopic, "topic \(topicName) was deleted") }
        if let fence, fence != state.replicaFence {
            throw LogStoreError(.replicaFenced, "\(topicName)/\(index) no longer follows the leader this batch came from")
        }
        if let failure = context.groupCommit.failed {
            throw LogStoreError(.storageFailed, "the store refuses appends after a failed segment sync: \(failure)")
        }
        if let last = state.epochs.last, leaderEpoch < last.epoch {
            throw LogStoreError(.staleLeaderEpoch, "leader epoch \(leaderEpoch) is older than \(last.epoch)")
        }
        // Before anything is written, so a failure refuses this batch whole.
        if state.pending.appends >= Limits.pendingAppendEntriesMax {
            try writePendingEntries(&state)
        }
        // A compacted topic's leader may have no batch at the follower's
        // log end (compaction emptied it): the copy begins after the gap.
        let gapAllowed = replica && incoming.baseOffset > state.logEndOffset && configuration.cleanupPolicy.contains(.compact)
        if replica && incoming.baseOffset != state.logEndOffset && !gapAllowed {
            throw LogStoreError(.offsetOutOfRange, "replicated batch at offset \(incoming.baseOffset) does not follow the log end offset \(state.logEndOffset) of \(topicName)/\(index)")
        }
        var producerEntry: ProducerEntry? = nil
        if incoming.producerID >= 0 && replica {
            producerEntry = state.producers[incoming.producerID]
        } else if incoming.producerID >= 0 {
            producerEntry = state.producers[incoming.producerID]
            let verdict: SequenceVerdict
            do throws(LogStoreError) {
                verdict = try ProducerEntry.verdict(
                    for: producerEntry, epoch: incoming.producerEpoch,
                    firstSequence: incoming.baseSequence, lastSequence: incoming.lastSequence)
            } catch where error.code == .outOfOrderSequence {
                // The gap is a batch this store failed to write (a full
                // disk): the batches the producer had sent behind it get
                // that batch's retriable refusal, not "out of order".
                // librdkafka 2.0.2 answers out of order on a batch after
                // the first in flight by starting a new producer epoch,
                // and re-sends under it what it had in flight to other
                // partitions, stored or not: duplicates (librdkafka issue
                // 4953; the fault campaign's seed 20261206, round 85).
                if let unwritten = state.unwritten[incoming.producerID], unwritten.epoch == incoming.producerEpoch,
                   let last = producerEntry?.batches.last, last.lastSequence &+ 1 == unwritten.firstSequence,
                   incoming.baseSequence > unwritten.firstSequence {
                    throw LogStoreError(unwritten.code, "sequence \(incoming.baseSequence) follows sequence \(unwritten.firstSequence), which this store could not write; both are taken once it can")
                }
                throw error
            }
            if case .duplicate(let base, let last) = verdict {
                // The original may still be waiting for its sync: the retry
                // is answered only once a sync covers everything written.
                let result = AppendResult(baseOffset: base, lastOffset: last, isDuplicate: true, logStartOffset: state.logStartOffset)
                return (result, context.groupCommit.noteWrite(nil))
            }
        }

        let batch = incoming
        let baseOffset = state.logEndOffset
        // The stamp changes only the first 16 bytes (outside the CRC): the
        // segment gets them and the untouched rest in one pwritev, with no
        // stamped copy of the batch. A replica's batch already carries them.
        let stamped = batch.stampedPrefix(baseOffset: baseOffset, partitionLeaderEpoch: leaderEpoch)
        let (segment, position) = try segmentForAppend(at: baseOffset, sizeBytes: batch.sizeBytes, state: &state)
        try segment.write(head: stamped, rest: batch.bytes, at: position)
        let location = BatchLocation(
            segmentBase: segment.baseOffset, position: position, sizeBytes: batch.sizeBytes,
            lastOffset: baseOffset + Int64(batch.lastOffsetDelta), maxTimestamp: batch.maxTimestamp)
        do throws(LogStoreError) {
            // Into the waiting entries (`PendingEntries`): after a crash of
            // the machine or of the process, opening the store rebuilds them
            // from the segment (recoverSegments). `state` is changed in
            // place, not through a copy assigned back: `record` throws only
            // before it changes anything, and a copy made every append's
            // first change to the producers' and the conversations'
            // dictionaries copy them whole.
            try record(batch, location: location, leaderEpoch: leaderEpoch, conversations: conversations, producerEntry: producerEntry, state: &state)
        } catch {
            // Nothing changed in memory and no entry was added; the segment
            // is cut back so the next batch takes this place.
            try? segment.truncate(to: position)
            throw error
        }
        if context.durability != .fsync {
            state.bytesSinceWriteback += Int64(batch.sizeBytes)
            if state.bytesSinceWriteback >= PartitionLog.writebackBytes {
                state.bytesSinceWriteback = 0
                context.groupCommit.requestWriteback(segment)
            }
        } else if batch.sizeBytes < Limits.segmentPreparedBatchBytesMax {
            let ahead = PartitionLog.bytesToPrepare(segmentHolding: location.end)
            if ahead > 0 && segment.preparedBytesAhead < ahead / 2 {
                context.groupCommit.requestPreparation(segment, ahead: ahead, limit: configuration.segmentBytes ?? context.segmentBytes)
            }
        }
        if incoming.producerID >= 0 { state.unwritten.removeValue(forKey: incoming.producerID) }
        let result = AppendResult(baseOffset: baseOffset, lastOffset: location.lastOffset, isDuplicate: false, logStartOffset: state.logStartOffset)
        return (result, context.groupCommit.noteWrite(context.durability == .fsync ? segment : nil))
    }

    /// The segment and position for a batch of `sizeBytes` starting at
    /// `baseOffset`: the end of the active segment, or a new segment once the
    /// active one is full (a batch never spans two segments).
    func segmentForAppend(at baseOffset: Int64, sizeBytes: Int, state: inout State) throws(LogStoreError) -> (SegmentFile, Int64) {
        let segmentBytes = configuration.segmentBytes ?? context.segmentBytes
        if let active = state.segments.last, !state.activeClosed, state.activeSize == 0 || state.activeSize + Int64(sizeBytes) <= segmentBytes {
            return (active, state.activeSize)
        }
        if state.segments.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw LogStoreError(.io(EIO), "cannot create \(directory): \(error)")
            }
            if context.durability == .fsync { try SegmentFile.syncDirectory(context.segmentsPath) }
        }
        // The segment that stops being active ends where its last batch
        // does, without the zeros written out ahead of it. (Should this
        // fail, opening the store after a crash cuts them.)
        if let active = state.segments.last { try? active.retire(at: state.activeSize) }
        let segment = try SegmentFile(directory: directory, baseOffset: baseOffset, create: true)
        // The new file's name must survive a machine crash as its batches do.
        if context.durability == .fsync { try SegmentFile.syncDirectory(directory) }
        state.segments.append(segment)
        state.activeSize = 0
        state.activeClosed = false
        state.activeFirstTimestamp = nil
        return (segment, 0)
    }

    /// How far ahead of its last batch an `fsync`-mode segment holding
    /// `bytes` is written out (`SegmentFile.prepare`): as much as it holds,
    /// between `Limits.segmentPreparedBytesMin` and `…Max`, so a partition
    /// written to rarely keeps no zeros and a busy one a few MiB.
    static func bytesToPrepare(segmentHolding bytes: Int64) -> Int64 {
        bytes < Limits.segmentPreparedBytesMin ? 0 : min(bytes, Limits.segmentPreparedBytesMax)
    }

    /// Records a batch stored at `location` in `state` and in its waiting
    /// RocksDB entries (`PendingEntries`: its location, its conversations'
    /// index entries with their sequences, a new leader epoch; the partition
    /// state and the producer's sequences follow when they are written).
    /// Appends and recovery's replay of a segment share it, so a replayed
    /// batch gets exactly the entries its append gave it. Throws only
    /// before it adds an entry (a sequence looked up in the index).
    func record(
        _ batch: RecordBatch, location: BatchLocation, leaderEpoch: Int32, conversations: [[UInt8]],
        producerEntry: ProducerEntry?, state: inout State
    ) throws(LogStoreError) {
        let families = context.families
        let baseOffset = location.lastOffset - Int64(batch.lastOffsetDelta)
        var sequences: [UInt64] = []
        var assigned: [[UInt8]: UInt64] = [:]
        if !conversations.isEmpty {
            sequences.reserveCapacity(conversations.count)
            for conversation in conversations {
                let sequence: UInt64
                if let next = assigned[conversation] {
                    sequence = next
                } else {
                    sequence = try nextSequence(for: conversation, state: &state)
                }
                assigned[conversation] = sequence + 1
                sequences.append(sequence)
            }
        }

        let write = state.pending.write
        write.put(Keys.batch(prefix: prefix, baseOffset: baseOffset), location.encoded(), in: families.log)
        for (position, conversation) in conversations.enumerated() {
            var value = [UInt8]()
            Keys.append(&value, baseOffset + Int64(position))
            Keys.append(&value, baseOffset)
            let conversationPrefix = Keys.conversation(prefix: prefix, conversation: conversation)
            write.put(Keys.conversationEntry(conversationPrefix: conversationPrefix, sequence: sequences[position]), value, in: families.conversationIndex)
        }
        state.pending.locations.append((baseOffset, location))
        // Callers write the waiting entries before a record would pass the limit.
        precondition(state.pending.appends <= Limits.pendingAppendEntriesMax, "\(state.pending.appends) appends' entries wait in \(topicName)/\(index)")

        state.logEndOffset = location.lastOffset + 1
        state.sizeBytes += Int64(location.sizeBytes)
        state.batchCount += 1
        if state.activeSize == 0 || state.activeFirstTimestamp == nil { state.activeFirstTimestamp = location.maxTimestamp }
        state.activeSize = location.end
        if state.epochs.last?.epoch != leaderEpoch {
            state.epochs.append(EpochEntry(epoch: leaderEpoch, startOffset: baseOffset))
            var value = [UInt8]()
            Keys.append(&value, baseOffset)
            write.put(Keys.epoch(prefix: prefix, epoch: leaderEpoch), value, in: families.epochs)
        }
        if batch.producerID >= 0 {
            let entry = ProducerEntry.recording(
                producerEntry, epoch: batch.producerEpoch,
                batch: .init(firstSequence: batch.baseSequence, lastSequence: batch.lastSequence, baseOffset: baseOffset, lastOffset: location.lastOffset))
            state.producers[batch.producerID] = entry
            state.pending.producers.insert(batch.producerID)
        }
        for (conversation, next) in assigned { state.nextSequences.set(next, for: conversation) }
    }

    /// The next sequence of a conversation: from the cache, or one past the
    /// last index entry, once the waiting entries are in the index (the
    /// batch being recorded has added none yet).
    func nextSequence(for conversation: [UInt8], state: inout State) throws(LogStoreError) -> UInt64 {
        if let cached = state.nextSequences.get(conversation) { return cached }
        try writePendingEntries(&state)
        let conversationPrefix = Keys.conversation(prefix: prefix, conversation: conversation)
        let iterator = context.database.makeIterator(
            in: context.families.conversationIndex, lowerBound: conversationPrefix, upperBound: Keys.end(of: conversationPrefix))
        iterator.seekToLast()
        let next = iterator.isValid ? Keys.readUInt64(iterator.keyView, at: conversationPrefix.count) + 1 : 1
        try storage { try iterator.checkError() }
        return next
    }
}
