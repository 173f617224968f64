// ListOffsets, CreateTopics, DeleteTopics, InitProducerId, FindCoordinator
// and OffsetForLeaderEpoch: requests decode (and encode, for tests and the
// load tool), responses encode (and decode).

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

public struct CreateTopicsRequest: Sendable, Equatable {
    public struct Topic: Sendable, Equatable {
        public var name: String
        /// -1 asks for the broker's default (v4+).
        public var partitionCount: Int32
        public var replicationFactor: Int16
        public var assignmentsCount: Int
        public var configs: [(String, String?)]

        public init(name: String, partitionCount: Int32, replicationFactor: Int16, configs: [(String, String?)] = []) {
            self.name = name
            self.partitionCount = partitionCount
            self.replicationFactor = replicationFactor
            self.assignmentsCount = 0
            self.configs = configs
        }

        public static func == (lhs: Topic, rhs: Topic) -> Bool {
            lhs.name == rhs.name && lhs.partitionCount == rhs.partitionCount && lhs.replicationFactor == rhs.replicationFactor
                && lhs.assignmentsCount == rhs.assignmentsCount && lhs.configs.map(\.0) == rhs.configs.map(\.0) && lhs.configs.map(\.1) == rhs.configs.map(\.1)
        }
    }

    public var topics: [Topic]
    public var timeoutMilliseconds: Int32
    public var validateOnly: Bool

    public init(topics: [Topic], timeoutMilliseconds: Int32 = 60_000, validateOnly: Bool = false) {
        self.topics = topics
        self.timeoutMilliseconds = timeoutMilliseconds
        self.validateOnly = validateOnly
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> CreateTopicsRequest {
        let topics = try reader.readArray(elementBytesMin: 16, "topics") { (reader: inout ByteReader) throws(WireError) -> Topic in
            let name = try reader.readString("topic")
            let count = try reader.readInt32("partition count")
            let factor = try reader.readInt16("replication factor")
            let assignments = try reader.readArray(elementBytesMin: 8, "assignments") { (reader: inout ByteReader) throws(WireError) -> Int32 in
                let index = try reader.readInt32()
                _ = try reader.readArray(elementBytesMin: 4) { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() }
                return index
            } ?? []
            let configs = try reader.readArray(elementBytesMin: 4, "configs") { (reader: inout ByteReader) throws(WireError) -> (String, String?) in
                (try reader.readString("config name"), try reader.readNullableString("config value"))
            } ?? []
            var topic = Topic(name: name, partitionCount: count, replicationFactor: factor, configs: configs)
            topic.assignmentsCount = assignments.count
            return topic
        } ?? []
        let timeout = try reader.readInt32("timeout")
        let validateOnly = version >= 1 ? try reader.readBool() : false
        return CreateTopicsRequest(topics: topics, timeoutMilliseconds: timeout, validateOnly: validateOnly)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeInt32(topic.partitionCount)
            writer.writeInt16(topic.replicationFactor)
            writer.writeArrayCount(0)
            writer.writeArray(topic.configs) { writer, config in
                writer.writeString(config.0)
                writer.writeString(config.1)
            }
        }
        writer.writeInt32(timeoutMilliseconds)
        if version >= 1 { writer.writeBool(validateOnly) }
    }
}

public struct CreateTopicsResponse: Sendable, Equatable {
    public struct Result: Sendable, Equatable {
        public var name: String
        public var errorCode: Int16
        public var errorMessage: String?

        public init(name: String, errorCode: Int16, errorMessage: String?) {
            self.name = name
            self.errorCode = errorCode
            self.errorMessage = errorMessage
        }
    }

    public var throttleTimeMilliseconds: Int32 = 0
    public var topics: [Result]

    public init(topics: [Result]) {
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 2 { writer.writeInt32(throttleTimeMilliseconds) }
        writer.writeArray(topics) { writer, result in
            writer.writeString(result.name)
            writer.writeInt16(result.errorCode)
            if version >= 1 { writer.writeString(result.errorMessage) }
        }
    }

