import KafkaWire
import PostduifClient
import Synchronization

/// One caller's produce requests for one partition, combined while that
/// partition's previous batch is being written, as a Kafka producer
/// gathers records while its requests are in flight (ADR 0033).
///
/// A request for an idle partition writes its own batch at once: nothing
/// waits on a timer, so a lone request is as quick as before. Requests
/// that come while a batch is being written append their records to one
/// waiting batch, written as soon as the one before is answered. Under
/// load, each partition gets a few large batches instead of many of a
/// request each, and each batch costs the store a file write and an index
/// write, and the broker a Produce request, whatever its size.
///
/// Batches are shared only by requests of the same caller (the clients
/// and their principals are per caller). A shared batch refused for what
/// one request put in it (too large, a record the topic refuses) is not
/// a refusal of the others: each request then writes its records alone.
final class SharedBatches: Sendable {
    /// A waiting batch takes no request that would bring it past this: far
    /// below the topic's usual limit of 1 MiB a batch.
    static let bytesMax = 512 << 10

    /// Where a request's records for one partition go.
    enum Turn: Sendable {
        /// The partition was idle: write a batch of your own now, then say
        /// so with `written(_:)`.
        case lead
        /// The waiting batch is full: write a batch of your own now, beside it.
        case alone
        /// Your records are in the waiting batch, from this offset delta on.
        case wait(Answer, first: Int)
    }

    /// A shared batch's outcome for one request: its first record's offset.
    final class Answer: Sendable {
        struct Outcome: Sendable {
            var offset: Result<Int64, ClientError>
            /// Whether other requests' records were in the batch.
            var shared: Bool
        }

        private enum State {
            case waiting(CheckedContinuation<Outcome, Never>?)
            case done(Outcome)
        }

        private let state = Mutex(State.waiting(nil))

        func resolve(_ outcome: Outcome) {
            let waiter = state.withLock { state -> CheckedContinuation<Outcome, Never>? in
                guard case .waiting(let waiter) = state else { return nil }
                state = .done(outcome)
                return waiter
            }
            waiter?.resume(returning: outcome)
        }

        var outcome: Outcome {
            get async {
                await withCheckedContinuation { waiter in
                    let ready = state.withLock { state -> Outcome? in
                        if case .done(let outcome) = state { return outcome }
                        state = .waiting(waiter)
                        return nil
                    }
                    if let ready { waiter.resume(returning: ready) }
                }
            }
        }
    }

    private struct Waiting {
        var builder: RecordBatchBuilder
        var parts: [(answer: Answer, first: Int)] = []
    }

    /// A partition with a batch being written, and the batch waiting behind it.
    private struct Writing {
        var waiting: Waiting?
    }

    /// An idle partition has no entry.
    private let partitions = Mutex<[TopicPartition: Writing]>([:])
    private let write: @Sendable (_ place: TopicPartition, _ batch: [UInt8], _ records: Int) async -> Result<Int64, ClientError>

    init(write: @escaping @Sendable (_ place: TopicPartition, _ batch: [UInt8], _ records: Int) async -> Result<Int64, ClientError>) {
        self.write = write
    }

    /// Decides where a request's `records` for `place` (of `bytes` encoded
    /// bytes) go; `append` adds them to the waiting batch when they go
    /// there, and says false (nothing of this request is left in it) when
    /// one cannot be added. Nil then.
    func join(_ place: TopicPartition, records: Int, bytes: Int, append: (inout RecordBatchBuilder) -> Bool) -> Turn? {
        partitions.withLock { partitions -> Turn? in
            guard partitions[place] != nil else {
                partitions[place] = Writing()
                return .lead
            }
            // Taken out while it grows: a copy left in the table would make
            // every append copy the whole batch.
            var waiting = partitions[place]?.waiting ?? Waiting(builder: RecordBatchBuilder(capacity: Self.bytesMax))
            partitions[place]?.waiting = nil
            defer { partitions[place]?.waiting = waiting.parts.isEmpty ? nil : waiting }
            guard waiting.builder.payloadBytesCount + bytes <= Self.bytesMax,
                  waiting.builder.recordsCount + records <= RecordBatchBuilder.recordsMax else {
                return .alone
            }
            let mark = waiting.builder.mark
            let first = waiting.builder.recordsCount
            guard append(&waiting.builder) else {
                waiting.builder.rollBack(to: mark)
                return nil
            }
            let answer = Answer()
            waiting.parts.append((answer, first))
            return .wait(answer, first: first)
        }
    }

    /// The batch a `lead` request wrote for `place` is answered (or was
    /// never sent): the waiting batch, if any, is written next.
    func written(_ place: TopicPartition) {
        // The one binding of the batch taken out of the table: built here,
        // where nothing else holds it (another copy, in the table, a
        // binding or the task below, would make building it copy it whole).
        guard var next = partitions.withLock({ partitions -> Waiting? in
            guard let waiting = partitions[place]?.waiting else {
                partitions[place] = nil
                return nil
            }
            partitions[place] = Writing()
            return waiting
        }) else { return }
        let batch = next.builder.build()
        let records = next.builder.recordsCount
        let parts = next.parts
        // Its requests are waiting for it already; none of them is asked to
        // write it, so that one request's other partitions wait on nothing.
        Task { await self.writeWaiting(place, batch, records: records, parts: parts) }
    }

    private func writeWaiting(_ place: TopicPartition, _ batch: [UInt8], records: Int, parts: [(answer: Answer, first: Int)]) async {
        let answer = await write(place, batch, records)
        written(place)
        let shared = parts.count > 1
        for part in parts {
            // Offset -1 (acks=0) stays -1.
            part.answer.resolve(.init(offset: answer.map { $0 < 0 ? $0 : $0 + Int64(part.first) }, shared: shared))
        }
    }

    /// Refusals of a shared batch that may be for one request's records
    /// alone, so each request tries its own.
    static func mayBeOneRequests(_ error: ClientError) -> Bool {
        guard let code = error.errorCode else { return false }
        return [.messageTooLarge, .recordListTooLarge, .invalidRecord, .invalidTimestamp, .corruptMessage, .policyViolation].contains(code)
    }
}
