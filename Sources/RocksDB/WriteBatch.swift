import CRocksDB

/// Writes applied together or not at all by `Database.write(_:sync:)`.
/// Not thread-safe: build a batch on one task, then hand it to `write`.
public final class WriteBatch {
    let handle: OpaquePointer

    public init() {
        handle = rocksdb_writebatch_create()
    }

    deinit {
        rocksdb_writebatch_destroy(handle)
    }

    public func put(_ key: [UInt8], _ value: [UInt8], in family: ColumnFamily) {
        key.withUnsafeBytes { k in
            value.withUnsafeBytes { v in
                put(k, v, in: family)
            }
        }
    }

    /// Puts a key and value given as raw bytes; RocksDB copies them.
    public func put(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, in family: ColumnFamily) {
        rocksdb_writebatch_put_cf(
            handle, family.handle,
            key.baseAddress?.assumingMemoryBound(to: CChar.self), key.count,
            value.baseAddress?.assumingMemoryBound(to: CChar.self), value.count)
    }

    /// Puts a value given in parts, which RocksDB concatenates as it copies
    /// them: a changed header and an unchanged body need no copy of their own.
    public func put(_ key: [UInt8], parts: [UnsafeRawBufferPointer], in family: ColumnFamily) {
        let pointers = parts.map { $0.baseAddress?.assumingMemoryBound(to: CChar.self) }
        let sizes = parts.map(\.count)
        key.withUnsafeBufferPointer { k in
            k.withMemoryRebound(to: CChar.self) { k in
                var keyPointer: UnsafePointer<CChar>? = k.baseAddress
                var keySize = k.count
                pointers.withUnsafeBufferPointer { valuePointers in
                    sizes.withUnsafeBufferPointer { valueSizes in
                        rocksdb_writebatch_putv_cf(
                            handle, family.handle, 1, &keyPointer, &keySize,
                            Int32(parts.count), valuePointers.baseAddress, valueSizes.baseAddress)
                    }
                }
            }
        }
    }

    public func delete(_ key: [UInt8], in family: ColumnFamily) {
        key.withUnsafeBufferPointer { k in
            k.withMemoryRebound(to: CChar.self) { k in
                rocksdb_writebatch_delete_cf(handle, family.handle, k.baseAddress, k.count)
            }
        }
    }

    /// Deletes every key in `[start, end)` with one range tombstone.
    public func deleteRange(from start: [UInt8], to end: [UInt8], in family: ColumnFamily) {
        start.withUnsafeBufferPointer { s in
            end.withUnsafeBufferPointer { e in
                s.withMemoryRebound(to: CChar.self) { s in
                    e.withMemoryRebound(to: CChar.self) { e in
                        rocksdb_writebatch_delete_range_cf(handle, family.handle, s.baseAddress, s.count, e.baseAddress, e.count)
                    }
                }
            }
        }
    }

    /// How many operations the batch holds.
    public var count: Int { Int(rocksdb_writebatch_count(handle)) }

    public func clear() {
        rocksdb_writebatch_clear(handle)
    }
}
