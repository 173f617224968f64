// Topic and group upkeep: DeleteRecords 0-2, CreatePartitions 0-3,
// DeleteGroups 0-2 (each flexible from 2), OffsetDelete 0, DescribeLogDirs
// 1-4 (flexible from 2), DescribeCluster 0-1 and DescribeProducers 0
// (flexible from 0). Requests decode (and encode, for tests); responses encode.

/// `topics[name, partitions[…]]`, as most of these requests carry them.
public struct TopicPartitions<Partition: Sendable & Equatable>: Sendable, Equatable {
    public var name: String
    public var partitions: [Partition]

    public init(name: String, partitions: [Partition]) {
        self.name = name
        self.partitions = partitions
    }
}

extension ByteReader {
    mutating func readTopics<Partition>(compact: Bool, _ partition: (inout ByteReader) throws(WireError) -> Partition) throws(WireError) -> [TopicPartitions<Partition>] {
        try readArray(compact: compact, elementBytesMin: 3, "topics") { (reader: inout ByteReader) throws(WireError) -> TopicPartitions<Partition> in
            let name = try reader.readString(compact: compact, "topic")
            let partitions = try reader.readArray(compact: compact, elementBytesMin: 4, "partitions") { (reader: inout ByteReader) throws(WireError) -> Partition in
                let value = try partition(&reader)
                if compact { try reader.skipTaggedFields() }
                return value
            } ?? []
            if compact { try reader.skipTaggedFields() }
            return TopicPartitions(name: name, partitions: partitions)
        } ?? []
    }
}

extension ByteWriter {
    mutating func writeTopics<Partition>(_ topics: [TopicPartitions<Partition>], compact: Bool, _ partition: (inout ByteWriter, Partition) -> Void) {
        writeArray(topics, compact: compact) { writer, topic in
            writer.writeString(topic.name, compact: compact)
            writer.writeArray(topic.partitions, compact: compact) { writer, value in
                partition(&writer, value)
                if compact { writer.writeEmptyTaggedFields() }
            }
            if compact { writer.writeEmptyTaggedFields() }
        }
    }
}

// MARK: DeleteRecords

