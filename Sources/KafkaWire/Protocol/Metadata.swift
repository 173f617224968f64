public struct MetadataRequest: Sendable, Equatable {
    /// Nil asks for every topic (in v0 an empty list means every topic too).
    public var topics: [String]?
    public var allowAutoTopicCreation: Bool

    public init(topics: [String]?, allowAutoTopicCreation: Bool = true) {
        self.topics = topics
        self.allowAutoTopicCreation = allowAutoTopicCreation
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> MetadataRequest {
        var topics = try reader.readArray(elementBytesMin: 2, "topics") { (reader: inout ByteReader) throws(WireError) -> String in
            try reader.readString("topic name")
        }
        if version == 0 && topics?.isEmpty == true { topics = nil }
        var allow = true
        if version >= 4 { allow = try reader.readBool() }
        if version >= 8 {
            _ = try reader.readBool()  // include cluster authorized operations
            _ = try reader.readBool()  // include topic authorized operations
        }
        return MetadataRequest(topics: topics, allowAutoTopicCreation: allow)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeArray(version == 0 ? (topics ?? []) : topics) { $0.writeString($1) }
        if version >= 4 { writer.writeBool(allowAutoTopicCreation) }
        if version >= 8 { writer.writeBool(false); writer.writeBool(false) }
    }
}

public struct MetadataResponse: Sendable, Equatable {
    public struct Broker: Sendable, Equatable {
        public var nodeID: Int32
        public var host: String
        public var port: Int32
        public var rack: String?

        public init(nodeID: Int32, host: String, port: Int32, rack: String? = nil) {
            self.nodeID = nodeID
            self.host = host
            self.port = port
            self.rack = rack
        }
    }

    public struct Partition: Sendable, Equatable {
        public var errorCode: Int16
        public var index: Int32
        public var leaderID: Int32
        public var leaderEpoch: Int32
        public var replicaNodes: [Int32]
        public var isrNodes: [Int32]
        public var offlineReplicas: [Int32] = []

        public init(errorCode: Int16 = 0, index: Int32, leaderID: Int32, leaderEpoch: Int32, replicaNodes: [Int32], isrNodes: [Int32]) {
            self.errorCode = errorCode
            self.index = index
            self.leaderID = leaderID
            self.leaderEpoch = leaderEpoch
            self.replicaNodes = replicaNodes
            self.isrNodes = isrNodes
        }
    }

    public struct Topic: Sendable, Equatable {
        public var errorCode: Int16
        public var name: String
        public var isInternal = false
        public var partitions: [Partition]

        public init(errorCode: Int16, name: String, partitions: [Partition]) {
            self.errorCode = errorCode
            self.name = name
            self.partitions = partitions
        }
    }

    public var throttleTimeMilliseconds: Int32 = 0
    public var brokers: [Broker]
    public var clusterID: String?
    public var controllerID: Int32
    public var topics: [Topic]

    public init(brokers: [Broker], clusterID: String?, controllerID: Int32, topics: [Topic]) {
        self.brokers = brokers
        self.clusterID = clusterID
        self.controllerID = controllerID
        self.topics = topics
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 3 { writer.writeInt32(throttleTimeMilliseconds) }
        writer.writeArray(brokers) { writer, broker in
            writer.writeInt32(broker.nodeID)
            writer.writeString(broker.host)
            writer.writeInt32(broker.port)
            if version >= 1 { writer.writeString(broker.rack) }
        }
        if version >= 2 { writer.writeString(clusterID) }
        if version >= 1 { writer.writeInt32(controllerID) }
        writer.writeArray(topics) { writer, topic in
            writer.writeInt16(topic.errorCode)
            writer.writeString(topic.name)
            if version >= 1 { writer.writeBool(topic.isInternal) }
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt16(partition.errorCode)
                writer.writeInt32(partition.index)
                writer.writeInt32(partition.leaderID)
                if version >= 7 { writer.writeInt32(partition.leaderEpoch) }
                writer.writeArray(partition.replicaNodes) { $0.writeInt32($1) }
                writer.writeArray(partition.isrNodes) { $0.writeInt32($1) }
                if version >= 5 { writer.writeArray(partition.offlineReplicas) { $0.writeInt32($1) } }
            }
            if version >= 8 { writer.writeInt32(Int32.min) }  // topic authorized operations: not computed
        }
        if version >= 8 { writer.writeInt32(Int32.min) }  // cluster authorized operations: not computed
    }

    /// The client side, for the load tool and replica fetchers.
    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> MetadataResponse {
        let throttle = version >= 3 ? try reader.readInt32() : 0
        let brokers = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Broker in
            var broker = Broker(nodeID: try reader.readInt32(), host: try reader.readString(), port: try reader.readInt32())
            if version >= 1 { broker.rack = try reader.readNullableString() }
            return broker
        } ?? []
        let clusterID = version >= 2 ? try reader.readNullableString() : nil
        let controllerID = version >= 1 ? try reader.readInt32() : -1
        let topics = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Topic in
            let errorCode = try reader.readInt16()
            let name = try reader.readString()
            let isInternal = version >= 1 ? try reader.readBool() : false
            let partitions = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Partition in
                let errorCode = try reader.readInt16()
                let index = try reader.readInt32()
                let leaderID = try reader.readInt32()
                let leaderEpoch = version >= 7 ? try reader.readInt32() : -1
                let replicas = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() } ?? []
                let isr = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() } ?? []
                var partition = Partition(errorCode: errorCode, index: index, leaderID: leaderID, leaderEpoch: leaderEpoch, replicaNodes: replicas, isrNodes: isr)
                if version >= 5 {
                    partition.offlineReplicas = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() } ?? []
                }
                return partition
            } ?? []
            if version >= 8 { _ = try reader.readInt32() }
            var topic = Topic(errorCode: errorCode, name: name, partitions: partitions)
            topic.isInternal = isInternal
            return topic
        } ?? []
        if version >= 8 { _ = try reader.readInt32() }
        var response = MetadataResponse(brokers: brokers, clusterID: clusterID, controllerID: controllerID, topics: topics)
        response.throttleTimeMilliseconds = throttle
        return response
    }
}
