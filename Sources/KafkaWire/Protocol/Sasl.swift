public struct SaslHandshakeRequest: Sendable, Equatable {
    public var mechanism: String

    public init(mechanism: String) {
        self.mechanism = mechanism
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> SaslHandshakeRequest {
        SaslHandshakeRequest(mechanism: try reader.readString("mechanism"))
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(mechanism)
    }
}

public struct SaslHandshakeResponse: Sendable, Equatable {
    public var errorCode: Int16
    public var mechanisms: [String]

    public init(errorCode: Int16, mechanisms: [String]) {
        self.errorCode = errorCode
        self.mechanisms = mechanisms
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt16(errorCode)
        writer.writeArray(mechanisms) { $0.writeString($1) }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> SaslHandshakeResponse {
        let errorCode = try reader.readInt16()
        let mechanisms = try reader.readArray(elementBytesMin: 2, "mechanisms") { (reader: inout ByteReader) throws(WireError) -> String in try reader.readString() } ?? []
        return SaslHandshakeResponse(errorCode: errorCode, mechanisms: mechanisms)
    }
}

public struct SaslAuthenticateRequest: Sendable, Equatable {
    public var authBytes: [UInt8]

    public init(authBytes: [UInt8]) {
        self.authBytes = authBytes
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> SaslAuthenticateRequest {
        SaslAuthenticateRequest(authBytes: try reader.readNullableBytes("auth bytes") ?? [])
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeNullableBytes(authBytes)
    }
}

public struct SaslAuthenticateResponse: Sendable, Equatable {
    public var errorCode: Int16
    public var errorMessage: String?
    public var authBytes: [UInt8]
    public var sessionLifetimeMilliseconds: Int64 = 0

    public init(errorCode: Int16, errorMessage: String?, authBytes: [UInt8]) {
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.authBytes = authBytes
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt16(errorCode)
        writer.writeString(errorMessage)
        writer.writeNullableBytes(authBytes)
        if version >= 1 { writer.writeInt64(sessionLifetimeMilliseconds) }
    }

    /// v0 and v1 (non-flexible), as Postduif's own clients ask.
    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> SaslAuthenticateResponse {
        let errorCode = try reader.readInt16()
        let message = try reader.readNullableString()
        var response = SaslAuthenticateResponse(errorCode: errorCode, errorMessage: message, authBytes: try reader.readNullableBytes() ?? [])
        if version >= 1 { response.sessionLifetimeMilliseconds = try reader.readInt64() }
        return response
    }
}
