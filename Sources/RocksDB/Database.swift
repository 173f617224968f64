import CRocksDB
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A column family of an open database. Valid until the database closes.
public final class ColumnFamily: @unchecked Sendable {
    // RocksDB's column family handles are safe to share between threads.
    let handle: OpaquePointer
    public let name: String

    init(handle: OpaquePointer, name: String) {
        self.handle = handle
        self.name = name
    }
}

/// One RocksDB database, opened with all of its column families.
///
/// RocksDB's `DB` is safe for concurrent use, so this class is `Sendable`.
/// Handles are freed deterministically: `close()` (or the last reference going
/// away) closes the database; iterators and snapshots keep the database alive
/// and must be gone before an explicit `close()`.
public final class Database: @unchecked Sendable {
    let db: OpaquePointer
    private let nativeOptions: NativeOptions
    private let families: [String: ColumnFamily]
    private let state = Mutex(State())
    private let writeOptionsSynced: OpaquePointer
    private let writeOptionsUnsynced: OpaquePointer
    private let readOptions: OpaquePointer
    private let readOptionsUnverified: OpaquePointer
    /// `DatabaseOptions.manualWALFlush`: writes flush the WAL buffer
    /// themselves unless marked `buffered`.
    private let manualWALFlush: Bool
    public let path: String

    private struct State {
        var closed = false
        var openChildrenCount = 0
    }

    /// The default column family's name, which every RocksDB database has.
    public static let defaultColumnFamilyName = "default"

    /// Opens (and by default creates) the database at `path` with the named
    /// column families, creating any that are missing, each with default
    /// options. Column families already on disk but not named are opened too,
    /// so nothing is dropped silently.
    public convenience init(path: String, options settings: DatabaseOptions = DatabaseOptions(), columnFamilies requested: [String]) throws(RocksDBError) {
        try self.init(path: path, options: settings, columnFamilyOptions: requested.map { ($0, settings.defaultColumnFamily) })
    }

    /// Opens the database with per-column-family options.
    public init(path: String, options settings: DatabaseOptions = DatabaseOptions(), columnFamilyOptions requested: [(name: String, options: ColumnFamilyOptions)]) throws(RocksDBError) {
        self.path = path
        manualWALFlush = settings.manualWALFlush
        let nativeOptions = NativeOptions(settings)
        self.nativeOptions = nativeOptions
        var names = [Database.defaultColumnFamilyName]
        for name in Database.existingColumnFamilies(path: path, options: nativeOptions) where !names.contains(name) {
            names.append(name)
        }
        for (name, _) in requested where !names.contains(name) {
            names.append(name)
        }
        let count = names.count
        var handles = [OpaquePointer?](repeating: nil, count: count)
        let cNames = names.map { strdup($0) }
        defer { cNames.forEach { free($0) } }
        let optionsList: [OpaquePointer?] = names.map { name in
            guard let family = requested.first(where: { $0.name == name }) else { return nativeOptions.database }
            return nativeOptions.makeFamilyOptions(family.options)
        }
        let opened: OpaquePointer? = try checked("open \(path)") { error in
            cNames.map { UnsafePointer<CChar>($0) }.withUnsafeBufferPointer { namePointers in
                optionsList.withUnsafeBufferPointer { optionPointers in
                    handles.withUnsafeMutableBufferPointer { handlePointers in
                        rocksdb_open_column_families(
                            nativeOptions.database, path, Int32(count),
                            namePointers.baseAddress, optionPointers.baseAddress,
                            handlePointers.baseAddress, error)
                    }
                }
            }
        }
        guard let opened else {
            throw RocksDBError(operation: "open \(path)", message: "no handle returned")
        }
        db = opened
        var families: [String: ColumnFamily] = [:]
        for (name, handle) in zip(names, handles) {
            precondition(handle != nil, "RocksDB opened without a handle for column family \(name)")
            families[name] = ColumnFamily(handle: handle!, name: name)
        }
        self.families = families
        writeOptionsSynced = rocksdb_writeoptions_create()
        rocksdb_writeoptions_set_sync(writeOptionsSynced, 1)
        writeOptionsUnsynced = rocksdb_writeoptions_create()
        rocksdb_writeoptions_set_sync(writeOptionsUnsynced, 0)
        readOptions = rocksdb_readoptions_create()
        readOptionsUnverified = rocksdb_readoptions_create()
        rocksdb_readoptions_set_verify_checksums(readOptionsUnverified, 0)
    }

