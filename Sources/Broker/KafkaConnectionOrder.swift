import KafkaWire
import NIOCore

/// The order rules of one Kafka connection (ADR 0006, ADR 0021), with no
/// channel and no broker: which request may be taken next, and which
/// answers may go out. `KafkaConnection` feeds it frames, stagings and
/// answers, and carries out what it returns.
///
/// - Requests are taken one at a time, in order; while a task stages one,
///   nothing else is taken.
/// - A Produce is taken while earlier Produces wait for durability; any
///   other request only once every earlier Produce is answered, so it sees
///   what they wrote.
/// - Answers leave in request order, whatever order they are ready in.
/// - A request that cannot be answered, or the client closing its side,
///   ends the connection once everything before is answered.
struct KafkaConnectionOrder {
    /// The next request to take, and its place among the connection's requests.
    enum Take: Equatable {
        /// A Produce: written by the connection itself where it can.
        case produce([UInt8], position: Int)
        /// Anything else: staged by a task.
        case stage([UInt8], position: Int)
    }

    /// Frames read and not yet taken.
    private var frames = CircularBuffer<[UInt8]>()
    /// Answers in request order: nil while awaited; `.some(nil)` for a
    /// request that gets none (acks=0, or the refused request itself).
    private var answers = CircularBuffer<[UInt8]??>()
    /// The position among the connection's requests of `answers.first`.
    private var firstAnswer = 0
    /// A task is staging a request.
    private(set) var staging = false
    /// Produces taken whose answer has not come.
    private(set) var producesAwaited = 0
    /// Why the connection ends once every earlier request is answered.
    private(set) var closing: String?
    /// The client closed its side.
    private var inputEnded = false

    /// Requests held: read and not taken, or taken and not answered.
    var backlog: Int { frames.count + answers.count }

    /// Whether nothing is left to answer and the connection should close.
    var shouldClose: Bool {
        (closing != nil || (inputEnded && frames.isEmpty)) && answers.isEmpty && !staging
    }

    static func isProduce(_ frame: [UInt8]) -> Bool {
        frame.count >= 2 && frame[0] == 0 && frame[1] == UInt8(ApiKey.produce.rawValue)
    }

    /// A frame read from the connection; ignored once it is closing.
    mutating func received(_ frame: [UInt8]) {
        guard closing == nil else { return }
        frames.append(frame)
    }

    /// The client closed its side of the connection.
    mutating func inputClosed() {
        inputEnded = true
    }

    /// The next request, if one may be taken now. A Produce counts as
    /// awaited from here; anything else as staging.
    mutating func take() -> Take? {
        guard !staging, closing == nil, let frame = frames.first else { return nil }
        let produce = Self.isProduce(frame)
        if !produce && producesAwaited > 0 { return nil }
        frames.removeFirst()
        let position = firstAnswer + answers.count
        answers.append(nil)
        if produce {
            producesAwaited += 1
            return .produce(frame, position: position)
        }
        staging = true
        return .stage(frame, position: position)
    }

    /// A Produce taken here goes to a task after all (a cluster's waits for
    /// its followers): it is staging, not yet awaited.
    mutating func produceStaged() {
        producesAwaited -= 1
        staging = true
    }

    /// The task staged its request: answered now, or (a cluster's Produce)
    /// waiting for durability, during which the next request may be taken.
    mutating func staged(awaitingDurability: Bool) {
        staging = false
        if awaitingDurability { producesAwaited += 1 }
    }

    /// A request's answer is in (nil: it gets none). Returns the answers
    /// that may go out now, in order.
    mutating func answered(_ position: Int, _ response: [UInt8]?, produce: Bool) -> [[UInt8]] {
        if produce { producesAwaited -= 1 }
        let index = position - firstAnswer
        guard index >= 0, index < answers.count else { return [] }
        answers[answers.index(answers.startIndex, offsetBy: index)] = .some(response)
        var ready: [[UInt8]] = []
        while let first = answers.first, let answer = first {
            answers.removeFirst()
            firstAnswer += 1
            if let answer { ready.append(answer) }
        }
        return ready
    }

    /// A request that cannot be answered in Kafka's protocol: nothing more
    /// is taken, and it gets no answer of its own. Returns the answers that
    /// may go out now.
    mutating func refuse(_ position: Int, because reason: String, produce: Bool) -> [[UInt8]] {
        closing = reason
        frames.removeAll()
        return answered(position, nil, produce: produce)
    }

    /// The connection ends after the answer now awaited (a failed SASL exchange).
    mutating func closeAfterAnswers(because reason: String) {
        closing = reason
        frames.removeAll()
    }
}
