import Cluster
import Foundation
import KafkaNIO
import LogStore
import Synchronization
import Testing

@testable import Broker

/// Parked waits (fetches, acks=all produces) end by news or by their
/// deadline, and an ended wait leaves no timer behind: a burst once left
/// tens of thousands of timers that fired during the next workload.
@Suite struct ParkedTimeoutsTests {
    @Test func aDeadlineExpiresOnceAndARemovedWaitNever() async throws {
        let timeouts = ParkedTimeouts(tick: .milliseconds(5))
        let fired = Mutex<[String]>([])
        _ = timeouts.add(timeout: .milliseconds(20)) { fired.withLock { $0.append("expired") } }
        let removed = timeouts.add(timeout: .milliseconds(20)) { fired.withLock { $0.append("removed") } }
        timeouts.remove(removed)
        #expect(timeouts.count == 1)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(10)
        while timeouts.count > 0 && clock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try await Task.sleep(for: .milliseconds(30))
        #expect(fired.withLock { $0 } == ["expired"])
        #expect(timeouts.count == 0)
    }

    @Test func anEarlierDeadlineAddedLaterIsNotHeldBackByTheArmedOne() async throws {
        let timeouts = ParkedTimeouts(tick: .milliseconds(5))
        let clock = ContinuousClock()
        let started = clock.now
        let late = timeouts.add(timeout: .seconds(30)) {}
        let expired = Mutex<Duration?>(nil)
        _ = timeouts.add(timeout: .milliseconds(20)) { expired.withLock { $0 = clock.now - started } }
        let deadline = clock.now + .seconds(10)
        while expired.withLock({ $0 }) == nil && clock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        let after = try #require(expired.withLock { $0 })
        #expect(after >= .milliseconds(20) && after < .seconds(10))
        #expect(timeouts.count == 1)
        timeouts.remove(late)
        #expect(timeouts.count == 0)
    }

    @Test func aFetchWokenByNewsLeavesNoTimerBehind() async throws {
        let notifier = DataNotifier()
        let partition = PartitionID(topic: "t", index: 0)
        for _ in 0..<50 {
            let seen = notifier.generation(of: [partition])
            async let woken: Void = notifier.wait(on: [partition], afterGeneration: seen, timeout: .seconds(60))
            // Until the wait is parked, a notification would only make it return at once.
            while notifier.timeouts.count == 0 { await Task.yield() }
            notifier.notify(partition)
            await woken
        }
        #expect(notifier.timeouts.count == 0)
    }

    @Test func aFetchWithNoNewsReturnsAtItsDeadline() async throws {
        let notifier = DataNotifier()
        let partition = PartitionID(topic: "t", index: 0)
        let clock = ContinuousClock()
        let started = clock.now
        await notifier.wait(on: [partition], afterGeneration: notifier.generation(of: [partition]), timeout: .milliseconds(50))
        #expect(clock.now - started >= .milliseconds(50))
        #expect(notifier.timeouts.count == 0)
    }

    @Test func aCancelledFetchEndsAndLeavesNoTimer() async throws {
        let notifier = DataNotifier()
        let partition = PartitionID(topic: "t", index: 0)
        let seen = notifier.generation(of: [partition])
        let waiting = Task { await notifier.wait(on: [partition], afterGeneration: seen, timeout: .seconds(60)) }
        while notifier.timeouts.count == 0 { await Task.yield() }
        waiting.cancel()
        await waiting.value
        #expect(notifier.timeouts.count == 0)
    }

    @Test func anAcksAllWaitEndsByTheHighWatermarkOrItsTimeout() async throws {
        let path = NSTemporaryDirectory() + "postduif-parked-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try LogStore(path: path, options: LogStoreOptions(durability: .none))
        defer { store.close() }
        _ = try store.createTopic("t", configuration: TopicConfiguration(partitionCount: 1))
        let log = try store.partition(topic: "t", index: 0)
        let id = PartitionID(topic: "t", index: 0)
        let replication = ReplicationState(minInsyncReplicas: 2)
        replication.lead(id, replicas: [1, 2], isr: [1, 2], leaderID: 1, log: log)
        try replication.highWatermarks.handle(.appendedDurably(logEndOffset: 5), for: log)

        func committed(_ offset: Int64, within timeout: Duration) async -> Bool {
            await withCheckedContinuation { continuation in
                replication.whenHighWatermark(id, reaches: offset, timeout: timeout) { continuation.resume(returning: $0) }
            }
        }
        // Passed by the follower's fetch: true, and no timer left.
        async let reached = committed(5, within: .seconds(60))
        while replication.timeouts.count == 0 { await Task.yield() }
        try replication.highWatermarks.handle(.followerFetched(replica: 2, offset: 5), for: log)
        #expect(await reached)
        #expect(replication.timeouts.count == 0)

        // No follower: false after the timeout.
        try replication.highWatermarks.handle(.appendedDurably(logEndOffset: 9), for: log)
        #expect(await committed(9, within: .milliseconds(100)) == false)
        #expect(replication.timeouts.count == 0)
    }
}
