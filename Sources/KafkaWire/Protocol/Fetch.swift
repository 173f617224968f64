public struct FetchRequest: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var currentLeaderEpoch: Int32 = -1
        public var fetchOffset: Int64
        public var logStartOffset: Int64 = -1
        public var partitionBytesMax: Int32

        public init(index: Int32, currentLeaderEpoch: Int32 = -1, fetchOffset: Int64, partitionBytesMax: Int32) {
            self.index = index
            self.currentLeaderEpoch = currentLeaderEpoch
            self.fetchOffset = fetchOffset
            self.partitionBytesMax = partitionBytesMax
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

    /// The follower's broker id, or -1 for a consumer.
    public var replicaID: Int32 = -1
    public var maxWaitMilliseconds: Int32
    public var minBytes: Int32
    public var maxBytes: Int32 = Int32.max
    public var isolationLevel: Int8 = 0
    public var sessionID: Int32 = 0
    public var sessionEpoch: Int32 = -1
    public var topics: [Topic]
    public var forgottenTopicsCount = 0
    public var rackID: String = ""

    public init(maxWaitMilliseconds: Int32, minBytes: Int32, maxBytes: Int32 = Int32.max, topics: [Topic]) {
        self.maxWaitMilliseconds = maxWaitMilliseconds
        self.minBytes = minBytes
        self.maxBytes = maxBytes
        self.topics = topics
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> FetchRequest {
        let replicaID = try reader.readInt32("replica id")
        let maxWait = try reader.readInt32("max wait")
        let minBytes = try reader.readInt32("min bytes")
        var request = FetchRequest(maxWaitMilliseconds: maxWait, minBytes: minBytes, topics: [])
        request.replicaID = replicaID
        if version >= 3 { request.maxBytes = try reader.readInt32("max bytes") }
        if version >= 4 { request.isolationLevel = try reader.readInt8("isolation level") }
        if version >= 7 {
            request.sessionID = try reader.readInt32("session id")
            request.sessionEpoch = try reader.readInt32("session epoch")
        }
        request.topics = try reader.readArray(elementBytesMin: 6, "topics") { (reader: inout ByteReader) throws(WireError) -> Topic in
            let name = try reader.readString("topic")
            let partitions = try reader.readArray(elementBytesMin: 16, "partitions") { (reader: inout ByteReader) throws(WireError) -> Partition in
                let index = try reader.readInt32("partition")
                var epoch: Int32 = -1
                if version >= 9 { epoch = try reader.readInt32("current leader epoch") }
                let offset = try reader.readInt64("fetch offset")
                var logStart: Int64 = -1
                if version >= 5 { logStart = try reader.readInt64("log start offset") }
                var partition = Partition(index: index, currentLeaderEpoch: epoch, fetchOffset: offset, partitionBytesMax: try reader.readInt32("partition max bytes"))
                partition.logStartOffset = logStart
                return partition
            } ?? []
            return Topic(name: name, partitions: partitions)
        } ?? []
        if version >= 7 {
            let forgotten = try reader.readArray(elementBytesMin: 6, "forgotten topics") { (reader: inout ByteReader) throws(WireError) -> Int in
                _ = try reader.readString("topic")
                return (try reader.readArray(elementBytesMin: 4, "partitions") { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() } ?? []).count
            } ?? []
            request.forgottenTopicsCount = forgotten.count
        }
        if version >= 11 { request.rackID = try reader.readString("rack id") }
        return request
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt32(replicaID)
        writer.writeInt32(maxWaitMilliseconds)
        writer.writeInt32(minBytes)
        if version >= 3 { writer.writeInt32(maxBytes) }
        if version >= 4 { writer.writeInt8(isolationLevel) }
        if version >= 7 { writer.writeInt32(sessionID); writer.writeInt32(sessionEpoch) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                if version >= 9 { writer.writeInt32(partition.currentLeaderEpoch) }
                writer.writeInt64(partition.fetchOffset)
                if version >= 5 { writer.writeInt64(partition.logStartOffset) }
                writer.writeInt32(partition.partitionBytesMax)
            }
        }
        if version >= 7 { writer.writeArrayCount(0) }
        if version >= 11 { writer.writeString(rackID) }
    }
}

