import Foundation
import KafkaWire
import LogStore
import Logging
import Security

/// Backup, an API of the broker's own (`postduif backup`): the broker
/// copies its live store to a new folder on its own machine
/// (`LogStore.backup`), since RocksDB lets one process at a time open it.
/// Kafka's framing, a key far above Kafka's; with the authorizer on, only a
/// principal allowed Alter on the cluster may ask.
public enum BackupAPI {
    public static let key: Int16 = 32010
    public static let versions: ClosedRange<Int16> = 0...0
}

public struct BackupRequest: Sendable, Equatable {
    /// The folder to make, on the broker's machine and file system.
    public var directory: String

    public init(directory: String) {
        self.directory = directory
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(directory)
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> BackupRequest {
        BackupRequest(directory: try reader.readString())
    }
}

public struct BackupResponse: Sendable, Equatable {
    public var errorCode: Int16
    public var errorMessage: String?
    public var path: String
    public var partitions: Int32
    public var segmentsLinked: Int32
    public var segmentsCopied: Int32
    public var bytesLinked: Int64
    public var bytesCopied: Int64

    public init(errorCode: Int16, errorMessage: String? = nil, path: String = "", partitions: Int32 = 0, segmentsLinked: Int32 = 0,
                segmentsCopied: Int32 = 0, bytesLinked: Int64 = 0, bytesCopied: Int64 = 0) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.path = path
        self.partitions = partitions
        self.segmentsLinked = segmentsLinked
        self.segmentsCopied = segmentsCopied
        self.bytesLinked = bytesLinked
        self.bytesCopied = bytesCopied
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt16(errorCode)
        writer.writeString(errorMessage)
        writer.writeString(path)
        writer.writeInt32(partitions)
        writer.writeInt32(segmentsLinked)
        writer.writeInt32(segmentsCopied)
        writer.writeInt64(bytesLinked)
        writer.writeInt64(bytesCopied)
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> BackupResponse {
        BackupResponse(errorCode: try reader.readInt16(), errorMessage: try reader.readNullableString(), path: try reader.readString(),
                       partitions: try reader.readInt32(), segmentsLinked: try reader.readInt32(), segmentsCopied: try reader.readInt32(),
                       bytesLinked: try reader.readInt64(), bytesCopied: try reader.readInt64())
    }
}

extension Broker {
    /// The Backup API, for `register`.
    public var backupAPI: ExtensionAPI {
        ExtensionAPI(key: BackupAPI.key, name: "Backup", versions: BackupAPI.versions, clusterOperation: .alter) { [self] reader, version, body in
            let request = try BackupRequest.decode(&reader, version: version)
            await backup(request).encode(&body, version: version)
        }
    }

    /// Takes the backup on a thread of its own: it copies and syncs files
    /// for as long as the active segments take, which must not hold one of
    /// the cooperative pool's few threads.
    func backup(_ request: BackupRequest) async -> BackupResponse {
        let store = self.store
        let logger = self.logger
        let directory = request.directory
        return await withCheckedContinuation { (done: CheckedContinuation<BackupResponse, Never>) in
            Thread.detachNewThread {
                do {
                    let summary = try store.backup(to: directory)
                    logger.info("backup taken", metadata: [
                        "path": "\(summary.path)", "partitions": "\(summary.partitions)", "segmentsLinked": "\(summary.segmentsLinked)",
                        "segmentsCopied": "\(summary.segmentsCopied)", "bytesCopied": "\(summary.bytesCopied)"])
                    done.resume(returning: BackupResponse(
                        errorCode: 0, path: summary.path, partitions: Int32(summary.partitions), segmentsLinked: Int32(summary.segmentsLinked),
                        segmentsCopied: Int32(summary.segmentsCopied), bytesLinked: summary.bytesLinked, bytesCopied: summary.bytesCopied))
                } catch let error as LogStoreError {
                    logger.error("backup failed", metadata: ["path": "\(directory)", "error": "\(error)"])
                    // The half-made folder goes: a backup is whole or absent.
                    if error.code != .io(EEXIST) { try? FileManager.default.removeItem(atPath: directory) }
                    done.resume(returning: BackupResponse(errorCode: ErrorCode.kafkaStorageError.rawValue, errorMessage: error.message))
                } catch {
                    preconditionFailure("LogStore.backup throws LogStoreError only: \(error)")
                }
            }
        }
    }
}
