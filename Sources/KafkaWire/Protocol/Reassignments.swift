// Moving replicas and leaders: ElectLeaders 0-2 (flexible from 2),
// AlterPartitionReassignments 0 and ListPartitionReassignments 0 (both
// flexible from 0). Requests decode (and encode, for tests and for
// `postduif cluster`); responses encode (and decode, for the same).

// MARK: ElectLeaders

public struct ElectLeadersRequest: Sendable, Equatable {
    /// 0: the preferred replica; 1: unclean (v1+; v0 is preferred).
    public var electionType: Int8
    /// Nil: every partition of the cluster.
    public var topics: [TopicPartitions<Int32>]?
    public var timeoutMilliseconds: Int32

    public init(electionType: Int8 = 0, topics: [TopicPartitions<Int32>]?, timeoutMilliseconds: Int32 = 30_000) {
        self.electionType = electionType
        self.topics = topics
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ElectLeadersRequest {
        let flexible = version >= 2
        let type = version >= 1 ? try reader.readInt8("election type") : 0
        let topics = try reader.readArray(compact: flexible, elementBytesMin: 3, "topics") { (reader: inout ByteReader) throws(WireError) -> TopicPartitions<Int32> in
            let name = try reader.readString(compact: flexible, "topic")
            let partitions = try reader.readArray(compact: flexible, elementBytesMin: 4, "partitions") { (reader: inout ByteReader) throws(WireError) -> Int32 in
                try reader.readInt32("partition")
            } ?? []
            if flexible { try reader.skipTaggedFields() }
            return TopicPartitions(name: name, partitions: partitions)
        }
        let timeout = try reader.readInt32("timeout")
        if flexible { try reader.skipTaggedFields() }
        return ElectLeadersRequest(electionType: type, topics: topics, timeoutMilliseconds: timeout)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        if version >= 1 { writer.writeInt8(electionType) }
        writer.writeArray(topics, compact: flexible) { writer, topic in
            writer.writeString(topic.name, compact: flexible)
            writer.writeArray(topic.partitions, compact: flexible) { $0.writeInt32($1) }
            if flexible { writer.writeEmptyTaggedFields() }
        }
        writer.writeInt32(timeoutMilliseconds)
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

/// A partition's outcome: its index, an error code and message.
public struct PartitionOutcome: Sendable, Equatable {
    public var index: Int32
    public var errorCode: Int16
    public var errorMessage: String?

    public init(index: Int32, errorCode: Int16 = 0, errorMessage: String? = nil) {
        self.index = index
        self.errorCode = errorCode
        self.errorMessage = errorMessage
    }
}

public struct ElectLeadersResponse: Sendable, Equatable {
    /// v1+; a v0 answer carries a refusal in every partition instead.
    public var errorCode: Int16
    public var topics: [TopicPartitions<PartitionOutcome>]

    public init(errorCode: Int16 = 0, topics: [TopicPartitions<PartitionOutcome>]) {
        self.errorCode = errorCode
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeInt32(0)  // throttle time
        if version >= 1 { writer.writeInt16(errorCode) }
        writer.writeTopics(topics, compact: flexible) { writer, partition in
            writer.writeInt32(partition.index)
            writer.writeInt16(partition.errorCode)
            writer.writeString(partition.errorMessage, compact: flexible)
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ElectLeadersResponse {
        let flexible = version >= 2
        _ = try reader.readInt32("throttle time")
        let code = version >= 1 ? try reader.readInt16("error code") : 0
        let topics = try reader.readTopics(compact: flexible) { (reader: inout ByteReader) throws(WireError) -> PartitionOutcome in
            PartitionOutcome(index: try reader.readInt32("partition"), errorCode: try reader.readInt16("error code"),
                             errorMessage: try reader.readNullableString(compact: flexible, "error message"))
        }
        if flexible { try reader.skipTaggedFields() }
        return ElectLeadersResponse(errorCode: code, topics: topics)
    }
}

// MARK: AlterPartitionReassignments

public struct AlterPartitionReassignmentsRequest: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        /// The target replicas; nil cancels the move under way.
        public var replicas: [Int32]?

        public init(index: Int32, replicas: [Int32]?) {
            self.index = index
            self.replicas = replicas
        }
    }

    public var timeoutMilliseconds: Int32
    public var topics: [TopicPartitions<Partition>]

    public init(timeoutMilliseconds: Int32 = 30_000, topics: [TopicPartitions<Partition>]) {
        self.timeoutMilliseconds = timeoutMilliseconds
        self.topics = topics
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> AlterPartitionReassignmentsRequest {
        let timeout = try reader.readInt32("timeout")
        let topics = try reader.readTopics(compact: true) { (reader: inout ByteReader) throws(WireError) -> Partition in
            let index = try reader.readInt32("partition")
            let replicas = try reader.readArray(compact: true, elementBytesMin: 4, "replicas") { (reader: inout ByteReader) throws(WireError) -> Int32 in
                try reader.readInt32("replica")
            }
            return Partition(index: index, replicas: replicas)
        }
        try reader.skipTaggedFields()
        return AlterPartitionReassignmentsRequest(timeoutMilliseconds: timeout, topics: topics)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt32(timeoutMilliseconds)
        writer.writeTopics(topics, compact: true) { writer, partition in
            writer.writeInt32(partition.index)
            writer.writeArray(partition.replicas, compact: true) { $0.writeInt32($1) }
        }
        writer.writeEmptyTaggedFields()
    }
}

public struct AlterPartitionReassignmentsResponse: Sendable, Equatable {
    public var errorCode: Int16
    public var errorMessage: String?
    public var topics: [TopicPartitions<PartitionOutcome>]

    public init(errorCode: Int16 = 0, errorMessage: String? = nil, topics: [TopicPartitions<PartitionOutcome>]) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt32(0)  // throttle time
        writer.writeInt16(errorCode)
        writer.writeString(errorMessage, compact: true)
        writer.writeTopics(topics, compact: true) { writer, partition in
            writer.writeInt32(partition.index)
            writer.writeInt16(partition.errorCode)
            writer.writeString(partition.errorMessage, compact: true)
        }
        writer.writeEmptyTaggedFields()
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> AlterPartitionReassignmentsResponse {
        _ = try reader.readInt32("throttle time")
        let code = try reader.readInt16("error code")
        let message = try reader.readNullableString(compact: true, "error message")
        let topics = try reader.readTopics(compact: true) { (reader: inout ByteReader) throws(WireError) -> PartitionOutcome in
            PartitionOutcome(index: try reader.readInt32("partition"), errorCode: try reader.readInt16("error code"),
                             errorMessage: try reader.readNullableString(compact: true, "error message"))
        }
        try reader.skipTaggedFields()
        return AlterPartitionReassignmentsResponse(errorCode: code, errorMessage: message, topics: topics)
    }
}

// MARK: ListPartitionReassignments

public struct ListPartitionReassignmentsRequest: Sendable, Equatable {
    public var timeoutMilliseconds: Int32
    /// Nil: every partition being moved.
    public var topics: [TopicPartitions<Int32>]?

    public init(timeoutMilliseconds: Int32 = 30_000, topics: [TopicPartitions<Int32>]?) {
        self.timeoutMilliseconds = timeoutMilliseconds
        self.topics = topics
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ListPartitionReassignmentsRequest {
        let timeout = try reader.readInt32("timeout")
        let topics = try reader.readArray(compact: true, elementBytesMin: 3, "topics") { (reader: inout ByteReader) throws(WireError) -> TopicPartitions<Int32> in
            let name = try reader.readString(compact: true, "topic")
            let partitions = try reader.readArray(compact: true, elementBytesMin: 4, "partitions") { (reader: inout ByteReader) throws(WireError) -> Int32 in
                try reader.readInt32("partition")
            } ?? []
            try reader.skipTaggedFields()
            return TopicPartitions(name: name, partitions: partitions)
        }
        try reader.skipTaggedFields()
        return ListPartitionReassignmentsRequest(timeoutMilliseconds: timeout, topics: topics)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt32(timeoutMilliseconds)
        writer.writeArray(topics, compact: true) { writer, topic in
            writer.writeString(topic.name, compact: true)
            writer.writeArray(topic.partitions, compact: true) { $0.writeInt32($1) }
            writer.writeEmptyTaggedFields()
        }
        writer.writeEmptyTaggedFields()
    }
}

public struct ListPartitionReassignmentsResponse: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var replicas: [Int32]
        public var adding: [Int32]
        public var removing: [Int32]

        public init(index: Int32, replicas: [Int32], adding: [Int32], removing: [Int32]) {
            self.index = index
            self.replicas = replicas
            self.adding = adding
            self.removing = removing
        }
    }

    public var errorCode: Int16
    public var errorMessage: String?
    public var topics: [TopicPartitions<Partition>]

    public init(errorCode: Int16 = 0, errorMessage: String? = nil, topics: [TopicPartitions<Partition>]) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt32(0)  // throttle time
        writer.writeInt16(errorCode)
        writer.writeString(errorMessage, compact: true)
        writer.writeTopics(topics, compact: true) { writer, partition in
            writer.writeInt32(partition.index)
            for replicas in [partition.replicas, partition.adding, partition.removing] {
                writer.writeArray(replicas, compact: true) { $0.writeInt32($1) }
            }
        }
        writer.writeEmptyTaggedFields()
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ListPartitionReassignmentsResponse {
        _ = try reader.readInt32("throttle time")
        let code = try reader.readInt16("error code")
        let message = try reader.readNullableString(compact: true, "error message")
        let topics = try reader.readTopics(compact: true) { (reader: inout ByteReader) throws(WireError) -> Partition in
            let index = try reader.readInt32("partition")
            var lists: [[Int32]] = []
            for _ in 0..<3 {
                lists.append(try reader.readArray(compact: true, elementBytesMin: 4, "replicas") { (reader: inout ByteReader) throws(WireError) -> Int32 in
                    try reader.readInt32("replica")
                } ?? [])
            }
            return Partition(index: index, replicas: lists[0], adding: lists[1], removing: lists[2])
        }
        try reader.skipTaggedFields()
        return ListPartitionReassignmentsResponse(errorCode: code, errorMessage: message, topics: topics)
    }
}
