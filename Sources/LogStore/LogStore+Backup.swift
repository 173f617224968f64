import Foundation
import Glibc
import RocksDB
import Synchronization

/// Held while segment files are cut, replaced or removed (truncation,
/// retention, compaction's swap, topics made or deleted), and by a backup
/// while it takes its checkpoint and copies the segments. Appends never
/// take it: they only add bytes past the cut a backup makes, and a new
/// segment a backup does not need. Taken before a partition's lock or the
/// topic table's, never after.
final class SegmentLayoutLock: @unchecked Sendable {
    // NSLock rather than Mutex: the bodies return values that are not Sendable.
    private let lock = NSLock()

    func around<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}

/// What a backup copied.
public struct BackupSummary: Sendable, Equatable {
    public var path: String
    public var partitions = 0
    /// Closed segments, hard-linked: they never change again, and a
    /// retention or compaction that replaces them later leaves the link's
    /// file as it was.
    public var segmentsLinked = 0
    /// Active segments, copied: appends go on into them.
    public var segmentsCopied = 0
    public var bytesLinked: Int64 = 0
    public var bytesCopied: Int64 = 0

    public init(path: String) {
        self.path = path
    }
}

// A backup of a running store: a data directory that `LogStore(path:)`
// opens like one a crash left behind.
extension LogStore {
    /// Copies the store to `directory` (a new folder on the same file
    /// system, for the hard links) without stopping appends or reads:
    ///
    /// 1. Under the layout lock (no segment is cut, replaced or removed and
    ///    no topic made or deleted meanwhile), a RocksDB checkpoint: the
    ///    batch locations, conversation index, producer state, group
    ///    offsets and topics as of one moment. That moment is the cut of
    ///    every partition: its last location there.
    /// 2. Still under the lock, each partition's closed segments are
    ///    hard-linked and its active one copied. An append writes its
    ///    segment before RocksDB, so every location the checkpoint holds
    ///    names bytes the copy has; what the copy holds past the cut is
    ///    what opening a store after a crash replays (checked batch by
    ///    batch, a torn tail cut off), so the backup opens to at least the
    ///    cut, in order, with nothing invented.
    /// 3. Everything synced, the folders too.
    public func backup(to directory: String) throws(LogStoreError) -> BackupSummary {
        let target = URL(fileURLWithPath: directory).standardizedFileURL.path
        guard !FileManager.default.fileExists(atPath: target) else {
            throw LogStoreError(.io(EEXIST), "\(target) already exists: a backup goes to a folder of its own")
        }
        let parent = URL(fileURLWithPath: target).deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: parent) else {
            throw LogStoreError(.io(ENOENT), "\(parent) does not exist")
        }
        var summary = BackupSummary(path: target)
        var toSync: [String] = []
        try context.layout.around { () throws(LogStoreError) in
            // Not needed for a backup that opens (what the checkpoint lacks,
            // the copied segments hold and opening replays), but it keeps
            // that replay short.
            for partition in allPartitions { try partition.writePendingEntries() }
            try storage { try context.database.checkpoint(to: target) }
            let segmentsTarget = target + "/segments"
            try Self.makeDirectory(segmentsTarget)
            for partition in allPartitions {
                let folder = segmentsTarget + "/" + URL(fileURLWithPath: partition.directory).lastPathComponent
                try Self.makeDirectory(folder)
                summary.partitions += 1
                // The active segment is copied as far as its batches go,
                // without zeros written out ahead of them.
                let (segments, activeSize) = partition.state.withLock { ($0.segments, $0.activeSize) }
                for (position, segment) in segments.enumerated() {
                    let copy = folder + "/" + URL(fileURLWithPath: segment.path).lastPathComponent
                    if position < segments.count - 1 {
                        guard link(segment.path, copy) == 0 else { throw SegmentFile.failure("link", copy) }
                        summary.segmentsLinked += 1
                        summary.bytesLinked += try segment.size()
                    } else {
                        summary.bytesCopied += try segment.copyPrefix(activeSize, to: copy)
                        summary.segmentsCopied += 1
                    }
                    toSync.append(copy)
                }
                toSync.append(folder)
            }
            toSync.append(segmentsTarget)
        }
        // Outside the lock: the links hold the files as they were.
        for path in toSync { try Self.syncPath(path) }
        try Self.syncPath(target)
        try SegmentFile.syncDirectory(parent)
        return summary
    }

    private static func makeDirectory(_ path: String) throws(LogStoreError) {
        guard mkdir(path, 0o750) == 0 else { throw SegmentFile.failure("mkdir", path) }
    }

    private static func syncPath(_ path: String) throws(LogStoreError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw SegmentFile.failure("open", path) }
        defer { Glibc.close(descriptor) }
        guard fsync(descriptor) == 0 else { throw SegmentFile.failure("fsync", path) }
    }
}
