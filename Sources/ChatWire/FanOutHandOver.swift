/// Deliveries a fan-out worker hands straight to a gateway in its own
/// process (`postduif serve --with-gateway`) instead of queueing them for
/// the gateway's next GatewayPoll (ADR 0037). The poll still renews the
/// gateway's lease, names its users and reports every partition's worker
/// and position; only the deliveries skip it.
public struct FanOutHandOver: Sendable, Equatable {
    public var partition: Int32
    /// The worker, as GatewayPoll's `workerID` names it: a worker the
    /// gateway has not heard from means deliveries before `from` may have
    /// been lost, as in a poll's answer.
    public var workerID: String
    /// The worker's position before these deliveries: every message from
    /// here to `upTo` that concerns the gateway's users is among them.
    public var from: Int64
    /// In offset order.
    public var deliveries: [GatewayPollResponse.Delivery]
    /// The worker's position after them, as a poll's `fannedOutUpTo`.
    public var upTo: Int64

    public init(partition: Int32, workerID: String, from: Int64, deliveries: [GatewayPollResponse.Delivery], upTo: Int64) {
        self.partition = partition
        self.workerID = workerID
        self.from = from
        self.deliveries = deliveries
        self.upTo = upTo
    }
}
