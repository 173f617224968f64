import Core
import Foundation
import KafkaWire
import RocksDB
import Synchronization

/// The column families of a broker's RocksDB (Docs/architecture.md).
struct Families: @unchecked Sendable {
    // Column family handles are immutable and safe to share.
    static let logName = "log"
    static let conversationIndexName = "conversation_index"
    static let partitionStateName = "partition_state"
    static let epochsName = "leader_epochs"
    static let producersName = "producers"
    static let topicsName = "topics"
    static let groupOffsetsName = "group_offsets"
    static let all = [logName, conversationIndexName, partitionStateName, epochsName, producersName, topicsName, groupOffsetsName]

    /// The conversation index gets small memtables: its entries arrive in
    /// random key order, and inserting into a 64 MiB skiplist costs cache
    /// misses that made up a third of a conversation append's CPU time.
    /// 8 MiB measured 8% faster over 2.5 GB of appends (Docs/benchmarks.md).
    static let conversationIndexWriteBufferBytes = 8 << 20

    /// The options of each column family. The log family holds only each
    /// batch's location (the batches live in segment files, Docs/adr/0013).
    static func options(base: ColumnFamilyOptions) -> [(name: String, options: ColumnFamilyOptions)] {
        var index = base
        index.writeBufferSizeBytes = conversationIndexWriteBufferBytes
        // A partition's state and its producers' sequences are one key each,
        // rewritten by every append: updated in place, their memtables stay
        // a few entries long instead of holding every version since the
        // last flush, which made their inserts a skiplist search of cache
        // misses (a tenth of a small Produce's CPU). They are read only when
        // a partition opens, never through a snapshot.
        var rewritten = base
        rewritten.inPlaceUpdates = true
        return all.map { name in
            switch name {
            case conversationIndexName: (name, index)
            case partitionStateName, producersName: (name, rewritten)
            default: (name, base)
            }
        }
    }

    /// Opens a store's database with every family's options.
    static func open(path: String, options: DatabaseOptions) throws(RocksDBError) -> Database {
        // In-place updates of the partition state and producer families
        // rule out parallel memtable inserts. Appends on two event loops
        // meet in RocksDB's write groups; a follower sleeps rather than
        // spins while the leader writes for it (at 20,000 librdkafka
        // Produce requests a second the spin doubled the ack p99.9,
        // Docs/benchmarks.md).
        //
        // The WAL is buffered for appends alone (`write(buffered:)`): a
        // batch's entries are rebuilt from its segment when the process
        // dies before they reach the file, as after a machine crash
        // (recoverSegments), and a small Produce saves a `write(2)`.
        var database = options
        database.concurrentMemtableWrites = false
        database.spinningWriters = false
        database.manualWALFlush = true
        return try Database(path: path, options: database, columnFamilyOptions: Families.options(base: options.defaultColumnFamily))
    }

    let log: ColumnFamily
    let conversationIndex: ColumnFamily
    let partitionState: ColumnFamily
    let epochs: ColumnFamily
    let producers: ColumnFamily
    let topics: ColumnFamily
    let groupOffsets: ColumnFamily

    init(_ database: Database) {
        func family(_ name: String) -> ColumnFamily {
            guard let family = database.columnFamily(name) else { preconditionFailure("column family \(name) was not opened") }
            return family
        }
        log = family(Families.logName)
        conversationIndex = family(Families.conversationIndexName)
        partitionState = family(Families.partitionStateName)
        epochs = family(Families.epochsName)
        producers = family(Families.producersName)
        topics = family(Families.topicsName)
        groupOffsets = family(Families.groupOffsetsName)
    }
}

/// What every partition of one store shares.
struct StoreContext: Sendable {
    let database: Database
    let families: Families
    let groupCommit: GroupCommit
    let durability: Durability
    /// The folder holding one folder of segment files per partition.
    let segmentsPath: String
    /// A segment is closed and a new one begun once it holds this many bytes.
    let segmentBytes: Int64
    /// The time LogAppendTime topics stamp on their batches.
    let wallClock: any WallClock
    /// Whether the store was closed cleanly last time: then a batch that
    /// fails its check at open is damage to report, not a torn write to
    /// cut off (`PartitionLog.recoverSegments`).
    let closedCleanly: Bool
    /// Held while segment files are cut, replaced or removed, and by a
    /// backup while it copies them (`LogStore.backup`). Taken before a
    /// partition's lock, never after.
    let layout = SegmentLayoutLock()
}