    private static func existingColumnFamilies(path: String, options: NativeOptions) -> [String] {
        var count = 0
        var errorPointer: UnsafeMutablePointer<CChar>? = nil
        // A missing database is not an error here: open creates it.
        guard let list = rocksdb_list_column_families(options.database, path, &count, &errorPointer) else {
            if let errorPointer { rocksdb_free(errorPointer) }
            return []
        }
        defer { rocksdb_list_column_families_destroy(list, count) }
        return (0..<count).compactMap { index in list[index].map { String(cString: $0) } }
    }

    deinit {
        closeHandles()
    }

    /// Closes the database now. Safe to call more than once.
    public func close() {
        closeHandles()
    }

    private func closeHandles() {
        let shouldClose = state.withLock { state -> Bool in
            precondition(state.openChildrenCount == 0, "database closed with \(state.openChildrenCount) iterators or snapshots still open")
            if state.closed { return false }
            state.closed = true
            return true
        }
        guard shouldClose else { return }
        if manualWALFlush {
            // A clean close keeps the buffered writes too.
            var error: UnsafeMutablePointer<CChar>? = nil
            rocksdb_flush_wal(db, 0, &error)
            if let error { rocksdb_free(error) }
        }
        for family in families.values {
            rocksdb_column_family_handle_destroy(family.handle)
        }
        rocksdb_close(db)
        rocksdb_writeoptions_destroy(writeOptionsSynced)
        rocksdb_writeoptions_destroy(writeOptionsUnsynced)
        rocksdb_readoptions_destroy(readOptions)
        rocksdb_readoptions_destroy(readOptionsUnverified)
    }

    func childOpened() {
        state.withLock { state in
            precondition(!state.closed, "use of a closed database")
            state.openChildrenCount += 1
        }
    }

    func childClosed() {
        state.withLock { $0.openChildrenCount -= 1 }
    }

    private func assertOpen() {
        state.withLock { precondition(!$0.closed, "use of a closed database") }
    }

    /// The column family with this name, or nil when it was not opened.
    public func columnFamily(_ name: String) -> ColumnFamily? {
        families[name]
    }

    /// Every column family name, in no particular order.
    public var columnFamilyNames: [String] { Array(families.keys) }

    // MARK: Writes

    /// Writes one key. `sync` waits for the WAL to reach the disk.
    public func put(_ key: [UInt8], _ value: [UInt8], in family: ColumnFamily, sync: Bool = false) throws(RocksDBError) {
        let options = sync ? writeOptionsSynced : writeOptionsUnsynced
        try checked("put") { error in
            key.withUnsafeBufferPointer { k in
                value.withUnsafeBufferPointer { v in
                    k.withMemoryRebound(to: CChar.self) { k in
                        v.withMemoryRebound(to: CChar.self) { v in
                            rocksdb_put_cf(db, options, family.handle, k.baseAddress, k.count, v.baseAddress, v.count, error)
                        }
                    }
                }
            }
        }
        if !sync { try flushBuffer() }
    }

    /// Deletes one key.
    public func delete(_ key: [UInt8], in family: ColumnFamily, sync: Bool = false) throws(RocksDBError) {
        let options = sync ? writeOptionsSynced : writeOptionsUnsynced
        try checked("delete") { error in
            key.withUnsafeBufferPointer { k in
                k.withMemoryRebound(to: CChar.self) { k in
                    rocksdb_delete_cf(db, options, family.handle, k.baseAddress, k.count, error)
                }
            }
        }
        if !sync { try flushBuffer() }
    }

