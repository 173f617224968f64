import CFileSync
import Foundation
import KafkaWire

#if canImport(Glibc)
import Glibc
#endif

/// One segment file of a partition: stored batches back to back, each
/// exactly as Fetch returns it (the layout of Kafka's own `.log` files), so
/// the file describes itself and recovery can walk it. It is named by the
/// base offset its first batch has (Docs/adr/0013).
///
/// Readers hold the object while they read, so a segment that retention or
/// truncation removes stays readable until the last reader lets go: the
/// descriptor is closed in `deinit`, never while someone may use it.
final class SegmentFile: @unchecked Sendable {
    let baseOffset: Int64
    let path: String
    private let descriptor: Int32
    /// What the file holds beyond its batches, and who writes there
    /// (`prepare`). Guarded by `preparation`'s lock.
    private let preparation = NSCondition()
    /// Where the last write ended (the file's size when opened).
    private var writtenEnd: Int64
    /// How far the file is written out, zeros beyond `writtenEnd`.
    private var preparedEnd: Int64
    /// Zeros are being written there, by `prepare`, outside the lock.
    private var preparing: Range<Int64>?
    /// The file is done growing: no more zeros (set by `retire`).
    private var retired = false
    /// The file's size may have changed since a round last synced its
    /// metadata: it was cut (`truncate`), or opened by this process (a
    /// process before it may have left its last size unsynced).
    private var sizeUnsynced = true
    /// The device the file lives on (`st_dev`): one cache flush covers
    /// every file of a device.
    let device: UInt64
    /// The file system writes over a file's written blocks in place (ext4,
    /// XFS), so writing over them changes no metadata. Copy-on-write file
    /// systems (btrfs, ZFS) move them and change the file's extents.
    let overwritesInPlace: Bool

    static let suffix = ".log"

    static func name(baseOffset: Int64) -> String {
        let digits = String(baseOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + suffix
    }

    /// The base offset a segment file's name holds, or nil for other files.
    static func baseOffset(ofName name: String) -> Int64? {
        guard name.hasSuffix(suffix), name.count == 20 + suffix.count else { return nil }
        return Int64(name.dropLast(suffix.count))
    }

    /// Opens a segment file; `create` makes it, empty (an existing file of
    /// the same name holds nothing recovery kept, so it is emptied).
    convenience init(directory: String, baseOffset: Int64, create: Bool) throws(LogStoreError) {
        try self.init(path: directory + "/" + SegmentFile.name(baseOffset: baseOffset), baseOffset: baseOffset, create: create)
    }

    /// A segment file at `path` (compaction writes one under another name first).
    init(path: String, baseOffset: Int64, create: Bool) throws(LogStoreError) {
        precondition(baseOffset >= 0, "negative segment base offset \(baseOffset)")
        self.baseOffset = baseOffset
        self.path = path
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0)
        let opened = open(path, flags, 0o644)
        guard opened >= 0 else { throw SegmentFile.failure("open", path) }
        descriptor = opened
        var status = stat()
        guard fstat(opened, &status) == 0 else {
            close(opened)
            throw SegmentFile.failure("stat", path)
        }
        writtenEnd = Int64(status.st_size)
        preparedEnd = writtenEnd
        device = UInt64(status.st_dev)
        overwritesInPlace = SegmentFile.inPlaceFileSystems.contains(postduif_file_system_type(opened))
    }

    /// `f_type` of the file systems that write over written blocks in
    /// place: ext2/3/4 and XFS.
    private static let inPlaceFileSystems: Set<Int64> = [0xEF53, 0x5846_5342]

    deinit {
        close(descriptor)
    }

    static func failure(_ operation: String, _ path: String, code: Int32 = errno) -> LogStoreError {
        LogStoreError(.io(code), "\(operation) \(path): \(String(cString: strerror(code)))")
    }

