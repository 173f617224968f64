import CRocksDB

/// An error RocksDB reported, with its own message and the operation that failed.
public struct RocksDBError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What the wrapper was doing, for example `open` or `write`.
    public var operation: String
    /// RocksDB's message, for example `IO error: No space left on device`.
    public var message: String

    public init(operation: String, message: String) {
        self.operation = operation
        self.message = message
    }

    public var description: String { "RocksDB \(operation) failed: \(message)" }

    /// True when RocksDB says the disk or file system refused a write.
    public var isIOError: Bool { message.hasPrefix("IO error") }
}

/// Runs a C call that reports errors through a `char** errptr`, turning the
/// error into a thrown `RocksDBError` and freeing RocksDB's message.
@inline(__always)
func checked<T>(_ operation: String, _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> T) throws(RocksDBError) -> T {
    var errorPointer: UnsafeMutablePointer<CChar>? = nil
    let result = body(&errorPointer)
    if let errorPointer {
        let message = String(cString: errorPointer)
        rocksdb_free(errorPointer)
        throw RocksDBError(operation: operation, message: message)
    }
    return result
}
