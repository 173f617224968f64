// DescribeConfigs 0-2: requests decode (and encode, for tests), responses
// encode (and decode).

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