/// Settings of a log store.
public struct LogStoreOptions: Sendable {
    public var durability: Durability = .fsync
    public var database = DatabaseOptions()
    /// A partition's active segment file is closed and a new one begun once
    /// it holds this many bytes; retention frees space a whole segment at a time.
    public var segmentBytes: Int64 = 128 << 20
    /// The time LogAppendTime topics stamp on their batches.
    public var wallClock: any WallClock = SystemWallClock()

    public init(durability: Durability = .fsync) {
        self.durability = durability
    }
}

/// A broker's whole log: every topic and partition in one RocksDB.
///
/// Opening recovers everything: topics, partitions with their offsets,
/// leader-epoch caches, producer state and conversation sequences.
public final class LogStore: Sendable {
    public let path: String
    public let durability: Durability
    let context: StoreContext
    private let topics: Mutex<[String: (descriptor: TopicDescriptor, partitions: [PartitionLog])]>
    private let closed = Mutex(false)
    private let producerIDs = Mutex(())
    /// A stable id for this store's cluster, made when the store is created.
    public let clusterID: String

    /// Free space below which the store does not open (RocksDB writes its
    /// log, manifest and a write-ahead log as it opens).
    public static let freeBytesToOpen: Int64 = 1 << 20

    public init(path: String, options: LogStoreOptions = LogStoreOptions()) throws(LogStoreError) {
        self.path = path
        durability = options.durability
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw LogStoreError(.storage(RocksDBError(operation: "create directory", message: "\(error)")), "cannot create data directory \(path): \(error)")
        }
        // RocksDB as Debian builds it keeps its assertions: opening on a
        // full file system fails a write of its info log, and the next
        // write to that log aborts the process without a word. Said
        // plainly here instead, before anything is written.
        if let free = FileSystemSpace(path: path)?.usableBytes, free < Self.freeBytesToOpen {
            throw LogStoreError(.storage(RocksDBError(operation: "open", message: "no space left on device")),
                                "the file system of \(path) has \(free) bytes free; opening the log store needs at least \(Self.freeBytesToOpen): free space (delete what retention would, or grow the volume) and start again")
        }
        let database: Database
        do {
            database = try Families.open(path: path, options: options.database)
        } catch {
            throw LogStoreError(.storage(error), "cannot open the log store at \(path): \(error.message)")
        }
        let families = Families(database)
        let segmentsPath = path + "/segments"
        try LogStore.checkFormat(database: database, families: families, segmentsPath: segmentsPath)
        // The marker goes at once: a crash from here on is not a clean close.
        let closedCleanly = try storage { try database.get(Keys.closedCleanlyKey, in: families.topics) } != nil
        if closedCleanly {
            try storage { try database.delete(Keys.closedCleanlyKey, in: families.topics, sync: true) }
        }
        context = StoreContext(
            database: database, families: families, groupCommit: GroupCommit(database: database), durability: options.durability,
            segmentsPath: segmentsPath, segmentBytes: max(options.segmentBytes, 4096), wallClock: options.wallClock, closedCleanly: closedCleanly)
        var loaded: [String: (TopicDescriptor, [PartitionLog])] = [:]
        let iterator = database.makeIterator(in: families.topics, lowerBound: Keys.topicRecordPrefix, upperBound: Keys.end(of: Keys.topicRecordPrefix))
        iterator.seekToFirst()
        while iterator.isValid {
            let descriptor: TopicDescriptor
            do {
                descriptor = try JSONDecoder().decode(TopicDescriptor.self, from: Data(iterator.value))
            } catch {
                throw LogStoreError(.corrupt, "topic record \(String(decoding: iterator.key, as: UTF8.self)) unreadable: \(error)")
            }
            var partitions: [PartitionLog] = []
            for index in 0..<descriptor.configuration.partitionCount {
                partitions.append(try PartitionLog(topic: descriptor, index: index, context: context, recover: true))
            }
            loaded[descriptor.name] = (descriptor, partitions)
            iterator.next()
        }
        try storage { try iterator.checkError() }
        topics = Mutex(loaded)
        if let stored = try storage({ try database.get(Keys.clusterIDKey, in: families.topics) }) {
            clusterID = String(decoding: stored, as: UTF8.self)
        } else {
            // 22 characters like Kafka's cluster ids: a random UUID in URL-safe base64.
            let bytes = withUnsafeBytes(of: UUID().uuid) { Data($0) }
            let encoded = String(bytes.base64EncodedString().prefix(22))
            clusterID = encoded.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            try storage { try database.put(Keys.clusterIDKey, Array(clusterID.utf8), in: families.topics, sync: true) }
        }
    }

    /// A new producer id for an idempotent producer, never handed out before
    /// (the counter is persisted, synced, before the id is returned).
    public func allocateProducerID() throws(LogStoreError) -> Int64 {
        try producerIDs.withLock { _ throws(LogStoreError) -> Int64 in
            let families = context.families
            let stored = try storage { try context.database.get(Keys.nextProducerIDKey, in: families.topics) }
            let next = stored.map { Int64(bitPattern: Keys.readUInt64($0, at: 0)) } ?? 1000
            var value = [UInt8]()
            Keys.append(&value, next + 1)
            try storage { try context.database.put(Keys.nextProducerIDKey, value, in: families.topics, sync: true) }
            return next
        }
    }

    /// A small broker-wide record a single node keeps with its log (its
    /// ACLs); nil when never written.
    public func brokerRecord(_ name: String) throws(LogStoreError) -> [UInt8]? {
        try storage { try context.database.get(Keys.brokerRecord(name: name), in: context.families.topics) }
    }

    /// Writes a broker-wide record, synced before it returns.
    public func setBrokerRecord(_ name: String, _ value: [UInt8]) throws(LogStoreError) {
        try storage { try context.database.put(Keys.brokerRecord(name: name), value, in: context.families.topics, sync: true) }
    }

    /// Syncs the WAL, stops the group-commit thread and closes RocksDB.
    /// Appends must have finished. Safe to call more than once.
    public func close() {
        let wasClosed = closed.withLock { closed in
            defer { closed = true }
            return closed
        }
        guard !wasClosed else { return }
        context.groupCommit.stop()
        for partition in allPartitions { try? partition.checkpointHighWatermark() }
        var synced = true
        for partition in allPartitions {
            do {
                // Without its appends' entries the store is not closed
                // cleanly: opening it replays them from the segments.
                try partition.writePendingEntries()
                try partition.retireActiveSegment()
                try partition.syncSegments()
            } catch {
                synced = false
            }
        }
        if synced && context.groupCommit.failed == nil {
            try? context.database.put(Keys.closedCleanlyKey, [1], in: context.families.topics, sync: true)
        }
        try? context.database.flushWAL(sync: true)
        topics.withLock { $0.removeAll() }
        context.database.close()
    }

    deinit {
        close()
    }

    var database: Database { context.database }
    var families: Families { context.families }
    var groupCommit: GroupCommit { context.groupCommit }

    /// How many rounds of segment syncs group commit has made (for benchmarks and tests).
    public var walSyncCount: UInt64 { context.groupCommit.syncCount }

    /// The layout this version writes: batches in segment files, their
    /// locations in RocksDB (Docs/adr/0013). Stores of the earlier layout
    /// (batches inside RocksDB) are refused with a message, never misread.
    static let formatKey: [UInt8] = Array("store-format".utf8)
    static let format: [UInt8] = Array("segments-1".utf8)

    private static func checkFormat(database: Database, families: Families, segmentsPath: String) throws(LogStoreError) {
        let stored = try storage { try database.get(formatKey, in: families.topics) }
        if let stored {
            guard stored == format else {
                throw LogStoreError(.corrupt, "the store's layout is \(String(decoding: stored, as: UTF8.self)); this version reads \(String(decoding: format, as: UTF8.self))")
            }
        } else {
            let iterator = database.makeIterator(in: families.topics, lowerBound: Keys.topicRecordPrefix, upperBound: Keys.end(of: Keys.topicRecordPrefix))
            iterator.seekToFirst()
            let hasTopics = iterator.isValid
            _ = consume iterator
            if hasTopics {
                throw LogStoreError(.corrupt, "the store holds topics in the earlier layout (batches inside RocksDB), which this version no longer reads; start with an empty data directory")
            }
            try storage { try database.put(formatKey, format, in: families.topics, sync: true) }
        }
        do {
            try FileManager.default.createDirectory(atPath: segmentsPath, withIntermediateDirectories: true)
        } catch {
            throw LogStoreError(.io(EIO), "cannot create \(segmentsPath): \(error)")
        }
    }

    // MARK: Topics

    /// Every topic, sorted by name.
    public var topicDescriptors: [TopicDescriptor] {
        topics.withLock { $0.values.map(\.descriptor) }.sorted { $0.name < $1.name }
    }

    public func topic(named name: String) -> TopicDescriptor? {
        topics.withLock { $0[name]?.descriptor }
    }

    /// Creates a topic with its partitions, durably, before returning.
    @discardableResult
    public func createTopic(_ name: String, configuration: TopicConfiguration, clusterTopicID: String? = nil) throws(LogStoreError) -> TopicDescriptor {
        try TopicDescriptor.validate(name: name)
        try configuration.validate()
        // The layout lock: a backup copies the topics its checkpoint holds, no more, no fewer.
        return try context.layout.around { () throws(LogStoreError) -> TopicDescriptor in try topics.withLock { topics throws(LogStoreError) -> TopicDescriptor in
            guard topics[name] == nil else { throw LogStoreError(.topicAlreadyExists, "topic \(name) already exists") }
            let families = context.families
            let nextID: UInt32
            let stored = try storage { try context.database.get(Keys.nextTopicIDKey, in: families.topics) }
            nextID = stored.map { $0.withUnsafeBytes { Keys.readUInt32($0, at: 0) } } ?? 1
            let descriptor = TopicDescriptor(id: nextID, name: name, configuration: configuration, clusterTopicID: clusterTopicID)
            let write = WriteBatch()
            var idBytes = [UInt8]()
            Keys.append(&idBytes, nextID + 1)
            write.put(Keys.nextTopicIDKey, idBytes, in: families.topics)
            let encoded: Data
            do { encoded = try JSONEncoder().encode(descriptor) } catch {
                preconditionFailure("a topic descriptor always encodes: \(error)")
            }
            write.put(Keys.topicRecord(name: name), [UInt8](encoded), in: families.topics)
            try storage { try context.database.write(write, sync: true) }
            var partitions: [PartitionLog] = []
            for index in 0..<configuration.partitionCount {
                partitions.append(try PartitionLog(topic: descriptor, index: index, context: context, recover: false))
            }
            topics[name] = (descriptor, partitions)
            return descriptor
        } }
    }

    /// Deletes a topic and every key of its partitions, durably.
    public func deleteTopic(_ name: String) throws(LogStoreError) {
        try context.layout.around { () throws(LogStoreError) in try topics.withLock { topics throws(LogStoreError) in
            guard let entry = topics[name] else { throw LogStoreError(.unknownTopic, "topic \(name) does not exist") }
            let families = context.families
            let prefix = Keys.topicPrefix(topicID: entry.descriptor.id)
            let write = WriteBatch()
            for family in [families.log, families.conversationIndex, families.partitionState, families.epochs, families.producers] {
                write.deleteRange(from: prefix, to: Keys.end(of: prefix), in: family)
            }
            write.delete(Keys.topicRecord(name: name), in: families.topics)
            try storage { try context.database.write(write, sync: true) }
            entry.partitions.forEach { $0.markDeleted() }
            topics[name] = nil
        } }
    }

    /// A partition of a topic.
    public func partition(topic name: String, index: Int32) throws(LogStoreError) -> PartitionLog {
        try topics.withLock { topics throws(LogStoreError) -> PartitionLog in
            guard let entry = topics[name] else { throw LogStoreError(.unknownTopic, "topic \(name) does not exist") }
            guard index >= 0 && Int(index) < entry.partitions.count else {
                throw LogStoreError(.unknownPartition, "topic \(name) has no partition \(index)")
            }
            return entry.partitions[Int(index)]
        }
    }

    /// Every partition of every topic, topics sorted by name.
    public var allPartitions: [PartitionLog] {
        topics.withLock { topics in
            topics.keys.sorted().flatMap { topics[$0]!.partitions }
        }
    }

    /// Applies every topic's retention (closing segments older than their
    /// topic's `segment.ms` first); returns what it removed.
    @discardableResult
    public func enforceRetention(nowMilliseconds: Int64) throws(LogStoreError) -> RetentionOutcome {
        var removed = RetentionOutcome()
        for partition in allPartitions {
            try partition.closeActiveSegment(nowMilliseconds: nowMilliseconds)
            removed = removed + (try partition.enforceRetention(nowMilliseconds: nowMilliseconds))
        }
        return removed
    }

    /// Adds partitions to a topic until it has `count` (CreatePartitions),
    /// durably; the existing ones keep every record.
    public func addPartitions(_ name: String, count: Int32) throws(LogStoreError) {
        try context.layout.around { () throws(LogStoreError) in try topics.withLock { topics throws(LogStoreError) in
            guard var entry = topics[name] else { throw LogStoreError(.unknownTopic, "topic \(name) does not exist") }
            let current = entry.descriptor.configuration.partitionCount
            guard count > current else {
                throw LogStoreError(.invalidConfiguration, "topic \(name) has \(current) partitions; a topic only grows")
            }
            var configuration = entry.descriptor.configuration
            configuration.partitionCount = count
            try configuration.validate()
            entry.descriptor.configuration = configuration
            let encoded: Data
            do { encoded = try JSONEncoder().encode(entry.descriptor) } catch {
                preconditionFailure("a topic descriptor always encodes: \(error)")
            }
            try storage { try context.database.put(Keys.topicRecord(name: name), [UInt8](encoded), in: context.families.topics, sync: true) }
            for index in current..<count {
                entry.partitions.append(try PartitionLog(topic: entry.descriptor, index: index, context: context, recover: false))
            }
            entry.partitions.forEach { partition in partition.settings.withLock { $0.partitionCount = count } }
            topics[name] = entry
        } }
    }

    /// Changes a topic's settings while it runs, durably. The partition
    /// count and the conversation index cannot change this way.
    public func reconfigureTopic(_ name: String, to configuration: TopicConfiguration) throws(LogStoreError) {
        try configuration.validate()
        try topics.withLock { topics throws(LogStoreError) in
            guard var entry = topics[name] else { throw LogStoreError(.unknownTopic, "topic \(name) does not exist") }
            guard configuration.partitionCount == entry.descriptor.configuration.partitionCount else {
                throw LogStoreError(.invalidConfiguration, "a topic's partition count changes only by adding partitions")
            }
            guard configuration.conversationIndex == entry.descriptor.configuration.conversationIndex else {
                throw LogStoreError(.invalidConfiguration, "the conversation index is set when a topic is created")
            }
            guard configuration != entry.descriptor.configuration else { return }
            entry.descriptor.configuration = configuration
            let encoded: Data
            do { encoded = try JSONEncoder().encode(entry.descriptor) } catch {
                preconditionFailure("a topic descriptor always encodes: \(error)")
            }
            try storage { try context.database.put(Keys.topicRecord(name: name), [UInt8](encoded), in: context.families.topics, sync: true) }
            entry.partitions.forEach { partition in partition.settings.withLock { $0 = configuration } }
            topics[name] = entry
        }
    }

    /// What opening the store repaired after a crash, one line per repair.
    public var recoveryNotes: [String] { allPartitions.flatMap(\.recoveryNotes) }

    /// A RocksDB property of the log column family, for operators.
    public func logProperty(_ name: String) -> String? {
        context.database.property(name, in: context.families.log)
    }
}

/// The size of the file system holding a path, and what of it is left to
/// an unprivileged process (root's reserve not counted); nil when it
/// cannot be read.
public struct FileSystemSpace: Sendable {
    public var usableBytes: Int64
    public var totalBytes: Int64

    public init?(path: String) {
        var stats = statvfs()
        guard statvfs(path, &stats) == 0 else { return nil }
        usableBytes = Int64(stats.f_bavail) * Int64(stats.f_frsize)
        totalBytes = Int64(stats.f_blocks) * Int64(stats.f_frsize)
    }
}
