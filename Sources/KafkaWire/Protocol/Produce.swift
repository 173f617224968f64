public struct ProduceRequest: Sendable {
    public struct PartitionData: Sendable {
        public var index: Int32
        /// The partition's record batches, unvalidated (nil when the client sent null).
        public var records: [UInt8]?
    }

    public struct TopicData: Sendable {
        public var name: String
        public var partitions: [PartitionData]
    }

    public var transactionalID: String?
    public var acks: Int16
    public var timeoutMilliseconds: Int32
    public var topics: [TopicData]

    public init(transactionalID: String? = nil, acks: Int16, timeoutMilliseconds: Int32, topics: [TopicData]) {
        self.transactionalID = transactionalID
        self.acks = acks
        self.timeoutMilliseconds = timeoutMilliseconds
        self.topics = topics
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ProduceRequest {
        var transactionalID: String? = nil
        if version >= 3 { transactionalID = try reader.readNullableString("transactional id") }
        let acks = try reader.readInt16("acks")
        let timeout = try reader.readInt32("timeout")
        let topics = try reader.readArray(elementBytesMin: 6, "topics") { (reader: inout ByteReader) throws(WireError) -> TopicData in
            let name = try reader.readString("topic")
            let partitions = try reader.readArray(elementBytesMin: 8, "partitions") { (reader: inout ByteReader) throws(WireError) -> PartitionData in
                PartitionData(index: try reader.readInt32("partition"), records: try reader.readNullableBytes("records"))
            } ?? []
            return TopicData(name: name, partitions: partitions)
        } ?? []
        return ProduceRequest(transactionalID: transactionalID, acks: acks, timeoutMilliseconds: timeout, topics: topics)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 3 { writer.writeString(transactionalID) }
        writer.writeInt16(acks)
        writer.writeInt32(timeoutMilliseconds)
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                writer.writeNullableBytes(partition.records)
            }
        }
    }
}

extension ProduceRequest.PartitionData {
    public init(index: Int32, batch: [UInt8]?) {
        self.index = index
        self.records = batch
    }
}

extension ProduceRequest.TopicData {
    public init(topic: String, partitions: [ProduceRequest.PartitionData]) {
        self.name = topic
        self.partitions = partitions
    }
}

public struct ProduceResponse: Sendable, Equatable {
    public struct PartitionResponse: Sendable, Equatable {
        public var index: Int32
        public var errorCode: Int16
        public var baseOffset: Int64
        public var logAppendTimeMilliseconds: Int64 = -1
        public var logStartOffset: Int64 = -1
        public var errorMessage: String? = nil

        public init(index: Int32, errorCode: Int16, baseOffset: Int64, logStartOffset: Int64 = -1, errorMessage: String? = nil) {
            self.index = index
            self.errorCode = errorCode
            self.baseOffset = baseOffset
            self.logStartOffset = logStartOffset
            self.errorMessage = errorMessage
        }
    }

    public struct TopicResponse: Sendable, Equatable {
        public var name: String
        public var partitions: [PartitionResponse]

        public init(name: String, partitions: [PartitionResponse]) {
            self.name = name
            self.partitions = partitions
        }
    }

    public var topics: [TopicResponse]
    public var throttleTimeMilliseconds: Int32 = 0

    public init(topics: [TopicResponse]) {
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                writer.writeInt16(partition.errorCode)
                writer.writeInt64(partition.baseOffset)
                if version >= 2 { writer.writeInt64(partition.logAppendTimeMilliseconds) }
                if version >= 5 { writer.writeInt64(partition.logStartOffset) }
                if version >= 8 {
                    writer.writeArrayCount(0)  // record errors: a refused batch is refused whole
                    writer.writeString(partition.errorMessage)
                }
            }
        }
        if version >= 1 { writer.writeInt32(throttleTimeMilliseconds) }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ProduceResponse {
        let topics = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> TopicResponse in
            let name = try reader.readString()
            let partitions = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> PartitionResponse in
                var partition = PartitionResponse(index: try reader.readInt32(), errorCode: try reader.readInt16(), baseOffset: try reader.readInt64())
                if version >= 2 { partition.logAppendTimeMilliseconds = try reader.readInt64() }
                if version >= 5 { partition.logStartOffset = try reader.readInt64() }
                if version >= 8 {
                    _ = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Int32 in
                        let index = try reader.readInt32()
                        _ = try reader.readNullableString()
                        return index
                    }
                    partition.errorMessage = try reader.readNullableString()
                }
                return partition
            } ?? []
            return TopicResponse(name: name, partitions: partitions)
        } ?? []
        var response = ProduceResponse(topics: topics)
        if version >= 1 { response.throttleTimeMilliseconds = try reader.readInt32() }
        return response
    }
}
