// CreateAcls, DescribeAcls and DeleteAcls 0-3 (flexible from 2): requests
// decode (and encode, for tests), responses encode (and decode). The
// numbers (resource type, pattern type, operation, permission) are
// Kafka's; the Security module gives them names.

/// One ACL as the wire carries it.
public struct AclEntry: Sendable, Hashable {
    public var resourceType: Int8
    public var resourceName: String
    /// 3 (literal) before v1, where the field does not exist.
    public var patternType: Int8
    public var principal: String
    public var host: String
    public var operation: Int8
    public var permission: Int8

    public init(resourceType: Int8, resourceName: String, patternType: Int8, principal: String, host: String, operation: Int8, permission: Int8) {
        self.resourceType = resourceType
        self.resourceName = resourceName
        self.patternType = patternType
        self.principal = principal
        self.host = host
        self.operation = operation
        self.permission = permission
    }

    /// The fields of an ACL in CreateAcls' creations and DeleteAcls'
    /// matches, which write them alike.
    static func decodeFields(_ reader: inout ByteReader, version: Int16) throws(WireError) -> AclEntry {
        let flexible = version >= 2
        let type = try reader.readInt8("resource type")
        let name = try reader.readString(compact: flexible, "resource name")
        let pattern = version >= 1 ? try reader.readInt8("pattern type") : 3
        let principal = try reader.readString(compact: flexible, "principal")
        let host = try reader.readString(compact: flexible, "host")
        let operation = try reader.readInt8("operation")
        let permission = try reader.readInt8("permission")
        return AclEntry(resourceType: type, resourceName: name, patternType: pattern, principal: principal, host: host, operation: operation, permission: permission)
    }

    func encodeFields(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeInt8(resourceType)
        writer.writeString(resourceName, compact: flexible)
        if version >= 1 { writer.writeInt8(patternType) }
        writer.writeString(principal, compact: flexible)
        writer.writeString(host, compact: flexible)
        writer.writeInt8(operation)
        writer.writeInt8(permission)
    }
}

/// A filter over ACLs: a nil string matches any value.
public struct AclEntryFilter: Sendable, Hashable {
    public var resourceType: Int8
    public var resourceName: String?
    public var patternType: Int8
    public var principal: String?
    public var host: String?
    public var operation: Int8
    public var permission: Int8

    public init(resourceType: Int8, resourceName: String?, patternType: Int8, principal: String?, host: String?, operation: Int8, permission: Int8) {
        self.resourceType = resourceType
        self.resourceName = resourceName
        self.patternType = patternType
        self.principal = principal
        self.host = host
        self.operation = operation
        self.permission = permission
    }

    static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> AclEntryFilter {
        let flexible = version >= 2
        let type = try reader.readInt8("resource type")
        let name = try reader.readNullableString(compact: flexible, "resource name")
        let pattern = version >= 1 ? try reader.readInt8("pattern type") : 3
        let principal = try reader.readNullableString(compact: flexible, "principal")
        let host = try reader.readNullableString(compact: flexible, "host")
        let operation = try reader.readInt8("operation")
        let permission = try reader.readInt8("permission")
        return AclEntryFilter(resourceType: type, resourceName: name, patternType: pattern, principal: principal, host: host, operation: operation, permission: permission)
    }

    func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeInt8(resourceType)
        writer.writeString(resourceName, compact: flexible)
        if version >= 1 { writer.writeInt8(patternType) }
        writer.writeString(principal, compact: flexible)
        writer.writeString(host, compact: flexible)
        writer.writeInt8(operation)
        writer.writeInt8(permission)
    }
}

public struct CreateAclsRequest: Sendable, Equatable {
    public var creations: [AclEntry]