    /// Deletes every key in `[start, end)`.
    public func deleteRange(from start: [UInt8], to end: [UInt8], in family: ColumnFamily, sync: Bool = false) throws(RocksDBError) {
        let options = sync ? writeOptionsSynced : writeOptionsUnsynced
        try checked("delete range") { error in
            start.withUnsafeBufferPointer { s in
                end.withUnsafeBufferPointer { e in
                    s.withMemoryRebound(to: CChar.self) { s in
                        e.withMemoryRebound(to: CChar.self) { e in
                            rocksdb_delete_range_cf(db, options, family.handle, s.baseAddress, s.count, e.baseAddress, e.count, error)
                        }
                    }
                }
            }
        }
        if !sync { try flushBuffer() }
    }

    /// Applies a write batch atomically. With `sync` the call returns once the
    /// WAL is on disk; RocksDB lets concurrent synced writers share one sync.
    ///
    /// `buffered` (with `DatabaseOptions.manualWALFlush`): the batch's WAL
    /// record may stay in the process's memory until the next write that
    /// is not buffered, `flushWAL`, or a full buffer; a process that dies
    /// before then loses it, and only the writes after the last flush. For
    /// writes the caller can rebuild after a crash (the log's entries for a
    /// batch, from its segment): they skip a `write(2)` each.
    public func write(_ batch: WriteBatch, sync: Bool, buffered: Bool = false) throws(RocksDBError) {
        let options = sync ? writeOptionsSynced : writeOptionsUnsynced
        try checked("write") { error in
            rocksdb_write(db, options, batch.handle, error)
        }
        if !sync && !buffered { try flushBuffer() }
    }

    /// Hands the WAL buffer to the file (no sync) when writes are buffered,
    /// so an unbuffered write reaches the kernel, with every buffered one
    /// before it, as it would without the buffer.
    private func flushBuffer() throws(RocksDBError) {
        guard manualWALFlush else { return }
        try flushWAL(sync: false)
    }

    /// Makes every write so far durable: with `sync` the WAL is fsynced.
    public func flushWAL(sync: Bool) throws(RocksDBError) {
        try checked("flush WAL") { error in
            rocksdb_flush_wal(db, sync ? 1 : 0, error)
        }
    }

    /// A checkpoint: a consistent copy of the database at `directory`
    /// (which must not exist yet), its SST files hard-linked and the rest
    /// copied, taken while writes go on. The memtables are not flushed
    /// first: the WAL is copied instead, so the checkpoint costs the
    /// writers nothing.
    public func checkpoint(to directory: String) throws(RocksDBError) {
        guard let checkpoint = try checked("checkpoint", { error in rocksdb_checkpoint_object_create(db, error) }) else {
            throw RocksDBError(operation: "checkpoint", message: "no checkpoint object")
        }
        defer { rocksdb_checkpoint_object_destroy(checkpoint) }
        // The copied WAL holds what reached its file: every write so far.
        try flushBuffer()
        try checked("checkpoint") { error in
            rocksdb_checkpoint_create(checkpoint, directory, UInt64.max, error)
        }
    }

    /// Flushes a column family's memtable to an SST file.
    public func flush(_ family: ColumnFamily) throws(RocksDBError) {
        let options = rocksdb_flushoptions_create()
        defer { rocksdb_flushoptions_destroy(options) }
        rocksdb_flushoptions_set_wait(options, 1)
        try checked("flush") { error in
            rocksdb_flush_cf(db, options, family.handle, error)
        }
    }

    /// Compacts `[start, end)` of a column family (nil bounds mean open-ended).
    public func compactRange(from start: [UInt8]?, to end: [UInt8]?, in family: ColumnFamily) {
        withOptionalBytes(start) { s, sCount in
            withOptionalBytes(end) { e, eCount in
                rocksdb_compact_range_cf(db, family.handle, s, sCount, e, eCount)
            }
        }
    }

    // MARK: Reads

