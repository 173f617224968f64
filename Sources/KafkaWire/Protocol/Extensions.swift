/// Postduif's extension to the Kafka protocol, for its own chat services:
/// same framing and request header, an API key far above Kafka's, never
/// listed in ApiVersions (a Kafka client never sees it).
///
/// ConversationHistory v0 asks a partition's leader for a page of one
/// conversation through the conversation index, up to the high watermark.
public struct ConversationHistoryRequest: Sendable, Equatable {
    public enum Position: Sendable, Equatable {
        case latest
        case before(sequence: UInt64)
        case after(sequence: UInt64)
    }

    public var topic: String
    public var partition: Int32
    public var conversation: [UInt8]
    public var position: Position
    public var limit: Int32
    /// Only messages below this offset; -1 for the high watermark.
    public var maxOffset: Int64

    public init(topic: String, partition: Int32, conversation: [UInt8], position: Position, limit: Int32, maxOffset: Int64 = -1) {
        self.maxOffset = maxOffset
        self.topic = topic
        self.partition = partition
        self.conversation = conversation
        self.position = position
        self.limit = limit
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ConversationHistoryRequest {
        let topic = try reader.readString()
        let partition = try reader.readInt32()
        let conversation = try reader.readNullableBytes() ?? []
        let kind = try reader.readInt8()
        let sequence = UInt64(bitPattern: try reader.readInt64())
        let limit = try reader.readInt32()
        let maxOffset = try reader.readInt64()
        let position: Position
        switch kind {
        case 0: position = .latest
        case 1: position = .before(sequence: sequence)
        case 2: position = .after(sequence: sequence)
        default: throw WireError.malformed("conversation history position kind \(kind)")
        }
        return ConversationHistoryRequest(topic: topic, partition: partition, conversation: conversation, position: position, limit: limit, maxOffset: maxOffset)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(topic)
        writer.writeInt32(partition)
        writer.writeNullableBytes(conversation)
        switch position {
        case .latest:
            writer.writeInt8(0)
            writer.writeInt64(0)
        case .before(let sequence):
            writer.writeInt8(1)
            writer.writeInt64(Int64(bitPattern: sequence))
        case .after(let sequence):
            writer.writeInt8(2)
            writer.writeInt64(Int64(bitPattern: sequence))
        }
        writer.writeInt32(limit)
        writer.writeInt64(maxOffset)
    }
}

public struct ConversationHistoryResponse: Sendable, Equatable {
    public struct Message: Sendable, Equatable {
        public var sequence: UInt64
        public var offset: Int64
        public var timestamp: Int64
        public var key: [UInt8]
        public var value: [UInt8]?
        public var headers: [RecordHeader]

        public init(sequence: UInt64, offset: Int64, timestamp: Int64, key: [UInt8], value: [UInt8]?, headers: [RecordHeader]) {
            self.sequence = sequence
            self.offset = offset
            self.timestamp = timestamp
            self.key = key
            self.value = value
            self.headers = headers
        }
    }

    public var errorCode: Int16
    public var highWatermark: Int64
    /// In sequence order, oldest first.
    public var messages: [Message]

    public init(errorCode: Int16, highWatermark: Int64, messages: [Message]) {
        self.errorCode = errorCode
        self.highWatermark = highWatermark
        self.messages = messages
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ConversationHistoryResponse {
        let errorCode = try reader.readInt16()
        let highWatermark = try reader.readInt64()
        let messages = try reader.readArray(elementBytesMin: 36, "messages") { (reader: inout ByteReader) throws(WireError) -> Message in
            let sequence = UInt64(bitPattern: try reader.readInt64())
            let offset = try reader.readInt64()
            let timestamp = try reader.readInt64()
            let key = try reader.readNullableBytes() ?? []
            let value = try reader.readNullableBytes()
            let headers = try reader.readArray(elementBytesMin: 6, "headers") { (reader: inout ByteReader) throws(WireError) -> RecordHeader in
                RecordHeader(key: try reader.readNullableBytes() ?? [], value: try reader.readNullableBytes())
            } ?? []
            return Message(sequence: sequence, offset: offset, timestamp: timestamp, key: key, value: value, headers: headers)
        } ?? []
        return ConversationHistoryResponse(errorCode: errorCode, highWatermark: highWatermark, messages: messages)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt16(errorCode)
        writer.writeInt64(highWatermark)
        writer.writeArray(messages) { writer, message in
            writer.writeInt64(Int64(bitPattern: message.sequence))
            writer.writeInt64(message.offset)
            writer.writeInt64(message.timestamp)
            writer.writeNullableBytes(message.key)
            writer.writeNullableBytes(message.value)
            writer.writeArray(message.headers) { writer, header in
                writer.writeNullableBytes(header.key)
                writer.writeNullableBytes(header.value)
            }
        }
    }
}
