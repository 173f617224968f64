import Core
import Foundation
import KafkaWire
import RocksDB
import Synchronization

// Conversation history: pages of one conversation through the conversation index.
extension PartitionLog {
    /// A page of one conversation's messages, oldest first, read through the
    /// conversation index without scanning the partition. Only messages
    /// below `maxOffset` are returned (a reader passes the high watermark).
    public func history(conversation: [UInt8], from position: HistoryPosition = .latest, limit: Int, maxOffset: Int64? = nil) throws(LogStoreError) -> [ConversationMessage] {
        guard conversationIndex else {
            throw LogStoreError(.invalidConfiguration, "topic \(topicName) keeps no conversation index")
        }
        guard !conversation.isEmpty && conversation.count <= Limits.conversationIDBytesMax else { return [] }
        let limit = max(0, min(limit, Limits.historyMessagesMax))
        let (start, end, segments) = try withEntriesWritten { ($0.logStartOffset, $0.logEndOffset, $0.segments) }
        let offsetLimit = min(maxOffset ?? end, end)
        let conversationPrefix = Keys.conversation(prefix: prefix, conversation: conversation)
        var lower = conversationPrefix
        var upper = Keys.end(of: conversationPrefix)
        var forward = false
        switch position {
        case .latest:
            break
        case .before(let sequence):
            upper = Keys.conversationEntry(conversationPrefix: conversationPrefix, sequence: sequence)
        case .after(let sequence):
            guard sequence < UInt64.max else { return [] }
            lower = Keys.conversationEntry(conversationPrefix: conversationPrefix, sequence: sequence + 1)
            forward = true
        }
        let iterator = context.database.makeIterator(in: context.families.conversationIndex, lowerBound: lower, upperBound: upper)
        var entries: [(sequence: UInt64, offset: Int64, batchBase: Int64)] = []
        if forward { iterator.seekToFirst() } else { iterator.seekToLast() }
        while iterator.isValid && entries.count < limit {
            let sequence = Keys.readUInt64(iterator.keyView, at: conversationPrefix.count)
            let offset = Int64(bitPattern: Keys.readUInt64(iterator.valueView, at: 0))
            let batchBase = Int64(bitPattern: Keys.readUInt64(iterator.valueView, at: 8))
            if offset >= offsetLimit {
                // Not yet committed: in a forward walk nothing later is either.
                if forward { break }
            } else if offset >= start {
                entries.append((sequence, offset, batchBase))
            }
            if forward { iterator.next() } else { iterator.previous() }
        }
        try storage { try iterator.checkError() }
        if !forward { entries.reverse() }

        // Group the entries by batch so each batch is read and walked once,
        // decoding only this conversation's records.
        var messages: [ConversationMessage] = []
        messages.reserveCapacity(entries.count)
        var groupStart = entries.startIndex
        while groupStart < entries.endIndex {
            let batchBase = entries[groupStart].batchBase
            var groupEnd = groupStart + 1
            while groupEnd < entries.endIndex && entries[groupEnd].batchBase == batchBase { groupEnd += 1 }
            let group = entries[groupStart..<groupEnd]
            groupStart = groupEnd
            let key = Keys.batch(prefix: prefix, baseOffset: batchBase)
            // Retention may have dropped the batch since the index was read.
            // The batch's own CRC-32C (hardware) is its check.
            guard let locationBytes = try storage({ try context.database.get(key, in: context.families.log) }) else { continue }
            guard let location = locationBytes.withUnsafeBytes({ BatchLocation($0) }) else {
                throw LogStoreError(.corrupt, "the location of \(topicName)/\(index)@\(batchBase) is unreadable")
            }
            guard let stored = try readBatch(at: location, segments: segments, refreshable: true) else { continue }
            let batch: RecordBatch
            let records: [Record]
            do {
                batch = try RecordBatch(validating: stored, bytesMax: Limits.batchBytesConfigurableMax)
                records = try batch.records(at: group.map { Int($0.offset - batchBase) })
            } catch {
                throw LogStoreError(.corrupt, "stored batch \(topicName)/\(index)@\(batchBase) fails its checks: \(error)")
            }
            for (entry, record) in zip(group, records) {
                messages.append(ConversationMessage(
                    sequence: entry.sequence, offset: entry.offset, timestamp: batch.baseTimestamp + record.timestampDelta,
                    key: record.key ?? [], value: record.value, headers: record.headers))
            }
        }
        return messages
    }

    /// The number of conversations in this partition's index (a scan of the
    /// index keys, one seek per conversation: for operators, not hot paths).
    public func conversationCount() throws(LogStoreError) -> Int {
        try writePendingEntries()
        let iterator = context.database.makeIterator(in: context.families.conversationIndex, lowerBound: prefix, upperBound: Keys.end(of: prefix), fillCache: false)
        var count = 0
        iterator.seekToFirst()
        while iterator.isValid {
            count += 1
            let key = iterator.keyView
            let length = Int(key[prefix.count])
            let conversation = [UInt8](key[(prefix.count + 1)..<(prefix.count + 1 + length)])
            iterator.seek(Keys.end(of: Keys.conversation(prefix: prefix, conversation: conversation)))
        }
        try storage { try iterator.checkError() }
        return count
    }
}