    /// The file's size in bytes.
    func size() throws(LogStoreError) -> Int64 {
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw SegmentFile.failure("stat", path) }
        return Int64(status.st_size)
    }

    /// Writes a stored batch at `position`: its first `head.count` bytes from
    /// `head` (the stamped offsets and epoch), the rest from `whole`. One
    /// system call in the usual case. All or nothing: after a failure (a full
    /// disk) the file is cut back to `position`, so no partial batch stays
    /// in the middle of a segment.
    func write(head: [UInt8], rest whole: [UInt8], at position: Int64) throws(LogStoreError) {
        precondition(head.count <= whole.count, "a batch's head is longer than the batch")
        let end = position + Int64(whole.count)
        preparation.lock()
        // Zeros being written over this place would land on the batch.
        while let preparing, preparing.overlaps(position..<end) { preparation.wait() }
        writtenEnd = max(writtenEnd, end)
        preparation.unlock()
        let failed: Int32? = head.withUnsafeBytes { headBytes in
            whole.withUnsafeBytes { wholeBytes -> Int32? in
                let rest = UnsafeRawBufferPointer(rebasing: wholeBytes[head.count...])
                let total = headBytes.count + rest.count
                var done = 0
                while done < total {
                    let written: Int
                    if done < headBytes.count {
                        var vectors = [
                            iovec(iov_base: UnsafeMutableRawPointer(mutating: headBytes.baseAddress! + done), iov_len: headBytes.count - done),
                            iovec(iov_base: UnsafeMutableRawPointer(mutating: rest.baseAddress), iov_len: rest.count),
                        ]
                        written = pwritev(descriptor, &vectors, 2, off_t(position) + off_t(done))
                    } else {
                        let skip = done - headBytes.count
                        written = pwrite(descriptor, rest.baseAddress! + skip, rest.count - skip, off_t(position) + off_t(done))
                    }
                    if written < 0 {
                        if errno == EINTR { continue }
                        return errno
                    }
                    if written == 0 { return EIO }
                    done += written
                }
                return nil
            }
        }
        if let failed {
            try? truncate(to: position)
            throw SegmentFile.failure("write", path, code: failed)
        }
    }

    /// Copies the first `length` bytes (fewer when the file is shorter) to
    /// a new file at `path` and syncs it; returns the bytes copied. For a
    /// backup's copy of an active segment and a cut of a closed one, whose
    /// file may be a backup's hard link and so must not change in place.
    func copyPrefix(_ length: Int64, to path: String) throws(LogStoreError) -> Int64 {
        let copy = try SegmentFile(path: path, baseOffset: baseOffset, create: true)
        let end = min(length, try size())
        var position: Int64 = 0
        while position < end {
            let bytes = try read(at: position, count: Int(min(Int64(4 << 20), end - position)))
            guard !bytes.isEmpty else { break }
            try copy.write(head: [], rest: bytes, at: position)
            position += Int64(bytes.count)
        }
        try copy.sync()
        return position
    }

    /// Reads `count` bytes at `position`; fewer when the file ends first.
    func read(at position: Int64, count: Int) throws(LogStoreError) -> [UInt8] {
        precondition(count >= 0, "negative read length")
        var failure: Int32? = nil
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            var done = 0
            while done < count {
                let got = pread(descriptor, buffer.baseAddress! + done, count - done, off_t(position) + off_t(done))
                if got < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    break
                }
                if got == 0 { break }
                done += got
            }
            initialized = done
        }
        if let failure { throw SegmentFile.failure("read", path, code: failure) }
        return bytes
    }

    /// Makes every byte written so far durable (`fdatasync`).
    func sync() throws(LogStoreError) {
        if let code = SegmentFile.syncData(descriptor) { throw SegmentFile.failure("fdatasync", path, code: code) }
    }

    /// What a group-commit round must write to make this file's writes
    /// durable (`GroupCommit.sync`). Data alone when every write since the
    /// file was opened lies in blocks written out and synced ahead
    /// (`prepare`) on a file system that writes over them in place, and
    /// its size was synced since it was opened or cut: then neither its
    /// size nor its extents changed. An answer of metadata counts as its
    /// sync: the caller calls `sync()` after this returns.
    func syncNeed() -> SyncNeed {
        preparation.lock()
        defer { preparation.unlock() }
        if overwritesInPlace && writtenEnd <= preparedEnd && !sizeUnsynced { return .data }
        sizeUnsynced = false
        return .dataAndMetadata
    }

    enum SyncNeed {
        /// Its pages written (`writeOut`, or the device's one `fdatasync`
        /// in the round) before a flush of the device's cache.
        case data
        /// `sync` (`fdatasync`).
        case dataAndMetadata
    }

    /// Writes the file's dirty pages and waits until the disk has taken
    /// them (`sync_file_range`), with neither the file's metadata nor the
    /// disk's volatile cache: durable only once an `fdatasync` of a file
    /// on the same device begins after this returns, whose cache flush
    /// covers every write the disk completed before it. A failed writeback
    /// is reported here as `fdatasync` would report it.
    func writeOut() throws(LogStoreError) {
        if postduif_write_out(descriptor) != 0 { throw SegmentFile.failure("sync_file_range", path) }
    }

    /// Asks the kernel to start writing the file's dirty pages now, without
    /// waiting: a group commit starts every segment's writeback before it
    /// waits on any, so their journal commits overlap.
    func startWriteback() {
        _ = postduif_start_writeback(descriptor)
    }

    /// Cuts the file to `size` bytes, zeros written out ahead included.
    func truncate(to size: Int64) throws(LogStoreError) {
        preparation.lock()
        defer { preparation.unlock() }
        while preparing != nil { preparation.wait() }
        while ftruncate(descriptor, off_t(size)) != 0 {
            guard errno == EINTR else { throw SegmentFile.failure("truncate", path) }
        }
        writtenEnd = size
        preparedEnd = size
        sizeUnsynced = true
    }

    /// Bytes written out ahead of the last write: appends there change
    /// neither the file's size nor its blocks.
    var preparedBytesAhead: Int64 {
        preparation.lock()
        defer { preparation.unlock() }
        return preparedEnd - writtenEnd
    }

    /// Writes zeros after the last write, up to `ahead` bytes past it and at
    /// most to `limit`, and syncs them, so that appends in `fsync` mode
    /// land in blocks the file already has (Docs/adr/0034). An `fdatasync`
    /// after an append that grew the file must write the inode and the
    /// extent tree as well as the data, two or three more waits on the
    /// disk; one over written-out blocks writes the data alone.
    ///
    /// Called on a thread of its own: appends go on meanwhile, below the
    /// zeros (one that reaches them waits until they are written). Zeros
    /// are never written over a batch.
    func prepare(ahead: Int64, limit: Int64) -> Preparation {
        precondition(ahead > 0, "nothing to write out")
        preparation.lock()
        let start = max(preparedEnd, writtenEnd)
        let end = min(writtenEnd + ahead, limit)
        guard !retired, preparing == nil, end > start else {
            preparation.unlock()
            return .skipped
        }
        preparing = start..<end
        preparation.unlock()

        // Synced here, not in a group-commit round: a round's `fdatasync`
        // would otherwise write these zeros and the new size for the
        // appends waiting on it.
        //
        // Through a descriptor of its own: the kernel reports a failed
        // writeback once to each open file, so a failure of the appends'
        // pages that this sync sees is still reported to the rounds' next
        // sync on `descriptor`, and no round can take it for a success.
        var outcome = Preparation.written(end - start)
        let own = open(path, O_WRONLY | O_CLOEXEC)
        if own < 0 {
            outcome = .writeFailed(SegmentFile.failure("open", path))
        } else if let code = SegmentFile.writeZeros(own, from: start, to: end) {
            outcome = .writeFailed(SegmentFile.failure("write zeros to", path, code: code))
        } else if let code = SegmentFile.syncData(own) {
            outcome = .syncFailed(SegmentFile.failure("fdatasync", path, code: code))
        }
        if own >= 0 { close(own) }

        preparation.lock()
        defer {
            preparing = nil
            preparation.broadcast()
            preparation.unlock()
        }
        if case .written = outcome {
            preparedEnd = end
        } else {
            // The file goes back to its size before, and appends grow it
            // as they did without this (nothing was written after `start`
            // meanwhile: such a write waits). No second try: on a full
            // disk each would write zeros until it failed.
            _ = ftruncate(descriptor, off_t(start))
            retired = true
            sizeUnsynced = true
        }
        return outcome
    }

    /// What `prepare` did.
    enum Preparation {
        /// Bytes of zeros written out and synced.
        case written(Int64)
        /// Nothing to do: enough is written out, the segment is retired,
        /// or another preparation is under way.
        case skipped
        /// The zeros could not be written (a full disk): appends go on
        /// growing the file, and this segment is not written out again.
        case writeFailed(LogStoreError)
        /// The sync failed: the file's pages, the appends' among them,
        /// may not be on the disk, so the store treats it as a round's
        /// failure.
        case syncFailed(LogStoreError)
    }

    /// No more zeros are written out ahead, and those there are cut: the
    /// file ends at `size`, where its last batch does. For a segment that
    /// stops being the active one, and at a clean close.
    func retire(at size: Int64) throws(LogStoreError) {
        preparation.lock()
        retired = true
        // Zeros being written now count once they are: wait for them.
        while preparing != nil { preparation.wait() }
        let cut = preparedEnd > size
        preparation.unlock()
        if cut { try truncate(to: size) }
    }

    /// Whether the file holds nothing but zeros from `position` to its
    /// end: space written out ahead (`prepare`), not a torn write.
    func isZeros(from position: Int64) throws(LogStoreError) -> Bool {
        let end = try size()
        var cursor = position
        while cursor < end {
            let bytes = try read(at: cursor, count: Int(min(Int64(1 << 20), end - cursor)))
            guard !bytes.isEmpty else { break }
            if bytes.contains(where: { $0 != 0 }) { return false }
            cursor += Int64(bytes.count)
        }
        return true
    }

    private static func writeZeros(_ descriptor: Int32, from start: Int64, to end: Int64) -> Int32? {
        let zeros = [UInt8](repeating: 0, count: Int(min(end - start, 1 << 20)))
        var position = start
        while position < end {
            let written = zeros.withUnsafeBytes { buffer in
                pwrite(descriptor, buffer.baseAddress!, Int(min(Int64(buffer.count), end - position)), off_t(position))
            }
            if written < 0 {
                if errno == EINTR { continue }
                return errno
            }
            if written == 0 { return EIO }
            position += Int64(written)
        }
        return nil
    }

    /// `fdatasync` through EINTR; the error, if it failed.
    private static func syncData(_ descriptor: Int32) -> Int32? {
        while fdatasync(descriptor) != 0 {
            guard errno == EINTR else { return errno }
        }
        return nil
    }

    /// Removes the file's name; open readers keep reading it until they let go.
    func unlink() {
        _ = Glibc.unlink(path)
    }

    /// Syncs a directory, so the files made or removed in it stay made or
    /// removed after a machine crash.
    static func syncDirectory(_ path: String) throws(LogStoreError) {
        let opened = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard opened >= 0 else { throw failure("open directory", path) }
        defer { close(opened) }
        guard fsync(opened) == 0 else { throw failure("fsync directory", path) }
    }
}

