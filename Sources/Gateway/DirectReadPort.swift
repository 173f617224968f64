/// What the gateway needs of a broker in its own process to read large
/// values without a Fetch frame (ADR 0035): a file's chunks are megabytes,
/// and a Fetch answer is encoded, framed and decoded again, each a copy of
/// them. The composition root (`postduif serve --with-gateway`) implements
/// it with the broker, as it does `DirectAppendPort`.
public protocol DirectReadPort: Sendable {
    /// Committed batches of a partition this process's broker leads, as
    /// stored: the batch holding `offset` first, then those following while
    /// they fit in `bytesMax`. Nil when the partition is not led here (the
    /// caller fetches from its leader).
    func readCommitted(topic: String, partition: Int32, from offset: Int64, bytesMax: Int) throws(DirectReadRefusal) -> [[UInt8]]?
}

/// Why the broker in this process could not read: the offset is no longer
/// (or not yet) in the log, or the store failed.
public enum DirectReadRefusal: Error, Sendable, CustomStringConvertible {
    case offsetOutOfRange
    case store(String)

    public var description: String {
        switch self {
        case .offsetOutOfRange: "the offset is outside the partition's log"
        case .store(let message): message
        }
    }
}