    public init(creations: [AclEntry]) {
        self.creations = creations
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> CreateAclsRequest {
        let flexible = version >= 2
        let creations = try reader.readArray(compact: flexible, elementBytesMin: 10, "creations") { (reader: inout ByteReader) throws(WireError) -> AclEntry in
            let entry = try AclEntry.decodeFields(&reader, version: version)
            if flexible { try reader.skipTaggedFields() }
            return entry
        } ?? []
        if flexible { try reader.skipTaggedFields() }
        return CreateAclsRequest(creations: creations)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeArray(creations, compact: flexible) { writer, entry in
            entry.encodeFields(&writer, version: version)
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

public struct CreateAclsResponse: Sendable, Equatable {
    public struct Result: Sendable, Equatable {
        public var errorCode: Int16
        public var errorMessage: String?

        public init(errorCode: Int16, errorMessage: String? = nil) {
            self.errorCode = errorCode
            self.errorMessage = errorMessage
        }
    }

    public var results: [Result]

    public init(results: [Result]) {
        self.results = results
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeInt32(0)
        writer.writeArray(results, compact: flexible) { writer, result in
            writer.writeInt16(result.errorCode)
            writer.writeString(result.errorMessage, compact: flexible)
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> CreateAclsResponse {
        let flexible = version >= 2
        _ = try reader.readInt32("throttle time")
        let results = try reader.readArray(compact: flexible, elementBytesMin: 4, "results") { (reader: inout ByteReader) throws(WireError) -> Result in
            let code = try reader.readInt16("error code")
            let message = try reader.readNullableString(compact: flexible, "error message")
            if flexible { try reader.skipTaggedFields() }
            return Result(errorCode: code, errorMessage: message)
        } ?? []
        if flexible { try reader.skipTaggedFields() }
        return CreateAclsResponse(results: results)
    }
}

public struct DescribeAclsRequest: Sendable, Equatable {
    public var filter: AclEntryFilter

    public init(filter: AclEntryFilter) {
        self.filter = filter
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DescribeAclsRequest {
        let filter = try AclEntryFilter.decode(&reader, version: version)
        if version >= 2 { try reader.skipTaggedFields() }
        return DescribeAclsRequest(filter: filter)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        filter.encode(&writer, version: version)
        if version >= 2 { writer.writeEmptyTaggedFields() }
    }
}

public struct DescribeAclsResponse: Sendable, Equatable {
    public var errorCode: Int16
    public var errorMessage: String?
    /// Grouped by resource (type, name, pattern) as Kafka answers.
    public var acls: [AclEntry]

    public init(errorCode: Int16, errorMessage: String? = nil, acls: [AclEntry]) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.acls = acls
    }

    struct Resource: Hashable {
        var type: Int8
        var name: String
        var pattern: Int8
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeInt32(0)
        writer.writeInt16(errorCode)
        writer.writeString(errorMessage, compact: flexible)
        var order: [Resource] = []
        var byResource: [Resource: [AclEntry]] = [:]
        for entry in acls {
            let resource = Resource(type: entry.resourceType, name: entry.resourceName, pattern: entry.patternType)
            if byResource[resource] == nil { order.append(resource) }
            byResource[resource, default: []].append(entry)
        }
        writer.writeArray(order, compact: flexible) { writer, resource in
            writer.writeInt8(resource.type)
            writer.writeString(resource.name, compact: flexible)
            if version >= 1 { writer.writeInt8(resource.pattern) }
            writer.writeArray(byResource[resource]!, compact: flexible) { writer, entry in
                writer.writeString(entry.principal, compact: flexible)
                writer.writeString(entry.host, compact: flexible)
                writer.writeInt8(entry.operation)
                writer.writeInt8(entry.permission)
                if flexible { writer.writeEmptyTaggedFields() }
            }
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DescribeAclsResponse {
        let flexible = version >= 2
        _ = try reader.readInt32("throttle time")
        let code = try reader.readInt16("error code")
        let message = try reader.readNullableString(compact: flexible, "error message")
        var acls: [AclEntry] = []
        _ = try reader.readArray(compact: flexible, elementBytesMin: 4, "resources") { (reader: inout ByteReader) throws(WireError) -> Void in
            let type = try reader.readInt8("resource type")
            let name = try reader.readString(compact: flexible, "resource name")
            let pattern = version >= 1 ? try reader.readInt8("pattern type") : 3
            _ = try reader.readArray(compact: flexible, elementBytesMin: 6, "acls") { (reader: inout ByteReader) throws(WireError) -> Void in
                let principal = try reader.readString(compact: flexible, "principal")
                let host = try reader.readString(compact: flexible, "host")
                let operation = try reader.readInt8("operation")
                let permission = try reader.readInt8("permission")
                if flexible { try reader.skipTaggedFields() }
                acls.append(AclEntry(resourceType: type, resourceName: name, patternType: pattern, principal: principal, host: host, operation: operation, permission: permission))
            }
            if flexible { try reader.skipTaggedFields() }
        }
        if flexible { try reader.skipTaggedFields() }
        return DescribeAclsResponse(errorCode: code, errorMessage: message, acls: acls)
    }
}

public struct DeleteAclsRequest: Sendable, Equatable {
    public var filters: [AclEntryFilter]

    public init(filters: [AclEntryFilter]) {
        self.filters = filters
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DeleteAclsRequest {
        let flexible = version >= 2
        let filters = try reader.readArray(compact: flexible, elementBytesMin: 7, "filters") { (reader: inout ByteReader) throws(WireError) -> AclEntryFilter in
            let filter = try AclEntryFilter.decode(&reader, version: version)
            if flexible { try reader.skipTaggedFields() }
            return filter
        } ?? []
        if flexible { try reader.skipTaggedFields() }
        return DeleteAclsRequest(filters: filters)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeArray(filters, compact: flexible) { writer, filter in
            filter.encode(&writer, version: version)
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

public struct DeleteAclsResponse: Sendable, Equatable {
    public struct FilterResult: Sendable, Equatable {
        public var errorCode: Int16
        public var errorMessage: String?
        public var deleted: [AclEntry]

        public init(errorCode: Int16, errorMessage: String? = nil, deleted: [AclEntry]) {
            self.errorCode = errorCode
            self.errorMessage = errorMessage
            self.deleted = deleted
        }
    }

    public var results: [FilterResult]

    public init(results: [FilterResult]) {
        self.results = results
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let flexible = version >= 2
        writer.writeInt32(0)
        writer.writeArray(results, compact: flexible) { writer, result in
            writer.writeInt16(result.errorCode)
            writer.writeString(result.errorMessage, compact: flexible)
            writer.writeArray(result.deleted, compact: flexible) { writer, entry in
                writer.writeInt16(0)
                writer.writeString(nil, compact: flexible)
                entry.encodeFields(&writer, version: version)
                if flexible { writer.writeEmptyTaggedFields() }
            }
            if flexible { writer.writeEmptyTaggedFields() }
        }
        if flexible { writer.writeEmptyTaggedFields() }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DeleteAclsResponse {
        let flexible = version >= 2
        _ = try reader.readInt32("throttle time")
        let results = try reader.readArray(compact: flexible, elementBytesMin: 4, "results") { (reader: inout ByteReader) throws(WireError) -> FilterResult in
            let code = try reader.readInt16("error code")
            let message = try reader.readNullableString(compact: flexible, "error message")
            let deleted = try reader.readArray(compact: flexible, elementBytesMin: 10, "matching acls") { (reader: inout ByteReader) throws(WireError) -> AclEntry in
                _ = try reader.readInt16("error code")
                _ = try reader.readNullableString(compact: flexible, "error message")
                let entry = try AclEntry.decodeFields(&reader, version: version)
                if flexible { try reader.skipTaggedFields() }
                return entry
            } ?? []
            if flexible { try reader.skipTaggedFields() }
            return FilterResult(errorCode: code, errorMessage: message, deleted: deleted)
        } ?? []
        if flexible { try reader.skipTaggedFields() }
        return DeleteAclsResponse(results: results)
    }
}