/// Where a stored batch lives, the value of its key in the `log` column
/// family: its segment and position, and the header fields that reads,
/// retention and truncation need without reading the batch itself.
struct BatchLocation: Equatable {
    var segmentBase: Int64
    var position: Int64
    var sizeBytes: Int
    var lastOffset: Int64
    var maxTimestamp: Int64

    static let encodedCount = 1 + 8 + 8 + 4 + 8 + 8
    static let formatVersion: UInt8 = 1

    init(segmentBase: Int64, position: Int64, sizeBytes: Int, lastOffset: Int64, maxTimestamp: Int64) {
        self.segmentBase = segmentBase
        self.position = position
        self.sizeBytes = sizeBytes
        self.lastOffset = lastOffset
        self.maxTimestamp = maxTimestamp
    }

    /// Decodes a stored location; nil when the bytes are not one (a store
    /// written by an older layout, or damage).
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count == BatchLocation.encodedCount, bytes[0] == BatchLocation.formatVersion else { return nil }
        segmentBase = Int64(bitPattern: Keys.readUInt64(bytes, at: 1))
        position = Int64(bitPattern: Keys.readUInt64(bytes, at: 9))
        sizeBytes = Int(Keys.readUInt32(bytes, at: 17))
        lastOffset = Int64(bitPattern: Keys.readUInt64(bytes, at: 21))
        maxTimestamp = Int64(bitPattern: Keys.readUInt64(bytes, at: 29))
    }

    func encoded() -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(BatchLocation.encodedCount)
        bytes.append(BatchLocation.formatVersion)
        Keys.append(&bytes, segmentBase)
        Keys.append(&bytes, position)
        Keys.append(&bytes, UInt32(sizeBytes))
        Keys.append(&bytes, lastOffset)
        Keys.append(&bytes, maxTimestamp)
        return bytes
    }

    /// The end of the batch in its segment.
    var end: Int64 { position + Int64(sizeBytes) }
}

extension [SegmentFile] {
    /// The segment whose base offset is `base` (segments are sorted by it).
    func segment(base: Int64) -> SegmentFile? {
        var low = startIndex
        var high = endIndex
        while low < high {
            let middle = (low + high) / 2
            if self[middle].baseOffset < base { low = middle + 1 } else { high = middle }
        }
        return low < endIndex && self[low].baseOffset == base ? self[low] : nil
    }
}
