// Committed offsets of consumer groups: OffsetCommit 0-7, OffsetFetch 0-5
// (none of them flexible). OffsetCommit v0 names no generation or member
// (a commit outside any group generation); v1 carries a commit timestamp
// per partition, which the broker ignores as Kafka does since 2.1.

public struct OffsetCommitRequest: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var offset: Int64
        public var leaderEpoch: Int32
        public var metadata: String?

        public init(index: Int32, offset: Int64, leaderEpoch: Int32 = -1, metadata: String?) {
            self.index = index
            self.offset = offset
            self.leaderEpoch = leaderEpoch
            self.metadata = metadata
        }
    }

    public var groupID: String
    public var generationID: Int32
    public var memberID: String
    public var topics: [(name: String, partitions: [Partition])]

    public init(groupID: String, generationID: Int32, memberID: String, topics: [(name: String, partitions: [Partition])]) {
        self.groupID = groupID
        self.generationID = generationID
        self.memberID = memberID
        self.topics = topics
    }

    public static func == (lhs: OffsetCommitRequest, rhs: OffsetCommitRequest) -> Bool {
        lhs.groupID == rhs.groupID && lhs.generationID == rhs.generationID && lhs.memberID == rhs.memberID
            && lhs.topics.map(\.name) == rhs.topics.map(\.name) && lhs.topics.map(\.partitions) == rhs.topics.map(\.partitions)
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> OffsetCommitRequest {
        let groupID = try reader.readString("group id")
        let generation = version >= 1 ? try reader.readInt32("generation id") : -1
        let memberID = version >= 1 ? try reader.readString("member id") : ""
        if version >= 7 { _ = try reader.readNullableString("group instance id") }
        if version >= 2 && version <= 4 { _ = try reader.readInt64("retention time") }
        let topics = try reader.readArray(elementBytesMin: 6, "topics") { (reader: inout ByteReader) throws(WireError) -> (name: String, partitions: [Partition]) in
            let name = try reader.readString("topic")
            let partitions = try reader.readArray(elementBytesMin: 14, "partitions") { (reader: inout ByteReader) throws(WireError) -> Partition in
                let index = try reader.readInt32("partition")
                let offset = try reader.readInt64("offset")
                let epoch = version >= 6 ? try reader.readInt32("leader epoch") : -1
                if version == 1 { _ = try reader.readInt64("commit timestamp") }
                return Partition(index: index, offset: offset, leaderEpoch: epoch, metadata: try reader.readNullableString("metadata"))
            } ?? []
            return (name, partitions)
        } ?? []
        return OffsetCommitRequest(groupID: groupID, generationID: generation, memberID: memberID, topics: topics)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(groupID)
        if version >= 1 {
            writer.writeInt32(generationID)
            writer.writeString(memberID)
        }
        if version >= 7 { writer.writeString(nil) }
        if version >= 2 && version <= 4 { writer.writeInt64(-1) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                writer.writeInt64(partition.offset)
                if version >= 6 { writer.writeInt32(partition.leaderEpoch) }
                if version == 1 { writer.writeInt64(-1) }
                writer.writeString(partition.metadata)
            }
        }
    }
}

/// OffsetCommit's answer: an error code per partition.
public struct OffsetCommitResponse: Sendable, Equatable {
    public var topics: [(name: String, partitions: [(index: Int32, errorCode: Int16)])]

    public init(topics: [(name: String, partitions: [(index: Int32, errorCode: Int16)])]) {
        self.topics = topics
    }

    public static func == (lhs: OffsetCommitResponse, rhs: OffsetCommitResponse) -> Bool {
        lhs.topics.map(\.name) == rhs.topics.map(\.name)
            && lhs.topics.map { $0.partitions.map(\.index) } == rhs.topics.map { $0.partitions.map(\.index) }
            && lhs.topics.map { $0.partitions.map(\.errorCode) } == rhs.topics.map { $0.partitions.map(\.errorCode) }
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 3 { writer.writeInt32(0) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                writer.writeInt16(partition.errorCode)
            }
        }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> OffsetCommitResponse {
        if version >= 3 { _ = try reader.readInt32() }
        let topics = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> (name: String, partitions: [(index: Int32, errorCode: Int16)]) in
            let name = try reader.readString()
            let partitions = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> (index: Int32, errorCode: Int16) in
                (try reader.readInt32(), try reader.readInt16())
            } ?? []
            return (name, partitions)
        } ?? []
        return OffsetCommitResponse(topics: topics)
    }
}

public struct OffsetFetchRequest: Sendable, Equatable {
    public var groupID: String
    /// Nil asks for every committed partition of the group (v2+).
    public var topics: [(name: String, partitions: [Int32])]?

    public init(groupID: String, topics: [(name: String, partitions: [Int32])]?) {
        self.groupID = groupID
        self.topics = topics
    }

    public static func == (lhs: OffsetFetchRequest, rhs: OffsetFetchRequest) -> Bool {
        lhs.groupID == rhs.groupID && lhs.topics?.map(\.name) == rhs.topics?.map(\.name) && lhs.topics?.map(\.partitions) == rhs.topics?.map(\.partitions)
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> OffsetFetchRequest {
        let groupID = try reader.readString("group id")
        let topics = try reader.readArray(elementBytesMin: 6, "topics") { (reader: inout ByteReader) throws(WireError) -> (name: String, partitions: [Int32]) in
            let name = try reader.readString("topic")
            let partitions = try reader.readArray(elementBytesMin: 4, "partitions") { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() } ?? []
            return (name, partitions)
        }
        return OffsetFetchRequest(groupID: groupID, topics: topics)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(groupID)
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { $0.writeInt32($1) }
        }
    }
}

public struct OffsetFetchResponse: Sendable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var offset: Int64
        public var leaderEpoch: Int32
        public var metadata: String?
        public var errorCode: Int16

        public init(index: Int32, offset: Int64, leaderEpoch: Int32, metadata: String?, errorCode: Int16) {
            self.index = index
            self.offset = offset
            self.leaderEpoch = leaderEpoch
            self.metadata = metadata
            self.errorCode = errorCode
        }
    }

    public var topics: [(name: String, partitions: [Partition])]
    public var errorCode: Int16

    public init(topics: [(name: String, partitions: [Partition])], errorCode: Int16 = 0) {
        self.topics = topics
        self.errorCode = errorCode
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 3 { writer.writeInt32(0) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                writer.writeInt64(partition.offset)
                if version >= 5 { writer.writeInt32(partition.leaderEpoch) }
                writer.writeString(partition.metadata)
                writer.writeInt16(partition.errorCode)
            }
        }
        if version >= 2 { writer.writeInt16(errorCode) }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> OffsetFetchResponse {
        if version >= 3 { _ = try reader.readInt32() }
        let topics = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> (name: String, partitions: [Partition]) in
            let name = try reader.readString()
            let partitions = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Partition in
                let index = try reader.readInt32()
                let offset = try reader.readInt64()
                let epoch = version >= 5 ? try reader.readInt32() : -1
                return Partition(index: index, offset: offset, leaderEpoch: epoch, metadata: try reader.readNullableString(), errorCode: try reader.readInt16())
            } ?? []
            return (name, partitions)
        } ?? []
        let error = version >= 2 ? try reader.readInt16() : 0
        return OffsetFetchResponse(topics: topics, errorCode: error)
    }
}
