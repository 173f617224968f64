import Foundation
import KafkaWire
import RocksDB
import Synchronization

// Reads: batches from an offset (Fetch) and the offset of a timestamp (ListOffsets).
extension PartitionLog {
    /// Whole batches from `offset` on: the batch holding `offset` first (even
    /// when it starts earlier, and even when it alone exceeds `bytesMax`, as
    /// KIP-74 asks), then following batches while they fit in `bytesMax`.
    /// Stops before `maxOffset` (a consumer passes the high watermark; the
    /// default is the log end offset).
    public func read(from offset: Int64, bytesMax: Int, maxOffset: Int64? = nil) throws(LogStoreError) -> LogRead {
        let (start, end, highWatermark, segments, tail) = try state.withLock { state throws(LogStoreError) in
            // A read from among the waiting appends takes their locations
            // (`PendingEntries`); any other writes them first and asks RocksDB.
            if let first = state.pending.locations.first, offset >= first.baseOffset {
                let limit = min(maxOffset ?? state.logEndOffset, state.logEndOffset)
                return (state.logStartOffset, state.logEndOffset, state.highWatermark, state.segments,
                        Optional(PartitionLog.locations(in: state.pending.locations, from: offset, before: limit, bytesMax: bytesMax)))
            }
            try writePendingEntries(&state)
            return (state.logStartOffset, state.logEndOffset, state.highWatermark, state.segments, nil)
        }
        guard offset >= start && offset <= end else {
            throw LogStoreError(.offsetOutOfRange, "offset \(offset) is outside \(topicName)/\(index)'s log [\(start), \(end)]")
        }
        var result = LogRead(batches: [], highWatermark: highWatermark, logStartOffset: start, logEndOffset: end)
        let limit = min(maxOffset ?? end, end)
        guard offset < limit else { return result }
        if let tail {
            result.batches = try readBatches(at: tail, segments: segments)
            return result
        }
        let iterator = context.database.makeIterator(
            in: context.families.log, lowerBound: prefix, upperBound: Keys.batch(prefix: prefix, baseOffset: limit))
        iterator.seekForPrevious(Keys.batch(prefix: prefix, baseOffset: offset))
        if !iterator.isValid || (BatchLocation(iterator.valueView)?.lastOffset ?? -1) < offset {
            iterator.seek(Keys.batch(prefix: prefix, baseOffset: offset))
        }
        var locations: [BatchLocation] = []
        var bytesCount = 0
        while iterator.isValid {
            guard let location = BatchLocation(iterator.valueView) else {
                throw LogStoreError(.corrupt, "a batch location of \(topicName)/\(index) is unreadable")
            }
            if !locations.isEmpty && bytesCount + location.sizeBytes > bytesMax { break }
            locations.append(location)
            bytesCount += location.sizeBytes
            if bytesCount >= bytesMax { break }
            iterator.next()
        }
        try storage { try iterator.checkError() }
        result.batches = try readBatches(at: locations, segments: segments)
        return result
    }

    /// The locations a read from `offset` takes out of `newest` (the log's
    /// newest batches, in offset order, `offset` at or after the first's
    /// base): the batch holding `offset` and those after it, below `limit`,
    /// while they fit in `bytesMax` (the first always), as a read of
    /// RocksDB's entries would give them.
    static func locations(in newest: [(baseOffset: Int64, location: BatchLocation)], from offset: Int64, before limit: Int64,
                          bytesMax: Int) -> [BatchLocation] {
        var locations: [BatchLocation] = []
        var bytesCount = 0
        for (baseOffset, location) in newest where location.lastOffset >= offset {
            guard baseOffset < limit else { break }
            if !locations.isEmpty && bytesCount + location.sizeBytes > bytesMax { break }
            locations.append(location)
            bytesCount += location.sizeBytes
            if bytesCount >= bytesMax { break }
        }
        return locations
    }

    /// The segment of a base offset: from a snapshot of the segment list,
    /// or, when the snapshot predates the segment and the caller does not
    /// hold the lock, from the current list.
    func segment(base: Int64, in segments: [SegmentFile], refreshable: Bool) -> SegmentFile? {
        if let found = segments.segment(base: base) { return found }
        guard refreshable else { return nil }
        return state.withLock { $0.segments.segment(base: base) }
    }

