import ChatWire

/// What the gateway needs of a fan-out in its own process to take its
/// deliveries as they are made (ADR 0037): the worker calls the gateway
/// instead of queueing for its poll. The composition root (`postduif serve
/// --with-gateway`) implements it with the broker's `FanOut`, as it does
/// `DirectAppendPort`.
public protocol LocalFanOutPort: Sendable {
    /// From now on, the deliveries for `gatewayID` go to `receive`, called
    /// by a fan-out worker's step (on the thread that committed the
    /// messages, ADR 0038) once per read batch, in each partition's offset
    /// order. It must not block.
    func handOver(to gatewayID: String, receive: @escaping @Sendable (FanOutHandOver) -> Void)
    /// The gateway stopped: its deliveries wait for a poll again.
    func stopHandingOver(to gatewayID: String)
}
