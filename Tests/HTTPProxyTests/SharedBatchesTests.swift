import KafkaWire
import PostduifClient
import Synchronization
import Testing

@testable import HTTPProxy

@Suite("Produce requests sharing a partition's batch")
struct SharedBatchesTests {
    /// A stand-in for the producer: records each batch it is given and
    /// answers it when the test opens its gate.
    final class Writes: Sendable {
        let batches = Mutex<[[Record]]>([])
        private let gates = Mutex<[CheckedContinuation<Result<Int64, ClientError>, Never>]>([])
        let answers = Mutex<[Result<Int64, ClientError>]>([])

        func write(_ batch: [UInt8]) async -> Result<Int64, ClientError> {
            let records = (try? RecordBatch(validating: batch).records()) ?? []
            batches.withLock { $0.append(records) }
            return await withCheckedContinuation { gate in gates.withLock { $0.append(gate) } }
        }

        /// Answers the oldest batch not yet answered, once it has come.
        func answerNext(_ answer: Result<Int64, ClientError>) async {
            while true {
                if let gate = gates.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
                    gate.resume(returning: answer)
                    return
                }
                await Task.yield()
            }
        }

        func waitForBatches(_ count: Int) async {
            while batches.withLock({ $0.count }) < count { await Task.yield() }
        }
    }

    let place = TopicPartition("t", 0)

    func appending(_ values: [String]) -> (inout RecordBatchBuilder) -> Bool {
        { builder in
            for value in values { builder.append(key: nil, value: Array(value.utf8), timestamp: 1_000) }
            return true
        }
    }

    func values(_ records: [Record]) -> [String] { records.map { String(decoding: $0.value ?? [], as: UTF8.self) } }

    /// Whether a request of one record finds the partition idle and leads.
    func leads(_ shared: SharedBatches, _ value: String) -> Bool {
        guard case .lead = shared.join(place, records: 1, bytes: 10, append: appending([value])) else {
            Issue.record("an idle partition's request does not lead")
            return false
        }
        return true
    }

    @Test func requestsThatComeWhileABatchIsWrittenShareTheNextOneAndGetTheirOwnOffsets() async throws {
        let writes = Writes()
        let shared = SharedBatches { _, batch, _ in await writes.write(batch) }
        // The first request finds the partition idle: it writes its own batch.
        guard leads(shared, "a") else { return }
        // Two more come while that batch is being written.
        guard case .wait(let b, first: let bFirst) = shared.join(place, records: 2, bytes: 20, append: appending(["b1", "b2"])),
              case .wait(let c, first: let cFirst) = shared.join(place, records: 1, bytes: 10, append: appending(["c"])) else {
            Issue.record("requests behind a batch being written do not wait")
            return
        }
        #expect(bFirst == 0 && cFirst == 2)
        #expect(writes.batches.withLock { $0.isEmpty }, "nothing is written before the batch ahead is answered")
        // The first batch is answered: the waiting one is written, as one.
        shared.written(place)
        await writes.waitForBatches(1)
        #expect(values(writes.batches.withLock { $0[0] }) == ["b1", "b2", "c"])
        // One that comes now waits behind the shared batch.
        guard case .wait(let d, first: 0) = shared.join(place, records: 1, bytes: 10, append: appending(["d"])) else {
            Issue.record("a request behind the shared batch does not wait")
            return
        }
        await writes.answerNext(.success(40))
        let bOutcome = await b.outcome
        let cOutcome = await c.outcome
        #expect(try bOutcome.offset.get() == 40 && bOutcome.shared)
        #expect(try cOutcome.offset.get() == 42 && cOutcome.shared)
        await writes.waitForBatches(2)
        #expect(values(writes.batches.withLock { $0[1] }) == ["d"])
        await writes.answerNext(.success(43))
        let dOutcome = await d.outcome
        #expect(try dOutcome.offset.get() == 43 && !dOutcome.shared)
        // The writer of d's batch says the partition is idle before it
        // answers d: the next request leads again.
        _ = leads(shared, "e")
    }

    @Test func aFullWaitingBatchTakesNoMoreAndABadRequestLeavesNothingInIt() async throws {
        let writes = Writes()
        let shared = SharedBatches { _, batch, _ in await writes.write(batch) }
        guard leads(shared, "a") else { return }
        let big = SharedBatches.bytesMax / 2 + 1
        let bigValue = String(repeating: "b", count: big)
        guard case .wait(let b, first: 0) = shared.join(place, records: 1, bytes: big, append: appending([bigValue])) else {
            Issue.record("the first request behind does not wait")
            return
        }
        // One that would take the waiting batch past its limit goes alone.
        guard case .alone = shared.join(place, records: 1, bytes: big, append: appending(["c"])) else {
            Issue.record("a waiting batch took more than its limit")
            return
        }
        // One whose records cannot all be added leaves none of them.
        let bad = shared.join(place, records: 2, bytes: 20) { builder in
            builder.append(key: nil, value: Array("x".utf8), timestamp: 1_000)
            return false
        }
        if bad != nil { Issue.record("a request whose records could not all be added was given a turn") }
        guard case .wait(let e, first: 1) = shared.join(place, records: 1, bytes: 10, append: appending(["e"])) else {
            Issue.record("a request after a refused one does not follow b")
            return
        }
        shared.written(place)
        await writes.waitForBatches(1)
        #expect(values(writes.batches.withLock { $0[0] }) == [bigValue, "e"])
        // A shared batch refused: every request in it hears it was shared.
        await writes.answerNext(.failure(ClientError(code: ErrorCode.messageTooLarge.rawValue, "too large")))
        let bOutcome = await b.outcome
        let eOutcome = await e.outcome
        #expect(bOutcome.shared && eOutcome.shared)
        if case .failure(let error) = bOutcome.offset {
            #expect(SharedBatches.mayBeOneRequests(error))
        } else {
            Issue.record("a refused batch was answered with an offset")
        }
        #expect(!SharedBatches.mayBeOneRequests(ClientError(code: ErrorCode.topicAuthorizationFailed.rawValue, "refused")))
        #expect(!SharedBatches.mayBeOneRequests(ClientError(code: ErrorCode.notLeaderOrFollower.rawValue, "moved")))
    }
}
