// Envelope v0 (Kafka's API key 58, flexible from v0): one broker forwards a
// request on behalf of a principal it authenticated. Kafka brokers use it
// to forward to the controller; Postduif's HTTP proxy uses it to reach
// other brokers as the caller its client certificate names (ADR 0031).
// Not advertised in ApiVersions: only brokers send it.

public struct EnvelopeRequest: Sendable, Equatable {
    public static let apiKey: Int16 = 58
    public static let version: Int16 = 0

    /// The embedded request: header and body, without a size prefix.
    public var requestData: [UInt8]
    /// The principal the request acts for, `Type:name` in UTF-8.
    public var requestPrincipal: [UInt8]?
    /// The caller's IP address: 4 bytes (IPv4) or 16 (IPv6).
    public var clientHostAddress: [UInt8]

    public init(requestData: [UInt8], requestPrincipal: [UInt8]?, clientHostAddress: [UInt8]) {
        self.requestData = requestData
        self.requestPrincipal = requestPrincipal
        self.clientHostAddress = clientHostAddress
    }

    public static func decode(_ reader: inout ByteReader) throws(WireError) -> EnvelopeRequest {
        let data = try reader.readNullableBytes(compact: true, "envelope request data") ?? []
        let principal = try reader.readNullableBytes(compact: true, "envelope principal")
        let host = try reader.readNullableBytes(compact: true, "envelope client host address") ?? []
        try reader.skipTaggedFields()
        return EnvelopeRequest(requestData: data, requestPrincipal: principal, clientHostAddress: host)
    }

    public func encode(_ writer: inout ByteWriter) {
        writer.writeNullableBytes(requestData, compact: true)
        writer.writeNullableBytes(requestPrincipal, compact: true)
        writer.writeNullableBytes(clientHostAddress, compact: true)
        writer.writeEmptyTaggedFields()
    }
}

public struct EnvelopeResponse: Sendable, Equatable {
    /// The embedded response: header and body, without a size prefix; nil
    /// when the embedded request gets no answer (Produce with acks=0).
    public var responseData: [UInt8]?
    public var errorCode: Int16

    public init(responseData: [UInt8]?, errorCode: Int16) {
        self.responseData = responseData
        self.errorCode = errorCode
    }

    public static func decode(_ reader: inout ByteReader) throws(WireError) -> EnvelopeResponse {
        let data = try reader.readNullableBytes(compact: true, "envelope response data")
        let code = try reader.readInt16("envelope error code")
        try reader.skipTaggedFields()
        return EnvelopeResponse(responseData: data, errorCode: code)
    }

    public func encode(_ writer: inout ByteWriter) {
        writer.writeNullableBytes(responseData, compact: true)
        writer.writeInt16(errorCode)
        writer.writeEmptyTaggedFields()
    }
}