public struct FetchResponse: Sendable {
    public struct Partition: Sendable {
        public var index: Int32
        public var errorCode: Int16
        public var highWatermark: Int64
        public var lastStableOffset: Int64
        public var logStartOffset: Int64
        /// KIP-392: the broker the consumer should fetch this partition
        /// from instead (v11+), or -1.
        public var preferredReadReplica: Int32 = -1
        /// Stored batches, written one after another.
        public var batches: [[UInt8]]

        public init(index: Int32, errorCode: Int16, highWatermark: Int64, lastStableOffset: Int64, logStartOffset: Int64, batches: [[UInt8]]) {
            self.index = index
            self.errorCode = errorCode
            self.highWatermark = highWatermark
            self.lastStableOffset = lastStableOffset
            self.logStartOffset = logStartOffset
            self.batches = batches
        }
    }

    public struct Topic: Sendable {
        public var name: String
        public var partitions: [Partition]

        public init(name: String, partitions: [Partition]) {
            self.name = name
            self.partitions = partitions
        }
    }

    public var throttleTimeMilliseconds: Int32 = 0
    public var errorCode: Int16 = 0
    public var sessionID: Int32 = 0
    public var topics: [Topic]

    public init(errorCode: Int16 = 0, topics: [Topic]) {
        self.errorCode = errorCode
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 1 { writer.writeInt32(throttleTimeMilliseconds) }
        if version >= 7 { writer.writeInt16(errorCode); writer.writeInt32(sessionID) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                writer.writeInt16(partition.errorCode)
                writer.writeInt64(partition.highWatermark)
                if version >= 4 {
                    writer.writeInt64(partition.lastStableOffset)
                    if version >= 5 { writer.writeInt64(partition.logStartOffset) }
                    writer.writeArrayCount(0)  // aborted transactions: none, transactions are not supported
                }
                if version >= 11 { writer.writeInt32(partition.preferredReadReplica) }
                let size = partition.batches.reduce(0) { $0 + $1.count }
                writer.writeInt32(Int32(size))
                for batch in partition.batches { writer.writeBytes(batch) }
            }
        }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> FetchResponse {
        var throttle: Int32 = 0
        if version >= 1 { throttle = try reader.readInt32() }
        var errorCode: Int16 = 0
        var sessionID: Int32 = 0
        if version >= 7 { errorCode = try reader.readInt16(); sessionID = try reader.readInt32() }
        let topics = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Topic in
            let name = try reader.readString()
            let partitions = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Partition in
                let index = try reader.readInt32()
                let error = try reader.readInt16()
                let highWatermark = try reader.readInt64()
                var lastStable: Int64 = -1
                var logStart: Int64 = -1
                if version >= 4 {
                    lastStable = try reader.readInt64()
                    if version >= 5 { logStart = try reader.readInt64() }
                    _ = try reader.readArray(elementBytesMin: 16) { (reader: inout ByteReader) throws(WireError) -> Int64 in
                        _ = try reader.readInt64()
                        return try reader.readInt64()
                    }
                }
                var preferred: Int32 = -1
                if version >= 11 { preferred = try reader.readInt32() }
                let records = try reader.readNullableBytes() ?? []
                var partition = Partition(index: index, errorCode: error, highWatermark: highWatermark, lastStableOffset: lastStable, logStartOffset: logStart, batches: records.isEmpty ? [] : [records])
                partition.preferredReadReplica = preferred
                return partition
            } ?? []
            return Topic(name: name, partitions: partitions)
        } ?? []
        var response = FetchResponse(errorCode: errorCode, topics: topics)
        response.throttleTimeMilliseconds = throttle
        response.sessionID = sessionID
        return response
    }
}
