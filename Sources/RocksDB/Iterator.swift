import CRocksDB

/// A cursor over one column family, optionally bounded and on a snapshot.
///
/// `key` and `value` views are valid only until the next move. Not
/// thread-safe. The iterator keeps its database open; release it (let it go
/// out of scope) before an explicit `Database.close()`.
public final class Iterator {
    private let database: Database
    private let handle: OpaquePointer
    private let readOptions: OpaquePointer
    // RocksDB keeps pointers to the bound bytes, so they live as long as the iterator.
    private let lowerBound: UnsafeMutableRawBufferPointer?
    private let upperBound: UnsafeMutableRawBufferPointer?
    private let snapshot: Snapshot?

    init(database: Database, family: ColumnFamily, lowerBound: [UInt8]?, upperBound: [UInt8]?, snapshot: Snapshot?, fillCache: Bool) {
        database.childOpened()
        self.database = database
        self.snapshot = snapshot
        readOptions = rocksdb_readoptions_create()
        rocksdb_readoptions_set_fill_cache(readOptions, fillCache ? 1 : 0)
        if let snapshot {
            rocksdb_readoptions_set_snapshot(readOptions, snapshot.handle)
        }
        self.lowerBound = Iterator.copy(lowerBound)
        self.upperBound = Iterator.copy(upperBound)
        if let bound = self.lowerBound {
            rocksdb_readoptions_set_iterate_lower_bound(readOptions, bound.baseAddress?.assumingMemoryBound(to: CChar.self), bound.count)
        }
        if let bound = self.upperBound {
            rocksdb_readoptions_set_iterate_upper_bound(readOptions, bound.baseAddress?.assumingMemoryBound(to: CChar.self), bound.count)
        }
        handle = rocksdb_create_iterator_cf(database.db, readOptions, family.handle)
    }

    private static func copy(_ bytes: [UInt8]?) -> UnsafeMutableRawBufferPointer? {
        guard let bytes else { return nil }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        return UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes.count])
    }

    deinit {
        rocksdb_iter_destroy(handle)
        rocksdb_readoptions_destroy(readOptions)
        lowerBound.map { UnsafeMutableRawBufferPointer(start: $0.baseAddress, count: max($0.count, 1)).deallocate() }
        upperBound.map { UnsafeMutableRawBufferPointer(start: $0.baseAddress, count: max($0.count, 1)).deallocate() }
        database.childClosed()
    }

    public var isValid: Bool { rocksdb_iter_valid(handle) != 0 }

    public func seekToFirst() { rocksdb_iter_seek_to_first(handle) }
    public func seekToLast() { rocksdb_iter_seek_to_last(handle) }

    /// Moves to the first key at or after `key`.
    public func seek(_ key: [UInt8]) {
        key.withUnsafeBufferPointer { k in
            k.withMemoryRebound(to: CChar.self) { rocksdb_iter_seek(handle, $0.baseAddress, $0.count) }
        }
    }

    /// Moves to the last key at or before `key`.
    public func seekForPrevious(_ key: [UInt8]) {
        key.withUnsafeBufferPointer { k in
            k.withMemoryRebound(to: CChar.self) { rocksdb_iter_seek_for_prev(handle, $0.baseAddress, $0.count) }
        }
    }

    public func next() { rocksdb_iter_next(handle) }
    public func previous() { rocksdb_iter_prev(handle) }

    /// The current key, valid until the next move.
    public var keyView: UnsafeRawBufferPointer {
        precondition(isValid, "key of an invalid iterator")
        var length = 0
        let pointer = rocksdb_iter_key(handle, &length)
        return UnsafeRawBufferPointer(start: pointer, count: length)
    }

    /// The current value, valid until the next move.
    public var valueView: UnsafeRawBufferPointer {
        precondition(isValid, "value of an invalid iterator")
        var length = 0
        let pointer = rocksdb_iter_value(handle, &length)
        return UnsafeRawBufferPointer(start: pointer, count: length)
    }

    public var key: [UInt8] { [UInt8](keyView) }
    public var value: [UInt8] { [UInt8](valueView) }

    /// Throws the error that ended iteration, if one did (rather than the end of data).
    public func checkError() throws(RocksDBError) {
        try checked("iterate") { error in rocksdb_iter_get_error(handle, error) }
    }
}

/// A consistent point-in-time view for reads and iterators.
public final class Snapshot: @unchecked Sendable {
    // A snapshot handle is immutable and may be read from any thread.
    private let database: Database
    let handle: OpaquePointer

    init(database: Database) {
        database.childOpened()
        self.database = database
        handle = rocksdb_create_snapshot(database.db)
    }

    deinit {
        rocksdb_release_snapshot(database.db, handle)
        database.childClosed()
    }
}