    /// Reads one key, from a snapshot when one is given.
    ///
    /// - Parameter verifyChecksums: false skips RocksDB's own block and blob
    ///   checksums (computed in software by Debian's build); for values that
    ///   carry a checksum of their own which the caller checks faster.
    public func get(_ key: [UInt8], in family: ColumnFamily, snapshot: Snapshot? = nil, verifyChecksums: Bool = true) throws(RocksDBError) -> [UInt8]? {
        let options: OpaquePointer
        var snapshotOptions: OpaquePointer? = nil
        if let snapshot {
            snapshotOptions = rocksdb_readoptions_create()
            rocksdb_readoptions_set_snapshot(snapshotOptions, snapshot.handle)
            rocksdb_readoptions_set_verify_checksums(snapshotOptions, verifyChecksums ? 1 : 0)
            options = snapshotOptions!
        } else {
            options = verifyChecksums ? readOptions : readOptionsUnverified
        }
        defer { if let snapshotOptions { rocksdb_readoptions_destroy(snapshotOptions) } }
        let pinned: OpaquePointer? = try checked("get") { error in
            key.withUnsafeBufferPointer { k in
                k.withMemoryRebound(to: CChar.self) { k in
                    rocksdb_get_pinned_cf(db, options, family.handle, k.baseAddress, k.count, error)
                }
            }
        }
        guard let pinned else { return nil }
        defer { rocksdb_pinnableslice_destroy(pinned) }
        var length = 0
        guard let value = rocksdb_pinnableslice_value(pinned, &length) else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: value, count: length))
    }

    /// An iterator over `[lowerBound, upperBound)` of a column family. Bounds
    /// keep RocksDB from reading past the range, which matters with many
    /// deleted keys (tombstones) after the range.
    public func makeIterator(
        in family: ColumnFamily,
        lowerBound: [UInt8]? = nil,
        upperBound: [UInt8]? = nil,
        snapshot: Snapshot? = nil,
        fillCache: Bool = true
    ) -> Iterator {
        Iterator(database: self, family: family, lowerBound: lowerBound, upperBound: upperBound, snapshot: snapshot, fillCache: fillCache)
    }

    /// A consistent view of the database as of now.
    public func makeSnapshot() -> Snapshot {
        Snapshot(database: self)
    }

    // MARK: Properties

    /// A RocksDB property as text, for example `rocksdb.stats`.
    public func property(_ name: String, in family: ColumnFamily? = nil) -> String? {
        let value: UnsafeMutablePointer<CChar>?
        if let family {
            value = rocksdb_property_value_cf(db, family.handle, name)
        } else {
            value = rocksdb_property_value(db, name)
        }
        guard let value else { return nil }
        defer { rocksdb_free(value) }
        return String(cString: value)
    }

    /// A numeric RocksDB property, for example `rocksdb.estimate-num-keys`.
    public func integerProperty(_ name: String, in family: ColumnFamily) -> UInt64? {
        var value: UInt64 = 0
        guard rocksdb_property_int_cf(db, family.handle, name, &value) == 0 else { return nil }
        return value
    }

    /// RocksDB's estimate of the bytes in SST files for keys in
    /// `[start, end)`; data still in memtables is not counted.
    public func approximateSize(from start: [UInt8], to end: [UInt8], in family: ColumnFamily) throws(RocksDBError) -> UInt64 {
        var size: UInt64 = 0
        try checked("approximate size") { error in
            start.withUnsafeBufferPointer { s in
                end.withUnsafeBufferPointer { e in
                    s.withMemoryRebound(to: CChar.self) { s in
                        e.withMemoryRebound(to: CChar.self) { e in
                            var startPointer: UnsafePointer<CChar>? = s.baseAddress
                            var endPointer: UnsafePointer<CChar>? = e.baseAddress
                            var startLength = s.count
                            var endLength = e.count
                            rocksdb_approximate_sizes_cf(db, family.handle, 1, &startPointer, &startLength, &endPointer, &endLength, &size, error)
                        }
                    }
                }
            }
        }
        return size
    }
}

@inline(__always)
func withOptionalBytes<R>(_ bytes: [UInt8]?, _ body: (UnsafePointer<CChar>?, Int) -> R) -> R {
    guard let bytes else { return body(nil, 0) }
    return bytes.withUnsafeBufferPointer { buffer in
        buffer.withMemoryRebound(to: CChar.self) { body($0.baseAddress, $0.count) }
    }
}
