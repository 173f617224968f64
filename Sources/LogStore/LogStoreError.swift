import KafkaWire
import RocksDB

/// An operating error of the log store: bad input, a missing topic, a full
/// disk. Programmer errors are preconditions instead (STYLE.md rule 5).
/// The broker maps `code` to a Kafka error code once, at its boundary.
public struct LogStoreError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: Sendable, Equatable {
        case topicAlreadyExists
        case unknownTopic
        case unknownPartition
        case invalidTopicName
        case invalidConfiguration
        /// The offset is below the log start offset or above the log end offset.
        case offsetOutOfRange
        /// The batch failed validation; nothing was written.
        case batchRefused(RecordBatchError)
        /// Sequence gap or a new epoch not starting at 0 (Kafka 45).
        case outOfOrderSequence
        /// The producer's epoch is older than the one on record (Kafka 47).
        case producerFenced
        /// An append carried a leader epoch older than the newest recorded.
        case staleLeaderEpoch
        /// A follower's copy from a leader this log no longer follows (it
        /// leads now, or follows another): see `PartitionLog.fenceReplicas`.
        case replicaFenced
        /// RocksDB refused a read or write (a full disk, for example).
        case storage(RocksDBError)
        /// A segment file could not be read, written or synced (the errno):
        /// a full disk, for example.
        case io(Int32)
        /// A WAL sync failed earlier; the store no longer accepts appends,
        /// because what reached the disk is unknown.
        case storageFailed
        /// Stored bytes fail their checks.
        case corrupt
        case closed
    }

    public var code: Code
    public var message: String

    /// The disk or the store failed, not the request: Kafka's
    /// KAFKA_STORAGE_ERROR, which clients retry.
    public var isStorageFailure: Bool {
        switch code {
        case .storage, .io, .storageFailed: true
        default: false
        }
    }

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    static func storage(_ error: RocksDBError) -> LogStoreError {
        LogStoreError(.storage(error), error.description)
    }
}

/// Runs a RocksDB call, turning its error into a storage error of the store.
/// (Closures infer an untyped `throws`, hence the cast: only RocksDB calls
/// go in here.)
@inline(__always)
func storage<T>(_ body: () throws -> T) throws(LogStoreError) -> T {
    do {
        return try body()
    } catch let error as RocksDBError {
        throw .storage(error)
    } catch let error as LogStoreError {
        throw error
    } catch {
        preconditionFailure("storage() wraps RocksDB calls only, got \(error)")
    }
}
