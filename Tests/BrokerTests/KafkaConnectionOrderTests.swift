import Testing

@testable import Broker

/// A Kafka connection's order rules, without a channel or a broker.
@Suite struct KafkaConnectionOrderTests {
    var order = KafkaConnectionOrder()

    /// A frame of API `key` (the first two bytes), told apart by `tag`.
    static func frame(_ key: UInt8, _ tag: UInt8) -> [UInt8] { [0, key, 0, 9, tag] }
    static let produce: UInt8 = 0
    static let metadata: UInt8 = 3

    @Test mutating func pipelinedProducesAreAllTakenAndAnsweredInRequestOrder() {
        for tag: UInt8 in 1...3 { order.received(Self.frame(Self.produce, tag)) }
        #expect(order.take() == .produce(Self.frame(Self.produce, 1), position: 0))
        #expect(order.take() == .produce(Self.frame(Self.produce, 2), position: 1))
        #expect(order.take() == .produce(Self.frame(Self.produce, 3), position: 2))
        #expect(order.take() == nil)
        // The third is durable first: nothing may go out before the first.
        #expect(order.answered(2, [3], produce: true).isEmpty)
        #expect(order.answered(0, [1], produce: true) == [[1]])
        #expect(order.answered(1, [2], produce: true) == [[2], [3]])
        #expect(order.producesAwaited == 0 && order.backlog == 0)
    }

    @Test mutating func anotherRequestWaitsUntilEveryEarlierProduceIsAnswered() {
        order.received(Self.frame(Self.produce, 1))
        order.received(Self.frame(Self.metadata, 2))
        order.received(Self.frame(Self.produce, 3))
        #expect(order.take() == .produce(Self.frame(Self.produce, 1), position: 0))
        #expect(order.take() == nil, "metadata was taken while a Produce before it was not durable")
        _ = order.answered(0, [1], produce: true)
        #expect(order.take() == .stage(Self.frame(Self.metadata, 2), position: 1))
        // While a task stages it, nothing else is taken, not even a Produce.
        #expect(order.take() == nil)
        order.staged(awaitingDurability: false)
        #expect(order.answered(1, [2], produce: false) == [[2]])
        #expect(order.take() == .produce(Self.frame(Self.produce, 3), position: 2))
    }

    @Test mutating func aClusterProduceGoesToATaskAndTheNextIsTakenWhileItWaits() {
        order.received(Self.frame(Self.produce, 1))
        order.received(Self.frame(Self.produce, 2))
        #expect(order.take() == .produce(Self.frame(Self.produce, 1), position: 0))
        order.produceStaged()
        #expect(order.take() == nil)
        order.staged(awaitingDurability: true)
        #expect(order.producesAwaited == 1)
        #expect(order.take() == .produce(Self.frame(Self.produce, 2), position: 1))
    }

    @Test mutating func aRefusedRequestEndsTheConnectionAfterEarlierAnswers() {
        order.received(Self.frame(Self.produce, 1))
        order.received(Self.frame(Self.produce, 2))
        order.received(Self.frame(Self.produce, 3))
        _ = order.take()
        _ = order.take()
        // The second is malformed: the third is never taken.
        #expect(order.refuse(1, because: "malformed", produce: true).isEmpty)
        #expect(order.take() == nil && !order.shouldClose)
        #expect(order.answered(0, [1], produce: true) == [[1]])
        #expect(order.shouldClose)
        order.received(Self.frame(Self.produce, 4))
        #expect(order.take() == nil, "a frame read after the refusal was taken")
    }

    @Test mutating func aClientThatClosesItsSideIsClosedOnceAllIsAnswered() {
        order.received(Self.frame(Self.metadata, 1))
        order.inputClosed()
        #expect(!order.shouldClose)
        _ = order.take()
        #expect(!order.shouldClose)
        order.staged(awaitingDurability: false)
        #expect(order.answered(0, [1], produce: false) == [[1]])
        #expect(order.shouldClose)
    }

    @Test mutating func anAcksZeroProduceHoldsItsPlaceButSendsNothing() {
        order.received(Self.frame(Self.produce, 1))
        order.received(Self.frame(Self.produce, 2))
        _ = order.take()
        _ = order.take()
        #expect(order.answered(1, [2], produce: true).isEmpty)
        #expect(order.answered(0, nil, produce: true) == [[2]])
    }
}
