/// A request's header. `clientID` stays an int16-length string even in
/// header v2; flexible requests add a tagged-field section after it.
public struct RequestHeader: Sendable, Equatable {
    public var apiKey: Int16
    public var apiVersion: Int16
    public var correlationID: Int32
    public var clientID: String?

    public init(apiKey: Int16, apiVersion: Int16, correlationID: Int32, clientID: String?) {
        self.apiKey = apiKey
        self.apiVersion = apiVersion
        self.correlationID = correlationID
        self.clientID = clientID
    }

    /// Reads the header fields every version shares (v1 layout). The caller
    /// reads the tagged fields of a flexible header once it knows the API.
    public static func decode(_ reader: inout ByteReader) throws(WireError) -> RequestHeader {
        let apiKey = try reader.readInt16("api key")
        let apiVersion = try reader.readInt16("api version")
        let correlationID = try reader.readInt32("correlation id")
        let clientID = try reader.readNullableString("client id")
        return RequestHeader(apiKey: apiKey, apiVersion: apiVersion, correlationID: correlationID, clientID: clientID)
    }

    public func encode(_ writer: inout ByteWriter, flexible: Bool) {
        writer.writeInt16(apiKey)
        writer.writeInt16(apiVersion)
        writer.writeInt32(correlationID)
        writer.writeString(clientID)
        if flexible { writer.writeEmptyTaggedFields() }
    }
}

/// Frames a response: size, correlation id, the header's tagged fields for
/// flexible responses (never for ApiVersions, whose response header is
/// always v0), then the body.
public func frameResponse(correlationID: Int32, flexibleHeader: Bool, body: [UInt8]) -> [UInt8] {
    var writer = ByteWriter(capacity: body.count + 9)
    let headerCount = flexibleHeader ? 5 : 4
    writer.writeInt32(Int32(headerCount + body.count))
    writer.writeInt32(correlationID)
    if flexibleHeader { writer.writeEmptyTaggedFields() }
    writer.writeBytes(body)
    return writer.bytes
}
