// The request fuzzer compiles KafkaWire into the same module (Tests/Fuzz/run.sh).
#if canImport(KafkaWire)
import KafkaWire
#endif

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

/// One message of a conversation as Postduif's extension APIs carry it:
/// where it is, its sequence in the conversation (ADR 0004) and the record.
public struct ConversationRecord: Sendable, Equatable {
    /// The message's position in its conversation, from 1.
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

    static let bytesMin = 36

    static func decode(_ reader: inout ByteReader) throws(WireError) -> ConversationRecord {
        let sequence = UInt64(bitPattern: try reader.readInt64())
        let offset = try reader.readInt64()
        let timestamp = try reader.readInt64()
        let key = try reader.readNullableBytes() ?? []
        let value = try reader.readNullableBytes()
        let headers = try reader.readArray(elementBytesMin: 6, "headers") { (reader: inout ByteReader) throws(WireError) -> RecordHeader in
            RecordHeader(key: try reader.readNullableBytes() ?? [], value: try reader.readNullableBytes())
        } ?? []
        return ConversationRecord(sequence: sequence, offset: offset, timestamp: timestamp, key: key, value: value, headers: headers)
    }

    func encode(_ writer: inout ByteWriter) {
        writer.writeInt64(Int64(bitPattern: sequence))
        writer.writeInt64(offset)
        writer.writeInt64(timestamp)
        writer.writeNullableBytes(key)
        writer.writeNullableBytes(value)
        writer.writeArray(headers) { writer, header in
            writer.writeNullableBytes(header.key)
            writer.writeNullableBytes(header.value)
        }
    }
}

public struct ConversationHistoryResponse: Sendable, Equatable {
    public typealias Message = ConversationRecord

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
        let messages = try reader.readArray(elementBytesMin: ConversationRecord.bytesMin, "messages") { (reader: inout ByteReader) throws(WireError) -> ConversationRecord in
            try ConversationRecord.decode(&reader)
        } ?? []
        return ConversationHistoryResponse(errorCode: errorCode, highWatermark: highWatermark, messages: messages)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt16(errorCode)
        writer.writeInt64(highWatermark)
        writer.writeArray(messages) { writer, message in message.encode(&writer) }
    }
}

/// GatewayPoll v0: a chat gateway's long poll to a broker leading
/// partitions of the conversations topic. It renews the gateway's lease,
/// changes the set of users it serves, and takes the deliveries the
/// broker's fan-out queued for it: each committed message of a
/// conversation with one of those users as member, once per gateway.
public struct GatewayPollRequest: Sendable, Equatable {
    public var gatewayID: String
    public var topic: String
    /// The gateway's routes expire when it does not poll for this long.
    public var leaseMilliseconds: Int32
    /// True: `users` is the whole set served (a new or restarted gateway).
    public var replaceUsers: Bool
    public var users: [String]
    public var removedUsers: [String]
    public var maxWaitMilliseconds: Int32
    public var maxDeliveries: Int32

