// ListOffsets 1-5: requests decode (and encode, for tests and the load tool),
// responses encode (and decode).

public struct ListOffsetsRequest: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var currentLeaderEpoch: Int32 = -1
        /// -1 latest, -2 earliest, otherwise a timestamp in milliseconds.
        public var timestamp: Int64

        public init(index: Int32, timestamp: Int64) {
            self.index = index
            self.timestamp = timestamp
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

    public var replicaID: Int32 = -1
    public var isolationLevel: Int8 = 0
    public var topics: [Topic]

    public init(topics: [Topic]) {
        self.topics = topics
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ListOffsetsRequest {
        let replicaID = try reader.readInt32("replica id")
        var isolation: Int8 = 0
        if version >= 2 { isolation = try reader.readInt8("isolation level") }
        let topics = try reader.readArray(elementBytesMin: 6, "topics") { (reader: inout ByteReader) throws(WireError) -> Topic in
            let name = try reader.readString("topic")
            let partitions = try reader.readArray(elementBytesMin: 12, "partitions") { (reader: inout ByteReader) throws(WireError) -> Partition in
                let index = try reader.readInt32("partition")
                var epoch: Int32 = -1
                if version >= 4 { epoch = try reader.readInt32("current leader epoch") }
                var partition = Partition(index: index, timestamp: try reader.readInt64("timestamp"))
                partition.currentLeaderEpoch = epoch
                if version == 0 { _ = try reader.readInt32("max num offsets") }
                return partition
            } ?? []
            return Topic(name: name, partitions: partitions)
        } ?? []
        var request = ListOffsetsRequest(topics: topics)
        request.replicaID = replicaID
        request.isolationLevel = isolation
        return request
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt32(replicaID)
        if version >= 2 { writer.writeInt8(isolationLevel) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                if version >= 4 { writer.writeInt32(partition.currentLeaderEpoch) }
                writer.writeInt64(partition.timestamp)
            }
        }
    }
}

public struct ListOffsetsResponse: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var errorCode: Int16
        public var timestamp: Int64
        public var offset: Int64
        public var leaderEpoch: Int32

        public init(index: Int32, errorCode: Int16, timestamp: Int64, offset: Int64, leaderEpoch: Int32) {
            self.index = index
            self.errorCode = errorCode
            self.timestamp = timestamp
            self.offset = offset
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
                writer.writeInt32(partition.index)
                writer.writeInt16(partition.errorCode)
                writer.writeInt64(partition.timestamp)
                writer.writeInt64(partition.offset)
                if version >= 4 { writer.writeInt32(partition.leaderEpoch) }
            }
        }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ListOffsetsResponse {
        var throttle: Int32 = 0
        if version >= 2 { throttle = try reader.readInt32() }
        let topics = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Topic in
            let name = try reader.readString()
            let partitions = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Partition in
                let index = try reader.readInt32()
                let error = try reader.readInt16()
                let timestamp = try reader.readInt64()
                let offset = try reader.readInt64()
                let epoch = version >= 4 ? try reader.readInt32() : -1
                return Partition(index: index, errorCode: error, timestamp: timestamp, offset: offset, leaderEpoch: epoch)
            } ?? []
            return Topic(name: name, partitions: partitions)
        } ?? []
        var response = ListOffsetsResponse(topics: topics)
        response.throttleTimeMilliseconds = throttle
        return response
    }
}
