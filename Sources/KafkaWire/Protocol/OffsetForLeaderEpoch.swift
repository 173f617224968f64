// OffsetForLeaderEpoch 2-3, for clients and for followers reconciling with
// their leader: requests decode and encode, responses encode and decode.

public struct OffsetForLeaderEpochRequest: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var currentLeaderEpoch: Int32
        public var leaderEpoch: Int32

        public init(index: Int32, currentLeaderEpoch: Int32, leaderEpoch: Int32) {
            self.index = index
            self.currentLeaderEpoch = currentLeaderEpoch
            self.leaderEpoch = leaderEpoch
        }
    }

    public struct Topic: Sendable, Equatable {
        public var name: String
        public var partitions: [Partition]

        public init(name: String, partitions: [Partition]) {
            self.name = name
            self.partitions = partitions
        }
    }

    public var replicaID: Int32 = -2
    public var topics: [Topic]

    public init(topics: [Topic]) {
        self.topics = topics
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> OffsetForLeaderEpochRequest {
        var replicaID: Int32 = -2
        if version >= 3 { replicaID = try reader.readInt32("replica id") }
        let topics = try reader.readArray(elementBytesMin: 6, "topics") { (reader: inout ByteReader) throws(WireError) -> Topic in
            let name = try reader.readString("topic")
            let partitions = try reader.readArray(elementBytesMin: 8, "partitions") { (reader: inout ByteReader) throws(WireError) -> Partition in
                let index = try reader.readInt32("partition")
                let current = version >= 2 ? try reader.readInt32("current leader epoch") : -1
                return Partition(index: index, currentLeaderEpoch: current, leaderEpoch: try reader.readInt32("leader epoch"))
            } ?? []
            return Topic(name: name, partitions: partitions)
        } ?? []
        var request = OffsetForLeaderEpochRequest(topics: topics)
        request.replicaID = replicaID
        return request
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 3 { writer.writeInt32(replicaID) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                if version >= 2 { writer.writeInt32(partition.currentLeaderEpoch) }
                writer.writeInt32(partition.leaderEpoch)
            }
        }
    }
}

public struct OffsetForLeaderEpochResponse: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var errorCode: Int16
        public var index: Int32
        public var leaderEpoch: Int32
        public var endOffset: Int64

        public init(errorCode: Int16, index: Int32, leaderEpoch: Int32, endOffset: Int64) {
            self.errorCode = errorCode
            self.index = index
            self.leaderEpoch = leaderEpoch
            self.endOffset = endOffset
        }
    }

    public struct Topic: Sendable, Equatable {
        public var name: String
        public var partitions: [Partition]

        public init(name: String, partitions: [Partition]) {
            self.name = name
            self.partitions = partitions
        }
    }

    public var throttleTimeMilliseconds: Int32 = 0
    public var topics: [Topic]

    public init(topics: [Topic]) {
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 2 { writer.writeInt32(throttleTimeMilliseconds) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt16(partition.errorCode)
                writer.writeInt32(partition.index)
                if version >= 1 { writer.writeInt32(partition.leaderEpoch) }
                writer.writeInt64(partition.endOffset)
            }
        }
    }

    /// The client side, for followers (v2–3).
    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> OffsetForLeaderEpochResponse {
        let throttle = version >= 2 ? try reader.readInt32() : 0
        let topics = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Topic in
            let name = try reader.readString()
            let partitions = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Partition in
                let code = try reader.readInt16()
                let index = try reader.readInt32()
                let epoch = version >= 1 ? try reader.readInt32() : -1
                return Partition(errorCode: code, index: index, leaderEpoch: epoch, endOffset: try reader.readInt64())
            } ?? []
            return Topic(name: name, partitions: partitions)
        } ?? []
        var response = OffsetForLeaderEpochResponse(topics: topics)
        response.throttleTimeMilliseconds = throttle
        return response
    }
}
