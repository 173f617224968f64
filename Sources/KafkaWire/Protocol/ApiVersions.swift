public struct ApiVersionsRequest: Sendable, Equatable {
    public var clientSoftwareName: String?
    public var clientSoftwareVersion: String?

    public init(clientSoftwareName: String? = nil, clientSoftwareVersion: String? = nil) {
        self.clientSoftwareName = clientSoftwareName
        self.clientSoftwareVersion = clientSoftwareVersion
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ApiVersionsRequest {
        guard version >= 3 else { return ApiVersionsRequest() }
        let name = try reader.readString(compact: true, "client software name")
        let softwareVersion = try reader.readString(compact: true, "client software version")
        try reader.skipTaggedFields()
        return ApiVersionsRequest(clientSoftwareName: name, clientSoftwareVersion: softwareVersion)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        guard version >= 3 else { return }
        writer.writeString(clientSoftwareName ?? "", compact: true)
        writer.writeString(clientSoftwareVersion ?? "", compact: true)
        writer.writeEmptyTaggedFields()
    }
}

public struct ApiVersionRange: Sendable, Equatable {
    public var apiKey: Int16
    public var minVersion: Int16
    public var maxVersion: Int16

    public init(apiKey: Int16, minVersion: Int16, maxVersion: Int16) {
        self.apiKey = apiKey
        self.minVersion = minVersion
        self.maxVersion = maxVersion
    }
}

public struct ApiVersionsResponse: Sendable, Equatable {
    public var errorCode: Int16
    public var apiKeys: [ApiVersionRange]
    public var throttleTimeMilliseconds: Int32 = 0

    public init(errorCode: Int16, apiKeys: [ApiVersionRange]) {
        self.errorCode = errorCode
        self.apiKeys = apiKeys
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        let compact = version >= 3
        writer.writeInt16(errorCode)
        writer.writeArray(apiKeys, compact: compact) { writer, range in
            writer.writeInt16(range.apiKey)
            writer.writeInt16(range.minVersion)
            writer.writeInt16(range.maxVersion)
            if compact { writer.writeEmptyTaggedFields() }
        }
        if version >= 1 { writer.writeInt32(throttleTimeMilliseconds) }
        if compact { writer.writeEmptyTaggedFields() }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ApiVersionsResponse {
        let compact = version >= 3
        let errorCode = try reader.readInt16()
        let keys = try reader.readArray(compact: compact, elementBytesMin: 6) { (reader: inout ByteReader) throws(WireError) -> ApiVersionRange in
            let range = ApiVersionRange(apiKey: try reader.readInt16(), minVersion: try reader.readInt16(), maxVersion: try reader.readInt16())
            if compact { try reader.skipTaggedFields() }
            return range
        } ?? []
        var response = ApiVersionsResponse(errorCode: errorCode, apiKeys: keys)
        if version >= 1 { response.throttleTimeMilliseconds = try reader.readInt32() }
        if compact { try reader.skipTaggedFields() }
        return response
    }
}