public struct DeleteRecordsRequest: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        /// Records below this go; -1 means the high watermark.
        public var offset: Int64

        public init(index: Int32, offset: Int64) {
            self.index = index
            self.offset = offset
        }
    }

    public var topics: [TopicPartitions<Partition>]
    public var timeoutMilliseconds: Int32

    public init(topics: [TopicPartitions<Partition>], timeoutMilliseconds: Int32 = 30_000) {
        self.topics = topics
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DeleteRecordsRequest {
        let flexible = version >= 2
        let topics = try reader.readTopics(compact: flexible) { (reader: inout ByteReader) throws(WireError) -> Partition in
            Partition(index: try reader.readInt32("partition"), offset: try reader.readInt64("offset"))
        }
        let timeout = try reader.readInt32("timeout")
        if flexible { try reader.skipTaggedFields() }
        return DeleteRecordsRequest(topics: topics, timeoutMilliseconds: timeout)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeTopics(topics, compact: flexible) { writer, partition in
            writer.writeInt32(partition.index)
            writer.writeInt64(partition.offset)
        }
        writer.writeInt32(timeoutMilliseconds)
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

public struct DeleteRecordsResponse: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        /// The log start offset after the deletion.
        public var lowWatermark: Int64
        public var errorCode: Int16

        public init(index: Int32, lowWatermark: Int64, errorCode: Int16) {
            self.index = index
            self.lowWatermark = lowWatermark
            self.errorCode = errorCode
        }
    }

    public var topics: [TopicPartitions<Partition>]

    public init(topics: [TopicPartitions<Partition>]) {
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeInt32(0)  // throttle time
        writer.writeTopics(topics, compact: flexible) { writer, partition in
            writer.writeInt32(partition.index)
            writer.writeInt64(partition.lowWatermark)
            writer.writeInt16(partition.errorCode)
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

// MARK: CreatePartitions

public struct CreatePartitionsRequest: Sendable, Equatable {
    public struct Topic: Sendable, Equatable {
        public var name: String
        /// The partition count wanted, all partitions included.
        public var count: Int32
        /// Brokers for each new partition; nil lets the broker choose.
        public var assignments: [[Int32]]?

        public init(name: String, count: Int32, assignments: [[Int32]]? = nil) {
            self.name = name
            self.count = count
            self.assignments = assignments
        }
    }

    public var topics: [Topic]
    public var timeoutMilliseconds: Int32
    public var validateOnly: Bool

    public init(topics: [Topic], timeoutMilliseconds: Int32 = 30_000, validateOnly: Bool = false) {
        self.topics = topics
        self.timeoutMilliseconds = timeoutMilliseconds
        self.validateOnly = validateOnly
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> CreatePartitionsRequest {
        let flexible = version >= 2
        let topics = try reader.readArray(compact: flexible, elementBytesMin: 7, "topics") { (reader: inout ByteReader) throws(WireError) -> Topic in
            let name = try reader.readString(compact: flexible, "topic")
            let count = try reader.readInt32("count")
            let assignments = try reader.readArray(compact: flexible, elementBytesMin: 1, "assignments") { (reader: inout ByteReader) throws(WireError) -> [Int32] in
                let brokers = try reader.readArray(compact: flexible, elementBytesMin: 4, "broker ids") { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() } ?? []
                if flexible { try reader.skipTaggedFields() }
                return brokers
            }
            if flexible { try reader.skipTaggedFields() }
            return Topic(name: name, count: count, assignments: assignments)
        } ?? []
        let timeout = try reader.readInt32("timeout")
        let validateOnly = try reader.readBool()
        if flexible { try reader.skipTaggedFields() }
        return CreatePartitionsRequest(topics: topics, timeoutMilliseconds: timeout, validateOnly: validateOnly)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeArray(topics, compact: flexible) { writer, topic in
            writer.writeString(topic.name, compact: flexible)
            writer.writeInt32(topic.count)
            writer.writeArray(topic.assignments, compact: flexible) { writer, brokers in
                writer.writeArray(brokers, compact: flexible) { $0.writeInt32($1) }
                if flexible { writer.writeEmptyTaggedFields() }
            }
            if flexible { writer.writeEmptyTaggedFields() }
        }
        writer.writeInt32(timeoutMilliseconds)
        writer.writeBool(validateOnly)
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

/// CreatePartitions' and DeleteGroups' answers: one error per name.
public struct NamedResults: Sendable, Equatable {
    public struct Result: Sendable, Equatable {
        public var name: String
        public var errorCode: Int16
        public var errorMessage: String?

        public init(name: String, errorCode: Int16, errorMessage: String? = nil) {
            self.name = name
            self.errorCode = errorCode
            self.errorMessage = errorMessage
        }
    }

    public var results: [Result]

    public init(results: [Result]) {
        self.results = results
    }

    /// `withMessages`: CreatePartitions (DeleteGroups carries none).
    public func encode(_ writer: inout ByteWriter, version: Int16, withMessages: Bool) {
        let flexible = version >= 2
        writer.writeInt32(0)  // throttle time
        writer.writeArray(results, compact: flexible) { writer, result in
            writer.writeString(result.name, compact: flexible)
            writer.writeInt16(result.errorCode)
            if withMessages { writer.writeString(result.errorMessage, compact: flexible) }
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

// MARK: DeleteGroups and OffsetDelete

public struct DeleteGroupsRequest: Sendable, Equatable {
    public var groupIDs: [String]

    public init(groupIDs: [String]) {
        self.groupIDs = groupIDs
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DeleteGroupsRequest {
        let flexible = version >= 2
        let groups = try reader.readArray(compact: flexible, elementBytesMin: 1, "groups") { (reader: inout ByteReader) throws(WireError) -> String in
            try reader.readString(compact: flexible, "group id")
        } ?? []
        if flexible { try reader.skipTaggedFields() }
        return DeleteGroupsRequest(groupIDs: groups)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeArray(groupIDs, compact: flexible) { $0.writeString($1, compact: flexible) }
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

public struct OffsetDeleteRequest: Sendable, Equatable {
    public var groupID: String
    public var topics: [TopicPartitions<Int32>]

    public init(groupID: String, topics: [TopicPartitions<Int32>]) {
        self.groupID = groupID
        self.topics = topics
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> OffsetDeleteRequest {
        let group = try reader.readString("group id")
        let topics = try reader.readTopics(compact: false) { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32("partition") }
        return OffsetDeleteRequest(groupID: group, topics: topics)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(groupID)
        writer.writeTopics(topics, compact: false) { $0.writeInt32($1) }
    }
}

public struct OffsetDeleteResponse: Sendable, Equatable {
    public var errorCode: Int16
    public var topics: [TopicPartitions<PartitionError>]

    public struct PartitionError: Sendable, Equatable {
        public var index: Int32
        public var errorCode: Int16

        public init(index: Int32, errorCode: Int16) {
            self.index = index
            self.errorCode = errorCode
        }
    }

    public init(errorCode: Int16, topics: [TopicPartitions<PartitionError>]) {
        self.errorCode = errorCode
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt16(errorCode)
        writer.writeInt32(0)  // throttle time
        writer.writeTopics(topics, compact: false) { writer, partition in
            writer.writeInt32(partition.index)
            writer.writeInt16(partition.errorCode)
        }
    }
}

// MARK: DescribeLogDirs

public struct DescribeLogDirsRequest: Sendable, Equatable {
    /// Nil asks for every partition.
    public var topics: [TopicPartitions<Int32>]?

    public init(topics: [TopicPartitions<Int32>]?) {
        self.topics = topics
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DescribeLogDirsRequest {
        let flexible = version >= 2
        let topics = try reader.readArray(compact: flexible, elementBytesMin: 3, "topics") { (reader: inout ByteReader) throws(WireError) -> TopicPartitions<Int32> in
            let name = try reader.readString(compact: flexible, "topic")
            let partitions = try reader.readArray(compact: flexible, elementBytesMin: 4, "partitions") { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() } ?? []
            if flexible { try reader.skipTaggedFields() }
            return TopicPartitions(name: name, partitions: partitions)
        }
        if flexible { try reader.skipTaggedFields() }
        return DescribeLogDirsRequest(topics: topics)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeArray(topics, compact: flexible) { writer, topic in
            writer.writeString(topic.name, compact: flexible)
            writer.writeArray(topic.partitions, compact: flexible) { $0.writeInt32($1) }
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

public struct DescribeLogDirsResponse: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var sizeBytes: Int64
        public var offsetLag: Int64

        public init(index: Int32, sizeBytes: Int64, offsetLag: Int64) {
            self.index = index
            self.sizeBytes = sizeBytes
            self.offsetLag = offsetLag
        }
    }

    public struct LogDir: Sendable, Equatable {
        public var errorCode: Int16
        public var path: String
        public var topics: [TopicPartitions<Partition>]
        public var totalBytes: Int64
        public var usableBytes: Int64

        public init(errorCode: Int16, path: String, topics: [TopicPartitions<Partition>], totalBytes: Int64, usableBytes: Int64) {
            self.errorCode = errorCode
            self.path = path
            self.topics = topics
            self.totalBytes = totalBytes
            self.usableBytes = usableBytes
        }
    }

    public var errorCode: Int16
    public var logDirs: [LogDir]

    public init(errorCode: Int16, logDirs: [LogDir]) {
        self.errorCode = errorCode
        self.logDirs = logDirs
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeInt32(0)  // throttle time
        if version >= 3 { writer.writeInt16(errorCode) }
        writer.writeArray(logDirs, compact: flexible) { writer, logDir in
            writer.writeInt16(logDir.errorCode)
            writer.writeString(logDir.path, compact: flexible)
            writer.writeTopics(logDir.topics, compact: flexible) { writer, partition in
                writer.writeInt32(partition.index)
                writer.writeInt64(partition.sizeBytes)
                writer.writeInt64(partition.offsetLag)
                writer.writeBool(false)  // not a future replica
            }
            if version >= 4 {
                writer.writeInt64(logDir.totalBytes)
                writer.writeInt64(logDir.usableBytes)
            }
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

// MARK: DescribeCluster

public struct DescribeClusterRequest: Sendable, Equatable {
    public var includeAuthorizedOperations: Bool
    /// 1: brokers (the only endpoints served).
    public var endpointType: Int8

    public init(includeAuthorizedOperations: Bool = false, endpointType: Int8 = 1) {
        self.includeAuthorizedOperations = includeAuthorizedOperations
        self.endpointType = endpointType
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DescribeClusterRequest {
        let include = try reader.readBool()
        let type = version >= 1 ? try reader.readInt8("endpoint type") : 1
        try reader.skipTaggedFields()
        return DescribeClusterRequest(includeAuthorizedOperations: include, endpointType: type)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeBool(includeAuthorizedOperations)
        if version >= 1 { writer.writeInt8(endpointType) }
        writer.writeEmptyTaggedFields()
    }
}

public struct DescribeClusterResponse: Sendable, Equatable {
    public var errorCode: Int16
    public var errorMessage: String?
    public var endpointType: Int8
    public var clusterID: String
    public var controllerID: Int32
    public var brokers: [MetadataResponse.Broker]
    public var authorizedOperations: Int32

    public init(errorCode: Int16 = 0, errorMessage: String? = nil, endpointType: Int8 = 1, clusterID: String, controllerID: Int32,
                brokers: [MetadataResponse.Broker], authorizedOperations: Int32 = Int32.min) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.endpointType = endpointType
        self.clusterID = clusterID
        self.controllerID = controllerID
        self.brokers = brokers
        self.authorizedOperations = authorizedOperations
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt32(0)  // throttle time
        writer.writeInt16(errorCode)
        writer.writeString(errorMessage, compact: true)
        if version >= 1 { writer.writeInt8(endpointType) }
        writer.writeString(clusterID, compact: true)
        writer.writeInt32(controllerID)
        writer.writeArray(brokers, compact: true) { writer, broker in
            writer.writeInt32(broker.nodeID)
            writer.writeString(broker.host, compact: true)
            writer.writeInt32(broker.port)
            writer.writeString(broker.rack, compact: true)
            writer.writeEmptyTaggedFields()
        }
        writer.writeInt32(authorizedOperations)
        writer.writeEmptyTaggedFields()
    }
}

// MARK: DescribeProducers

public struct DescribeProducersRequest: Sendable, Equatable {
    public var topics: [TopicPartitions<Int32>]

    public init(topics: [TopicPartitions<Int32>]) {
        self.topics = topics
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DescribeProducersRequest {
        let topics = try reader.readArray(compact: true, elementBytesMin: 3, "topics") { (reader: inout ByteReader) throws(WireError) -> TopicPartitions<Int32> in
            let name = try reader.readString(compact: true, "topic")
            let partitions = try reader.readArray(compact: true, elementBytesMin: 4, "partitions") { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() } ?? []
            try reader.skipTaggedFields()
            return TopicPartitions(name: name, partitions: partitions)
        } ?? []
        try reader.skipTaggedFields()
        return DescribeProducersRequest(topics: topics)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeArray(topics, compact: true) { writer, topic in
            writer.writeString(topic.name, compact: true)
            writer.writeArray(topic.partitions, compact: true) { $0.writeInt32($1) }
            writer.writeEmptyTaggedFields()
        }
        writer.writeEmptyTaggedFields()
    }
}

public struct DescribeProducersResponse: Sendable, Equatable {
    public struct Producer: Sendable, Equatable {
        public var producerID: Int64
        public var epoch: Int32
        public var lastSequence: Int32

        public init(producerID: Int64, epoch: Int32, lastSequence: Int32) {
            self.producerID = producerID
            self.epoch = epoch
            self.lastSequence = lastSequence
        }
    }

    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var errorCode: Int16
        public var errorMessage: String?
        public var producers: [Producer]

        public init(index: Int32, errorCode: Int16, errorMessage: String? = nil, producers: [Producer]) {
            self.index = index
            self.errorCode = errorCode
            self.errorMessage = errorMessage
            self.producers = producers
        }
    }

    public var topics: [TopicPartitions<Partition>]

    public init(topics: [TopicPartitions<Partition>]) {
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt32(0)  // throttle time
        writer.writeTopics(topics, compact: true) { writer, partition in
            writer.writeInt32(partition.index)
            writer.writeInt16(partition.errorCode)
            writer.writeString(partition.errorMessage, compact: true)
            writer.writeArray(partition.producers, compact: true) { writer, producer in
                writer.writeInt64(producer.producerID)
                writer.writeInt32(producer.epoch)
                writer.writeInt32(producer.lastSequence)
                writer.writeInt64(-1)  // last timestamp: not kept
                writer.writeInt32(-1)  // coordinator epoch: no transactions
                writer.writeInt64(-1)  // current transaction start offset
                writer.writeEmptyTaggedFields()
            }
        }
        writer.writeEmptyTaggedFields()
    }
}