    public init(gatewayID: String, topic: String, leaseMilliseconds: Int32, replaceUsers: Bool, users: [String], removedUsers: [String], maxWaitMilliseconds: Int32, maxDeliveries: Int32) {
        self.gatewayID = gatewayID
        self.topic = topic
        self.leaseMilliseconds = leaseMilliseconds
        self.replaceUsers = replaceUsers
        self.users = users
        self.removedUsers = removedUsers
        self.maxWaitMilliseconds = maxWaitMilliseconds
        self.maxDeliveries = maxDeliveries
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> GatewayPollRequest {
        let gatewayID = try reader.readString()
        let topic = try reader.readString()
        let lease = try reader.readInt32()
        let replace = try reader.readBool()
        let users = try reader.readArray(elementBytesMin: 2, "users") { (reader: inout ByteReader) throws(WireError) -> String in try reader.readString() } ?? []
        let removed = try reader.readArray(elementBytesMin: 2, "removed users") { (reader: inout ByteReader) throws(WireError) -> String in try reader.readString() } ?? []
        let wait = try reader.readInt32()
        let max = try reader.readInt32()
        return GatewayPollRequest(gatewayID: gatewayID, topic: topic, leaseMilliseconds: lease, replaceUsers: replace, users: users, removedUsers: removed, maxWaitMilliseconds: wait, maxDeliveries: max)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(gatewayID)
        writer.writeString(topic)
        writer.writeInt32(leaseMilliseconds)
        writer.writeBool(replaceUsers)
        writer.writeArray(users) { $0.writeString($1) }
        writer.writeArray(removedUsers) { $0.writeString($1) }
        writer.writeInt32(maxWaitMilliseconds)
        writer.writeInt32(maxDeliveries)
    }
}

public struct GatewayPollResponse: Sendable, Equatable {
    /// Where a partition's fan-out stands for this gateway.
    public struct PartitionState: Sendable, Equatable {
        public var partition: Int32
        /// Identifies the fan-out worker: a new value (the broker restarted,
        /// or another broker leads now) means deliveries may have been lost
        /// in between, so the gateway reads the gap itself.
        public var workerID: String
        /// Every message below this offset that concerns the gateway's users
        /// has been delivered (or is named by `resyncFrom`).
        public var fannedOutUpTo: Int64
        /// -1, or the offset from which deliveries were dropped because the
        /// gateway's queue was full: the gateway reads [resyncFrom,
        /// fannedOutUpTo) itself.
        public var resyncFrom: Int64

        public init(partition: Int32, workerID: String, fannedOutUpTo: Int64, resyncFrom: Int64) {
            self.partition = partition
            self.workerID = workerID
            self.fannedOutUpTo = fannedOutUpTo
            self.resyncFrom = resyncFrom
        }
    }

    /// A message for the gateway: its partition and the record, with its
    /// sequence for de-duplication at the edge.
    public struct Delivery: Sendable, Equatable {
        public var partition: Int32
        public var record: ConversationRecord

        public var offset: Int64 { record.offset }
        public var sequence: UInt64 { record.sequence }
        public var timestamp: Int64 { record.timestamp }
        public var key: [UInt8] { record.key }
        public var value: [UInt8]? { record.value }
        public var headers: [RecordHeader] { record.headers }

        public init(partition: Int32, offset: Int64, sequence: UInt64, timestamp: Int64, key: [UInt8], value: [UInt8]?, headers: [RecordHeader]) {
            self.partition = partition
            record = ConversationRecord(sequence: sequence, offset: offset, timestamp: timestamp, key: key, value: value, headers: headers)
        }
    }

    public var errorCode: Int16
    public var partitions: [PartitionState]
    public var deliveries: [Delivery]

    public init(errorCode: Int16, partitions: [PartitionState], deliveries: [Delivery]) {
        self.errorCode = errorCode
        self.partitions = partitions
        self.deliveries = deliveries
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> GatewayPollResponse {
        let errorCode = try reader.readInt16()
        let partitions = try reader.readArray(elementBytesMin: 22, "partitions") { (reader: inout ByteReader) throws(WireError) -> PartitionState in
            PartitionState(partition: try reader.readInt32(), workerID: try reader.readString(), fannedOutUpTo: try reader.readInt64(), resyncFrom: try reader.readInt64())
        } ?? []
        let deliveries = try reader.readArray(elementBytesMin: 4 + ConversationRecord.bytesMin, "deliveries") { (reader: inout ByteReader) throws(WireError) -> Delivery in
            let partition = try reader.readInt32()
            var delivery = Delivery(partition: partition, offset: 0, sequence: 0, timestamp: 0, key: [], value: nil, headers: [])
            delivery.record = try ConversationRecord.decode(&reader)
            return delivery
        } ?? []
        return GatewayPollResponse(errorCode: errorCode, partitions: partitions, deliveries: deliveries)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeInt16(errorCode)
        writer.writeArray(partitions) { writer, state in
            writer.writeInt32(state.partition)
            writer.writeString(state.workerID)
            writer.writeInt64(state.fannedOutUpTo)
            writer.writeInt64(state.resyncFrom)
        }
        writer.writeArray(deliveries) { writer, delivery in
            writer.writeInt32(delivery.partition)
            delivery.record.encode(&writer)
        }
    }
}