    /// The client side (v0–4), for the load tool.
    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> CreateTopicsResponse {
        let throttle = version >= 2 ? try reader.readInt32() : 0
        let topics = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Result in
            let name = try reader.readString()
            let code = try reader.readInt16()
            let message = version >= 1 ? try reader.readNullableString() : nil
            return Result(name: name, errorCode: code, errorMessage: message)
        } ?? []
        var response = CreateTopicsResponse(topics: topics)
        response.throttleTimeMilliseconds = throttle
        return response
    }
}

public struct DeleteTopicsRequest: Sendable, Equatable {
    public var topicNames: [String]
    public var timeoutMilliseconds: Int32

    public init(topicNames: [String], timeoutMilliseconds: Int32 = 30_000) {
        self.topicNames = topicNames
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DeleteTopicsRequest {
        let names = try reader.readArray(elementBytesMin: 2, "topics") { (reader: inout ByteReader) throws(WireError) -> String in
            try reader.readString("topic")
        } ?? []
        return DeleteTopicsRequest(topicNames: names, timeoutMilliseconds: try reader.readInt32("timeout"))
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeArray(topicNames) { $0.writeString($1) }
        writer.writeInt32(timeoutMilliseconds)
    }
}

public struct DeleteTopicsResponse: Sendable, Equatable {
    public var throttleTimeMilliseconds: Int32 = 0
    public var results: [(name: String, errorCode: Int16)]

    public init(results: [(name: String, errorCode: Int16)]) {
        self.results = results
    }

    public static func == (lhs: DeleteTopicsResponse, rhs: DeleteTopicsResponse) -> Bool {
        lhs.results.map(\.name) == rhs.results.map(\.name) && lhs.results.map(\.errorCode) == rhs.results.map(\.errorCode)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 1 { writer.writeInt32(throttleTimeMilliseconds) }
        writer.writeArray(results) { writer, result in
            writer.writeString(result.name)
            writer.writeInt16(result.errorCode)
        }
    }
}

public struct InitProducerIdRequest: Sendable, Equatable {
    public var transactionalID: String?
    public var transactionTimeoutMilliseconds: Int32

    public init(transactionalID: String?, transactionTimeoutMilliseconds: Int32) {
        self.transactionalID = transactionalID
        self.transactionTimeoutMilliseconds = transactionTimeoutMilliseconds
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> InitProducerIdRequest {
        InitProducerIdRequest(transactionalID: try reader.readNullableString("transactional id"), transactionTimeoutMilliseconds: try reader.readInt32("transaction timeout"))
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(transactionalID)
        writer.writeInt32(transactionTimeoutMilliseconds)
    }
}

public struct InitProducerIdResponse: Sendable, Equatable {
    public var throttleTimeMilliseconds: Int32 = 0
    public var errorCode: Int16
    public var producerID: Int64
    public var producerEpoch: Int16

    public init(errorCode: Int16, producerID: Int64, producerEpoch: Int16) {
        self.errorCode = errorCode
        self.producerID = producerID
        self.producerEpoch = producerEpoch
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt32(throttleTimeMilliseconds)
        writer.writeInt16(errorCode)
        writer.writeInt64(producerID)
        writer.writeInt16(producerEpoch)
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> InitProducerIdResponse {
        let throttle = try reader.readInt32()
        var response = InitProducerIdResponse(errorCode: try reader.readInt16(), producerID: try reader.readInt64(), producerEpoch: try reader.readInt16())
        response.throttleTimeMilliseconds = throttle
        return response
    }
}

public struct FindCoordinatorRequest: Sendable, Equatable {
    public var key: String
    /// 0 for a group, 1 for a transaction.
    public var keyType: Int8

    public init(key: String, keyType: Int8 = 0) {
        self.key = key
        self.keyType = keyType
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> FindCoordinatorRequest {
        let key = try reader.readString("key")
        return FindCoordinatorRequest(key: key, keyType: version >= 1 ? try reader.readInt8("key type") : 0)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(key)
        if version >= 1 { writer.writeInt8(keyType) }
    }
}

public struct FindCoordinatorResponse: Sendable, Equatable {
    public var throttleTimeMilliseconds: Int32 = 0
    public var errorCode: Int16
    public var errorMessage: String?
    public var nodeID: Int32
    public var host: String
    public var port: Int32

