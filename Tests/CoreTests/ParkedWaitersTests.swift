import Core
import Synchronization
import TestSupport
import Testing

/// The waiter table under a manual clock: deadlines expire only when the
/// test moves the clock, so nothing here sleeps.
@Suite("Parked waiters")
struct ParkedWaitersTests {
    let clock = ManualClock()
    let deadlines: ManualDeadlines
    let table: ParkedWaiters<String, Int>

    init() {
        deadlines = ManualDeadlines(clock: clock)
        table = ParkedWaiters(deadlines: deadlines, expired: -1, waitersMax: 3)
    }

    /// Records what each callback got, in order.
    final class Outcomes: Sendable {
        let values = Mutex<[Int]>([])
        func record(_ value: Int) { values.withLock { $0.append(value) } }
        var all: [Int] { values.withLock { $0 } }
    }

    @Test func aWokenWaitGetsTheValueAndLeavesNoDeadlineBehind() {
        let outcomes = Outcomes()
        #expect(table.park("a", timeout: .seconds(5), resume: outcomes.record) != nil)
        #expect(table.count == 1 && deadlines.count == 1)
        #expect(table.wake("a", with: 7) == 1)
        #expect(outcomes.all == [7])
        #expect(table.count == 0 && deadlines.count == 0)
        clock.advance(by: .seconds(10))
        deadlines.fire()
        #expect(outcomes.all == [7])
    }

    @Test func aWaitExpiresWhenTheClockPassesItsDeadlineAndNotBefore() {
        let outcomes = Outcomes()
        table.park("a", timeout: .seconds(5), resume: outcomes.record)
        clock.advance(by: .milliseconds(4_999))
        deadlines.fire()
        #expect(outcomes.all.isEmpty)
        clock.advance(by: .milliseconds(1))
        deadlines.fire()
        #expect(outcomes.all == [-1])
        #expect(table.wake("a", with: 7) == 0)
        #expect(outcomes.all == [-1])
    }

    @Test func aReadyValueAnswersAtOnceWithoutParking() {
        let outcomes = Outcomes()
        #expect(table.park("a", timeout: .seconds(5), ready: { 3 }, resume: outcomes.record) == nil)
        #expect(outcomes.all == [3] && table.count == 0 && deadlines.count == 0)
    }

    @Test func beyondTheBoundAWaitIsAnsweredAsExpiredAtOnce() {
        let outcomes = Outcomes()
        for key in ["a", "b", "c", "d"] { table.park(key, timeout: .seconds(5), resume: outcomes.record) }
        #expect(outcomes.all == [-1])
        #expect(table.count == 3)
    }

    @Test func wakingOneKeyLeavesTheOthersParked() {
        let outcomes = Outcomes()
        table.park("a", timeout: .seconds(5), resume: outcomes.record)
        table.park("b", timeout: .seconds(5), resume: outcomes.record)
        table.wake("a", with: 1)
        #expect(outcomes.all == [1] && table.isWaiting("b") && !table.isWaiting("a"))
        table.wakeAll(with: 2)
        #expect(outcomes.all == [1, 2] && table.count == 0 && deadlines.count == 0)
    }

    @Test func wakingSeveralKeysAtOnceWakesTheirsOnlyAndLeavesNoDeadlines() {
        let outcomes = Outcomes()
        table.park("a", timeout: .seconds(5), resume: outcomes.record)
        table.park("b", timeout: .seconds(5), resume: outcomes.record)
        table.park("c", timeout: .seconds(5), resume: outcomes.record)
        #expect(table.wake(each: ["a", "c", "x"], with: 4) == 2)
        #expect(outcomes.all == [4, 4] && table.count == 1 && table.isWaiting("b"))
        #expect(deadlines.count == 1)
    }

    @Test func aFullTableAnswersAParkUnlessAsExpiredUnlessItIsMoot() {
        let outcomes = Outcomes()
        for key in ["a", "b", "c"] { table.park(key, timeout: .seconds(5), resume: outcomes.record) }
        #expect(table.parkUnless("d", timeout: .seconds(5), moot: { true }, resume: outcomes.record) == nil)
        #expect(outcomes.all.isEmpty)
        #expect(table.parkUnless("d", timeout: .seconds(5), moot: { false }, resume: outcomes.record) == nil)
        #expect(outcomes.all == [-1] && table.count == 3)
    }

    @Test func aCancelledTaskEndsItsWaitAsExpired() async {
        let started = Mutex(false)
        let task = Task { [table] in
            await table.wait("a", timeout: .seconds(60), ready: { started.withLock { $0 = true }; return nil })
        }
        // Parked once its `ready` ran; then cancelling it must end the wait.
        #expect(await eventually { started.withLock { $0 } && table.count == 1 })
        task.cancel()
        #expect(await task.value == -1)
        #expect(table.count == 0 && deadlines.count == 0)
    }

    @Test func aTaskWaitGetsTheWokenValue() async {
        let task = Task { [table] in await table.wait("a", timeout: .seconds(60)) }
        #expect(await eventually { table.count == 1 })
        table.wake("a", with: 42)
        #expect(await task.value == 42)
    }
}


@Suite("Parked waiters, unless moot")
struct ParkUnlessTests {
    @Test func aMootWaitCallsNothingAndAStandingOneParks() {
        let clock = ManualClock()
        let table = ParkedWaiters<String, Int>(deadlines: ManualDeadlines(clock: clock), expired: -1, waitersMax: 10)
        let calls = Mutex(0)
        #expect(table.parkUnless("a", timeout: .seconds(1), moot: { true }) { _ in calls.withLock { $0 += 1 } } == nil)
        #expect(calls.withLock { $0 } == 0 && table.count == 0)
        #expect(table.parkUnless("a", timeout: .seconds(1), moot: { false }) { _ in calls.withLock { $0 += 1 } } != nil)
        table.wake("a", with: 1)
        #expect(calls.withLock { $0 } == 1)
    }
}
