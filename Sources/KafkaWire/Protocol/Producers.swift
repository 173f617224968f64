// InitProducerId 0-1 and FindCoordinator 0-2: requests decode (and encode,
// for tests and the load tool), responses encode (and decode).

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

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> FindCoordinatorResponse {
        let throttle = version >= 1 ? try reader.readInt32() : 0
        let errorCode = try reader.readInt16()
        let message = version >= 1 ? try reader.readNullableString() : nil
        var response = FindCoordinatorResponse(errorCode: errorCode, errorMessage: message, nodeID: try reader.readInt32(), host: try reader.readString(), port: try reader.readInt32())
        response.throttleTimeMilliseconds = throttle
        return response
    }
}
