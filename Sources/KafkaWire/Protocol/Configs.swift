// DescribeConfigs 0-4 (flexible from 4), AlterConfigs 0-1 and
// IncrementalAlterConfigs 0-1 (flexible from 1): requests decode (and
// encode, for tests), responses encode (and decode where tests read them).

/// Where a config's value comes from (Kafka's ConfigSource).
public enum ConfigSource: Int8, Sendable {
    case topic = 1
    case dynamicBroker = 2
    case dynamicDefaultBroker = 3
    case staticBroker = 4
    case defaultValue = 5
}

/// A config's data type, as DescribeConfigs v3+ names it (Kafka's ConfigType).
public enum ConfigType: Int8, Sendable {
    case unknown = 0
    case boolean = 1
    case string = 2
    case int = 3
    case short = 4
    case long = 5
    case double = 6
    case list = 7
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
    public var includeDocumentation = false

    public init(resources: [Resource]) {
        self.resources = resources
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DescribeConfigsRequest {
        let flexible = version >= 4
        let resources = try reader.readArray(compact: flexible, elementBytesMin: 4, "resources") { (reader: inout ByteReader) throws(WireError) -> Resource in
            let type = try reader.readInt8("resource type")
            let name = try reader.readString(compact: flexible, "resource name")
            let keys = try reader.readArray(compact: flexible, elementBytesMin: 1, "config keys") { (reader: inout ByteReader) throws(WireError) -> String in
                try reader.readString(compact: flexible)
            }
            if flexible { try reader.skipTaggedFields() }
            return Resource(type: type, name: name, keys: keys)
        } ?? []
        var request = DescribeConfigsRequest(resources: resources)
        if version >= 1 { request.includeSynonyms = try reader.readBool() }
        if version >= 3 { request.includeDocumentation = try reader.readBool() }
        if flexible { try reader.skipTaggedFields() }
        return request
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 4
        writer.writeArray(resources, compact: flexible) { writer, resource in
            writer.writeInt8(resource.type)
            writer.writeString(resource.name, compact: flexible)
            writer.writeArray(resource.keys, compact: flexible) { $0.writeString($1, compact: flexible) }
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if version >= 1 { writer.writeBool(includeSynonyms) }
        if version >= 3 { writer.writeBool(includeDocumentation) }
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

public struct DescribeConfigsResponse: Sendable, Equatable {
    public struct Synonym: Sendable, Equatable {
        public var name: String
        public var value: String?
        public var source: ConfigSource

        public init(name: String, value: String?, source: ConfigSource) {
            self.name = name
            self.value = value
            self.source = source
        }
    }

    public struct Config: Sendable, Equatable {
        public var name: String
        public var value: String?
        public var readOnly: Bool
        public var source: ConfigSource
        public var isSensitive = false
        /// Where the value could come from, the one in force first.
        public var synonyms: [Synonym] = []
        public var type: ConfigType = .unknown
        public var documentation: String? = nil

        public init(name: String, value: String?, readOnly: Bool, source: ConfigSource) {
            self.name = name
            self.value = value
            self.readOnly = readOnly
            self.source = source
        }

        public var isDefault: Bool { source == .defaultValue }
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
        let flexible = version >= 4
        writer.writeInt32(0)  // throttle time
        writer.writeArray(results, compact: flexible) { writer, result in
            writer.writeInt16(result.errorCode)
            writer.writeString(result.errorMessage, compact: flexible)
            writer.writeInt8(result.resourceType)
            writer.writeString(result.resourceName, compact: flexible)
            writer.writeArray(result.configs, compact: flexible) { writer, config in
                writer.writeString(config.name, compact: flexible)
                writer.writeString(config.value, compact: flexible)
                writer.writeBool(config.readOnly)
                if version == 0 {
                    writer.writeBool(config.isDefault)
                } else {
                    writer.writeInt8(config.source.rawValue)
                }
                writer.writeBool(config.isSensitive)
                if version >= 1 {
                    writer.writeArray(config.synonyms, compact: flexible) { writer, synonym in
                        writer.writeString(synonym.name, compact: flexible)
                        writer.writeString(synonym.value, compact: flexible)
                        writer.writeInt8(synonym.source.rawValue)
                        if flexible { writer.writeEmptyTaggedFields() }
                    }
                }
                if version >= 3 {
                    writer.writeInt8(config.type.rawValue)
                    writer.writeString(config.documentation, compact: flexible)
                }
                if flexible { writer.writeEmptyTaggedFields() }
            }
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }

    /// Versions 1-3 (not flexible), for clients.
    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DescribeConfigsResponse {
        _ = try reader.readInt32()
        let results = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Result in
            let code = try reader.readInt16()
            let message = try reader.readNullableString()
            let type = try reader.readInt8()
            let name = try reader.readString()
            let configs = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Config in
                let configName = try reader.readString()
                let value = try reader.readNullableString()
                let readOnly = try reader.readBool()
                let source = ConfigSource(rawValue: try reader.readInt8()) ?? .defaultValue
                var config = Config(name: configName, value: value, readOnly: readOnly, source: source)
                config.isSensitive = try reader.readBool()
                config.synonyms = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Synonym in
                    Synonym(name: try reader.readString(), value: try reader.readNullableString(), source: ConfigSource(rawValue: try reader.readInt8()) ?? .defaultValue)
                } ?? []
                if version >= 3 {
                    config.type = ConfigType(rawValue: try reader.readInt8()) ?? .unknown
                    config.documentation = try reader.readNullableString()
                }
                return config
            } ?? []
            return Result(errorCode: code, errorMessage: message, resourceType: type, resourceName: name, configs: configs)
        } ?? []
        return DescribeConfigsResponse(results: results)
    }
}

/// AlterConfigs (every config of a resource replaced) and
/// IncrementalAlterConfigs (each named config changed by an operation):
/// one request shape, the operation set only by the incremental API.
public struct AlterConfigsRequest: Sendable, Equatable {
    /// IncrementalAlterConfigs' operations (Kafka's OpType).
    public enum Operation: Int8, Sendable {
        case set = 0
        case delete = 1
        case append = 2
        case subtract = 3
    }

    public struct Change: Sendable, Equatable {
        public var name: String
        public var value: String?
        /// `.set` for every change of a (non-incremental) AlterConfigs.
        public var operation: Operation

        public init(name: String, value: String?, operation: Operation = .set) {
            self.name = name
            self.value = value
            self.operation = operation
        }
    }

    public struct Resource: Sendable, Equatable {
        public var type: Int8
        public var name: String
        public var changes: [Change]

        public init(type: Int8, name: String, changes: [Change]) {
            self.type = type
            self.name = name
            self.changes = changes
        }
    }

    public var resources: [Resource]
    public var validateOnly: Bool
    /// True for IncrementalAlterConfigs.
    public var incremental: Bool

    public init(resources: [Resource], validateOnly: Bool = false, incremental: Bool) {
        self.resources = resources
        self.validateOnly = validateOnly
        self.incremental = incremental
    }

    /// `incremental`: IncrementalAlterConfigs (flexible from 1); else AlterConfigs (flexible from 2).
    public static func decode(_ reader: inout ByteReader, version: Int16, incremental: Bool) throws(WireError) -> AlterConfigsRequest {
        let flexible = version >= (incremental ? 1 : 2)
        let resources = try reader.readArray(compact: flexible, elementBytesMin: 4, "resources") { (reader: inout ByteReader) throws(WireError) -> Resource in
            let type = try reader.readInt8("resource type")
            let name = try reader.readString(compact: flexible, "resource name")
            let changes = try reader.readArray(compact: flexible, elementBytesMin: 3, "configs") { (reader: inout ByteReader) throws(WireError) -> Change in
                let key = try reader.readString(compact: flexible, "config name")
                var operation = Operation.set
                if incremental {
                    let raw = try reader.readInt8("config operation")
                    guard let known = Operation(rawValue: raw) else { throw WireError.malformed("config operation \(raw)") }
                    operation = known
                }
                let value = try reader.readNullableString(compact: flexible, "config value")
                if flexible { try reader.skipTaggedFields() }
                return Change(name: key, value: value, operation: operation)
            } ?? []
            if flexible { try reader.skipTaggedFields() }
            return Resource(type: type, name: name, changes: changes)
        } ?? []
        let validateOnly = try reader.readBool()
        if flexible { try reader.skipTaggedFields() }
        return AlterConfigsRequest(resources: resources, validateOnly: validateOnly, incremental: incremental)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= (incremental ? 1 : 2)
        writer.writeArray(resources, compact: flexible) { writer, resource in
            writer.writeInt8(resource.type)
            writer.writeString(resource.name, compact: flexible)
            writer.writeArray(resource.changes, compact: flexible) { writer, change in
                writer.writeString(change.name, compact: flexible)
                if incremental { writer.writeInt8(change.operation.rawValue) }
                writer.writeString(change.value, compact: flexible)
                if flexible { writer.writeEmptyTaggedFields() }
            }
            if flexible { writer.writeEmptyTaggedFields() }
        }
        writer.writeBool(validateOnly)
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

/// The answer of AlterConfigs and of IncrementalAlterConfigs.
public struct AlterConfigsResponse: Sendable, Equatable {
    public struct Result: Sendable, Equatable {
        public var errorCode: Int16
        public var errorMessage: String?
        public var resourceType: Int8
        public var resourceName: String

        public init(errorCode: Int16, errorMessage: String?, resourceType: Int8, resourceName: String) {
            self.errorCode = errorCode
            self.errorMessage = errorMessage
            self.resourceType = resourceType
            self.resourceName = resourceName
        }
    }

    public var results: [Result]

    public init(results: [Result]) {
        self.results = results
    }

    public func encode(_ writer: inout ByteWriter, version: Int16, incremental: Bool) {
        let flexible = version >= (incremental ? 1 : 2)
        writer.writeInt32(0)  // throttle time
        writer.writeArray(results, compact: flexible) { writer, result in
            writer.writeInt16(result.errorCode)
            writer.writeString(result.errorMessage, compact: flexible)
            writer.writeInt8(result.resourceType)
            writer.writeString(result.resourceName, compact: flexible)
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }

    /// AlterConfigs 0-1 and IncrementalAlterConfigs 0 (not flexible), for clients.
    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> AlterConfigsResponse {
        _ = try reader.readInt32()
        let results = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Result in
            Result(errorCode: try reader.readInt16(), errorMessage: try reader.readNullableString(), resourceType: try reader.readInt8(), resourceName: try reader.readString())
        } ?? []
        return AlterConfigsResponse(results: results)
    }
}