    public init(errorCode: Int16, errorMessage: String?, nodeID: Int32, host: String, port: Int32) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.nodeID = nodeID
        self.host = host
        self.port = port
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 1 { writer.writeInt32(throttleTimeMilliseconds) }
        writer.writeInt16(errorCode)
        if version >= 1 { writer.writeString(errorMessage) }
        writer.writeInt32(nodeID)
        writer.writeString(host)
        writer.writeInt32(port)
    }
}

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

public struct DescribeConfigsRequest: Sendable, Equatable {
    public struct Resource: Sendable, Equatable {
        /// 2 for a topic, 4 for a broker.
        public var type: Int8
        public var name: String
        /// Nil asks for every config.
        public var keys: [String]?

        public init(type: Int8, name: String, keys: [String]?) {
            self.type = type
            self.name = name
            self.keys = keys
        }
    }

    public var resources: [Resource]
    public var includeSynonyms = false

    public init(resources: [Resource]) {
        self.resources = resources
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DescribeConfigsRequest {
        let resources = try reader.readArray(elementBytesMin: 7, "resources") { (reader: inout ByteReader) throws(WireError) -> Resource in
            let type = try reader.readInt8("resource type")
            let name = try reader.readString("resource name")
            let keys = try reader.readArray(elementBytesMin: 2, "config keys") { (reader: inout ByteReader) throws(WireError) -> String in try reader.readString() }
            return Resource(type: type, name: name, keys: keys)
        } ?? []
        var request = DescribeConfigsRequest(resources: resources)
        if version >= 1 { request.includeSynonyms = try reader.readBool() }
        return request
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeArray(resources) { writer, resource in
            writer.writeInt8(resource.type)
            writer.writeString(resource.name)
            writer.writeArray(resource.keys) { $0.writeString($1) }
        }
        if version >= 1 { writer.writeBool(includeSynonyms) }
    }
}

public struct DescribeConfigsResponse: Sendable, Equatable {
    public struct Config: Sendable, Equatable {
        public var name: String
        public var value: String?
        public var readOnly: Bool
        public var isDefault: Bool
        public var isSensitive = false

        public init(name: String, value: String?, readOnly: Bool, isDefault: Bool) {
            self.name = name
            self.value = value
            self.readOnly = readOnly
            self.isDefault = isDefault
        }
    }

    public struct Result: Sendable, Equatable {
        public var errorCode: Int16
        public var errorMessage: String?
        public var resourceType: Int8
        public var resourceName: String
        public var configs: [Config]

        public init(errorCode: Int16, errorMessage: String?, resourceType: Int8, resourceName: String, configs: [Config]) {
            self.errorCode = errorCode
            self.errorMessage = errorMessage
            self.resourceType = resourceType
            self.resourceName = resourceName
            self.configs = configs
        }
    }

    public var results: [Result]

    public init(results: [Result]) {
        self.results = results
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt32(0)  // throttle time
        writer.writeArray(results) { writer, result in
            writer.writeInt16(result.errorCode)
            writer.writeString(result.errorMessage)
            writer.writeInt8(result.resourceType)
            writer.writeString(result.resourceName)
            writer.writeArray(result.configs) { writer, config in
                writer.writeString(config.name)
                writer.writeString(config.value)
                writer.writeBool(config.readOnly)
                if version == 0 {
                    writer.writeBool(config.isDefault)
                } else {
                    // 1 = DYNAMIC_TOPIC_CONFIG, 4 = STATIC_BROKER_CONFIG, 5 = DEFAULT_CONFIG
                    writer.writeInt8(config.isDefault ? 5 : (result.resourceType == 2 ? 1 : 4))
                }
                writer.writeBool(config.isSensitive)
                if version >= 1 { writer.writeArrayCount(0) }  // synonyms
            }
        }
    }
}