    /// Reads batches from their segments (the caller does not hold the
    /// state's lock): neighbours in one segment (the
    /// usual case: consecutive batches are written back to back) in one
    /// `pread`. Stops early, returning what it has, when a segment is gone
    /// or shorter than a location says: truncation or retention removed it
    /// after the locations were read, and the reader asks again.
    func readBatches(at locations: [BatchLocation], segments: [SegmentFile]) throws(LogStoreError) -> [[UInt8]] {
        var batches: [[UInt8]] = []
        batches.reserveCapacity(locations.count)
        var runStart = locations.startIndex
        while runStart < locations.endIndex {
            var runEnd = runStart + 1
            while runEnd < locations.endIndex && locations[runEnd].segmentBase == locations[runStart].segmentBase
                && locations[runEnd].position == locations[runEnd - 1].end
            {
                runEnd += 1
            }
            let first = locations[runStart]
            guard let segment = segment(base: first.segmentBase, in: segments, refreshable: true) else { break }
            let length = Int(locations[runEnd - 1].end - first.position)
            let bytes = try segment.read(at: first.position, count: length)
            var cursor = 0
            for location in locations[runStart..<runEnd] {
                guard cursor + location.sizeBytes <= bytes.count else { return batches }
                let batch = runEnd - runStart == 1 ? bytes : Array(bytes[cursor..<(cursor + location.sizeBytes)])
                // A follower's truncation may have cut and rewritten this
                // place since the location was read: hand out only the
                // batch the location speaks of.
                guard PartitionLog.holds(batch, location) else { return batches }
                batches.append(batch)
                cursor += location.sizeBytes
            }
            runStart = runEnd
        }
        return batches
    }

    /// One stored batch, read from its segment; nil when the segment is gone
    /// or too short (see `readBatches`).
    /// `refreshable`: the caller does not hold the state's lock, and a
    /// segment missing from its snapshot (rolled since) is looked up again.
    /// `checked`: only the batch the location speaks of (its header names
    /// the location's last offset); `verify` reads unchecked, to report
    /// what is wrong with the bytes there.
    func readBatch(at location: BatchLocation, segments: [SegmentFile], refreshable: Bool = false, checked: Bool = true) throws(LogStoreError) -> [UInt8]? {
        guard let segment = segment(base: location.segmentBase, in: segments, refreshable: refreshable) else { return nil }
        let bytes = try segment.read(at: location.position, count: location.sizeBytes)
        guard bytes.count == location.sizeBytes else { return nil }
        return !checked || PartitionLog.holds(bytes, location) ? bytes : nil
    }

    /// Whether bytes read at a location are the batch it speaks of: the
    /// header names its last offset and its length. (A compaction's swap can
    /// put a shorter batch of the same offsets where a reader with an older
    /// segment list looks: the length tells them apart.)
    static func holds(_ batch: [UInt8], _ location: BatchLocation) -> Bool {
        guard lastOffset(of: batch) == location.lastOffset else { return false }
        let length = batch.withUnsafeBytes { Int(Int32(bitPattern: Keys.readUInt32($0, at: 8))) }
        return length + RecordBatch.lengthFieldEndCount == location.sizeBytes
    }

    /// The last offset a stored batch's header names (base offset plus
    /// last offset delta), or nil when the bytes are too short for a header.
    static func lastOffset(of batch: [UInt8]) -> Int64? {
        guard batch.count >= RecordBatch.headerBytesCount else { return nil }
        return batch.withUnsafeBytes { bytes in
            Int64(bitPattern: Keys.readUInt64(bytes, at: 0)) + Int64(Int32(bitPattern: Keys.readUInt32(bytes, at: 23)))
        }
    }

    /// The first record at or after `timestamp` (milliseconds) below
    /// `maxOffset`, with its own timestamp: ListOffsets by time. Batches are
    /// skipped by their newest timestamp, and only the batch that holds the
    /// answer is decoded, so the answer is exact. Nil when no record is that new.
    public func offset(forTimestamp timestamp: Int64, maxOffset: Int64? = nil) throws(LogStoreError) -> (offset: Int64, timestamp: Int64)? {
        let (end, segments) = try withEntriesWritten { ($0.logEndOffset, $0.segments) }
        let limit = min(maxOffset ?? end, end)
        let iterator = context.database.makeIterator(
            in: context.families.log, lowerBound: prefix, upperBound: Keys.batch(prefix: prefix, baseOffset: max(limit, 0)))
        iterator.seekToFirst()
        while iterator.isValid {
            guard let location = BatchLocation(iterator.valueView) else {
                throw LogStoreError(.corrupt, "a batch location of \(topicName)/\(index) is unreadable")
            }
            if location.maxTimestamp >= timestamp, let stored = try readBatch(at: location, segments: segments, refreshable: true) {
                do {
                    let batch = try RecordBatch(storedBytes: stored)
                    for (position, record) in try batch.records().enumerated() {
                        let recordTimestamp = batch.usesLogAppendTime ? batch.maxTimestamp : batch.baseTimestamp + record.timestampDelta
                        let offset = batch.baseOffset + Int64(position)
                        if recordTimestamp >= timestamp && offset < limit { return (offset, recordTimestamp) }
                    }
                } catch {
                    throw LogStoreError(.corrupt, "stored batch \(topicName)/\(index)@\(location.lastOffset) fails its checks: \(error)")
                }
            }
            iterator.next()
        }
        try storage { try iterator.checkError() }
        return nil
    }
}
