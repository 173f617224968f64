import CRocksDB

/// Block compression for SST files and blob files.
public enum BlockCompression: Sendable {
    case none
    case lz4
    case zstd

    var rawValue: Int32 {
        switch self {
        case .none: Int32(rocksdb_no_compression)
        case .lz4: Int32(rocksdb_lz4_compression)
        case .zstd: Int32(rocksdb_zstd_compression)
        }
    }
}

/// Values at least this large go to blob files instead of the LSM tree
/// (RocksDB's integrated BlobDB): they are written once at flush and never
/// rewritten by compaction, which suits large, write-once values.
public struct BlobSettings: Sendable, Equatable {
    public var valueBytesMin: UInt64
    public var fileBytes: UInt64 = 256 << 20
    public var compression: BlockCompression = .none
    /// Relocate live values out of the oldest blob files during compaction,
    /// so space freed by deletes is returned.
    public var garbageCollection = true

    public init(valueBytesMin: UInt64) {
        self.valueBytesMin = valueBytesMin
    }
}

/// Settings of one column family. Every size is in bytes.
public struct ColumnFamilyOptions: Sendable {
    public var compression: BlockCompression = .lz4
    /// Size of one memtable before it is flushed to an SST file.
    public var writeBufferSizeBytes = 64 << 20
    /// Bloom filter bits per key for point lookups; nil for none.
    public var bloomBitsPerKey: Double? = 10
    /// Large values in blob files; nil keeps every value in the LSM tree.
    public var blobs: BlobSettings? = nil
    /// Overwrite a key's value inside the memtable when the new value is no
    /// larger, instead of adding a version. For families of a few keys each
    /// rewritten on every write: their memtable stays a few entries long, so
    /// an insert does not search a skiplist of every version written since
    /// the last flush. Needs `DatabaseOptions.concurrentMemtableWrites` off,
    /// and readers of the family must not rely on snapshots or iterators
    /// seeing an older value.
    public var inPlaceUpdates = false

    public init() {}
}

/// Database-wide settings.
public struct DatabaseOptions: Sendable {
    public var createIfMissing = true
    public var createMissingColumnFamilies = true
    /// Background flush and compaction threads.
    public var backgroundJobsCount: Int32 = 2
    /// Shared LRU cache for uncompressed blocks.
    public var blockCacheSizeBytes = 64 << 20
    /// WAL size at which RocksDB flushes the column families holding the oldest WAL; 0 lets RocksDB choose.
    public var walSizeTotalMaxBytes: UInt64 = 0
    /// Ask the kernel to write back SST and blob files every this many bytes,
    /// so flushes do not build up one large writeback that stalls WAL syncs.
    public var bytesPerSync: UInt64 = 1 << 20
    /// Options for column families not named when opening.
    public var defaultColumnFamily = ColumnFamilyOptions()
    /// Whether writers of one write group insert into memtables in
    /// parallel; RocksDB refuses it beside `inPlaceUpdates`.
    public var concurrentMemtableWrites = true
    /// Whether a writer waiting for its write group's leader spins (up to
    /// 100 µs, RocksDB's adaptive yield) before it sleeps. On a machine of
    /// few cores shared with request threads the spin takes the core the
    /// leader or the next request needs.
    public var spinningWriters = true
    /// Whether the WAL is kept in RocksDB's buffer until a flush
    /// (RocksDB's `manual_wal_flush`). `Database` then flushes after every
    /// write except those marked `buffered`, so only those can be lost
    /// with the process, and only after every write that came before them:
    /// the WAL that reaches the file is always a prefix of the writes.
    public var manualWALFlush = false

    public init() {}
}

/// The native handles behind the options of one database, freed together.
final class NativeOptions {
    let database: OpaquePointer
    private let cache: OpaquePointer
    private var tableOptions: [OpaquePointer] = []
    private var familyOptions: [OpaquePointer] = []

    init(_ settings: DatabaseOptions) {
        cache = rocksdb_cache_create_lru(settings.blockCacheSizeBytes)
        database = rocksdb_options_create()
        rocksdb_options_set_create_if_missing(database, settings.createIfMissing ? 1 : 0)
        rocksdb_options_set_create_missing_column_families(database, settings.createMissingColumnFamilies ? 1 : 0)
        rocksdb_options_increase_parallelism(database, settings.backgroundJobsCount)
        rocksdb_options_set_max_background_jobs(database, settings.backgroundJobsCount)
        rocksdb_options_set_max_total_wal_size(database, settings.walSizeTotalMaxBytes)
        rocksdb_options_set_bytes_per_sync(database, settings.bytesPerSync)
        rocksdb_options_set_allow_concurrent_memtable_write(database, settings.concurrentMemtableWrites ? 1 : 0)
        rocksdb_options_set_enable_write_thread_adaptive_yield(database, settings.spinningWriters ? 1 : 0)
        rocksdb_options_set_manual_wal_flush(database, settings.manualWALFlush ? 1 : 0)
        apply(settings.defaultColumnFamily, to: database)
    }

    /// Options for one column family: the database's, with the family's settings on top.
    func makeFamilyOptions(_ settings: ColumnFamilyOptions) -> OpaquePointer {
        let options = rocksdb_options_create_copy(database)!
        apply(settings, to: options)
        familyOptions.append(options)
        return options
    }

    private func apply(_ settings: ColumnFamilyOptions, to options: OpaquePointer) {
        rocksdb_options_set_compression(options, settings.compression.rawValue)
        rocksdb_options_set_write_buffer_size(options, settings.writeBufferSizeBytes)
        rocksdb_options_set_inplace_update_support(options, settings.inPlaceUpdates ? 1 : 0)
        let table = rocksdb_block_based_options_create()!
        rocksdb_block_based_options_set_block_cache(table, cache)
        if let bits = settings.bloomBitsPerKey {
            // The table options take ownership of the filter policy.
            rocksdb_block_based_options_set_filter_policy(table, rocksdb_filterpolicy_create_bloom(bits))
        }
        rocksdb_options_set_block_based_table_factory(options, table)
        tableOptions.append(table)
        if let blobs = settings.blobs {
            rocksdb_options_set_enable_blob_files(options, 1)
            rocksdb_options_set_min_blob_size(options, blobs.valueBytesMin)
            rocksdb_options_set_blob_file_size(options, blobs.fileBytes)
            rocksdb_options_set_blob_compression_type(options, blobs.compression.rawValue)
            rocksdb_options_set_enable_blob_gc(options, blobs.garbageCollection ? 1 : 0)
        }
    }

    deinit {
        familyOptions.forEach { rocksdb_options_destroy($0) }
        rocksdb_options_destroy(database)
        tableOptions.forEach { rocksdb_block_based_options_destroy($0) }
        rocksdb_cache_destroy(cache)
    }
}
