import CRocksDB

/// Block compression for SST files.
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

/// Options for opening a database. The defaults suit a write-heavy log on a
/// small machine; every size is in bytes.
public struct DatabaseOptions: Sendable {
    public var createIfMissing = true
    public var createMissingColumnFamilies = true
    public var compression: BlockCompression = .lz4
    /// Size of one memtable before it is flushed to an SST file.
    public var writeBufferSizeBytes = 64 << 20
    /// Background flush and compaction threads.
    public var backgroundJobsCount: Int32 = 2
    /// Shared LRU cache for uncompressed blocks.
    public var blockCacheSizeBytes = 64 << 20
    /// Bloom filter bits per key for point lookups; nil for none.
    public var bloomBitsPerKey: Double? = 10
    /// WAL size at which RocksDB flushes the column families holding the oldest WAL; 0 lets RocksDB choose.
    public var walSizeTotalMaxBytes: UInt64 = 0

    public init() {}
}

/// The handles behind a `DatabaseOptions`, freed together.
final class NativeOptions {
    let options: OpaquePointer
    private let tableOptions: OpaquePointer
    private let cache: OpaquePointer

    init(_ settings: DatabaseOptions) {
        options = rocksdb_options_create()
        rocksdb_options_set_create_if_missing(options, settings.createIfMissing ? 1 : 0)
        rocksdb_options_set_create_missing_column_families(options, settings.createMissingColumnFamilies ? 1 : 0)
        rocksdb_options_set_compression(options, settings.compression.rawValue)
        rocksdb_options_set_write_buffer_size(options, settings.writeBufferSizeBytes)
        rocksdb_options_increase_parallelism(options, settings.backgroundJobsCount)
        rocksdb_options_set_max_background_jobs(options, settings.backgroundJobsCount)
        rocksdb_options_set_max_total_wal_size(options, settings.walSizeTotalMaxBytes)
        tableOptions = rocksdb_block_based_options_create()
        cache = rocksdb_cache_create_lru(settings.blockCacheSizeBytes)
        rocksdb_block_based_options_set_block_cache(tableOptions, cache)
        if let bits = settings.bloomBitsPerKey {
            // The table options take ownership of the filter policy.
            rocksdb_block_based_options_set_filter_policy(tableOptions, rocksdb_filterpolicy_create_bloom(bits))
        }
        rocksdb_options_set_block_based_table_factory(options, tableOptions)
    }

    deinit {
        rocksdb_options_destroy(options)
        rocksdb_block_based_options_destroy(tableOptions)
        rocksdb_cache_destroy(cache)
    }
}
