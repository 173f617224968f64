// CreateTopics 0-4 and DeleteTopics 0-3: requests decode (and encode, for
// tests and the load tool), responses encode (and decode).

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

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DeleteTopicsResponse {
        let throttle = version >= 1 ? try reader.readInt32() : 0
        let results = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> (name: String, errorCode: Int16) in
            (try reader.readString(), try reader.readInt16())
        } ?? []
        var response = DeleteTopicsResponse(results: results)
        response.throttleTimeMilliseconds = throttle
        return response
    }
}
