import KafkaWire

/// What the gateway needs of a broker in its own process to take message
/// sends on the event loop (ADR 0017): an append of one record without a
/// request frame. The gateway declares it; the composition root (`postduif
/// serve --with-gateway`) implements it with the broker, so the broker
/// knows nothing of chat and the gateway nothing of the broker's insides.
public protocol DirectAppendPort: Sendable {
    /// Whether `appendDirect` takes appends (it does not in a cluster).
    var appendsDirectly: Bool { get }
    /// Appends one record to a partition of this process's broker and calls
    /// `done` with its offset once committed (from whichever thread
    /// committed it) or with the Kafka error a Produce would have answered.
    /// False, and `done` is not called, when the broker cannot take appends
    /// this way (partitions with followers): the caller sends a Produce.
    func appendDirect(topic: String, partition: Int32, key: [UInt8], value: [UInt8]?, headers: [RecordHeader], timestamp: Int64,
                      done: @escaping @Sendable (Result<Int64, DirectAppendRefusal>) -> Void) -> Bool
    /// `appendDirect` of a record whose value is `valueCount` bytes that
    /// `appendValue` appends to the record batch itself, before this
    /// returns: a file's chunk goes from the buffers it was received in
    /// into the batch, copied once. Not called when this returns false.
    func appendDirect(topic: String, partition: Int32, key: [UInt8], valueCount: Int, timestamp: Int64, appendValue: (inout [UInt8]) -> Void,
                      done: @escaping @Sendable (Result<Int64, DirectAppendRefusal>) -> Void) -> Bool
}

/// Why the broker in this process refused a direct append: the Kafka error
/// code and message a Produce would have answered.
public struct DirectAppendRefusal: Error, Sendable, CustomStringConvertible {
    public var errorCode: Int16
    public var message: String

    public init(errorCode: Int16, message: String) {
        self.errorCode = errorCode
        self.message = message
    }

    public var description: String { "Kafka error \(errorCode): \(message)" }
}
