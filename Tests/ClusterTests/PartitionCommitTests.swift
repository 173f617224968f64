import Core
import Foundation
import KafkaWire
import LogStore
import Synchronization
import Testing

@testable import Cluster

/// The high watermark's one decider, fed events with times given by hand:
/// no sockets, no sleeps.
@Suite struct PartitionCommitTests {
    @Test func alonePartitionCommitsWhatIsDurableAndNeverMovesBack() {
        var commit = PartitionCommit(highWatermark: 0, logEndOffset: 0)
        #expect(commit.handle(.appendedDurably(logEndOffset: 3), now: .zero) == [.advanceHighWatermark(to: 3)])
        // Appends become durable out of order (group commit): the older one moves nothing.
        #expect(commit.handle(.appendedDurably(logEndOffset: 7), now: .zero) == [.advanceHighWatermark(to: 7)])
        #expect(commit.handle(.appendedDurably(logEndOffset: 5), now: .zero) == [])
        #expect(commit.highWatermark == 7)
        // Events of other roles do nothing here.
        #expect(commit.handle(.followerFetched(replica: 2, offset: 9), now: .zero) == [])
        #expect(commit.handle(.leaderReported(highWatermark: 9, durableLogEnd: 9), now: .zero) == [])
        #expect(commit.highWatermark == 7)
    }

    @Test func leaderCommitsWhatEveryInSyncReplicaHolds() {
        var commit = PartitionCommit(highWatermark: 0, logEndOffset: 0)
        _ = commit.handle(.becameLeader(leader: 1, replicas: [1, 2, 3], isr: [1, 2, 3], logEndOffset: 0, replicaLagMax: .seconds(1)), now: .zero)
        #expect(commit.handle(.appendedDurably(logEndOffset: 10), now: .milliseconds(1)) == [])
        #expect(commit.handle(.followerFetched(replica: 2, offset: 10), now: .milliseconds(2)) == [])
        #expect(commit.handle(.followerFetched(replica: 3, offset: 4), now: .milliseconds(3)) == [.advanceHighWatermark(to: 4)])
        #expect(commit.handle(.followerFetched(replica: 3, offset: 10), now: .milliseconds(4)) == [.advanceHighWatermark(to: 10)])
        #expect(commit.highWatermark == 10)
    }

    @Test func aLeaderWithFollowersInSyncCommitsItsUncopiedTailOnlyOnceTheyHoldIt() {
        // A broker back from a crash leads again at its old epoch: its log
        // holds 301 records, the checkpoint says 299 were committed. The two
        // past it (written, never copied) are not committed by the takeover,
        // so a producer's retry of them, a duplicate, waits for the followers.
        var commit = PartitionCommit(highWatermark: 299, logEndOffset: 299)
        #expect(commit.handle(.becameLeader(leader: 3, replicas: [1, 2, 3], isr: [1, 2, 3], logEndOffset: 301, replicaLagMax: .seconds(1)), now: .zero) == [])
        #expect(commit.highWatermark == 299)
        #expect(commit.handle(.followerFetched(replica: 1, offset: 301), now: .milliseconds(1)) == [])
        #expect(commit.handle(.followerFetched(replica: 2, offset: 301), now: .milliseconds(2)) == [.advanceHighWatermark(to: 301)])
    }

    @Test func aLeaderAloneInItsISRCommitsItsLogAtOnce() {
        var commit = PartitionCommit(highWatermark: 4, logEndOffset: 4)
        #expect(commit.handle(.becameLeader(leader: 1, replicas: [1], isr: [1], logEndOffset: 9, replicaLagMax: .seconds(1)), now: .zero) == [.advanceHighWatermark(to: 9)])
        var shrunk = PartitionCommit(highWatermark: 4, logEndOffset: 4)
        #expect(shrunk.handle(.becameLeader(leader: 2, replicas: [1, 2, 3], isr: [2], logEndOffset: 6, replicaLagMax: .seconds(1)), now: .zero) == [.advanceHighWatermark(to: 6)])
    }

    @Test func aFollowerLaggingPastTheLimitIsProposedOutThenTheHighWatermarkMovesOn() {
        var commit = PartitionCommit(highWatermark: 0, logEndOffset: 0)
        _ = commit.handle(.becameLeader(leader: 1, replicas: [1, 2, 3], isr: [1, 2, 3], logEndOffset: 0, replicaLagMax: .seconds(1)), now: .zero)
        _ = commit.handle(.appendedDurably(logEndOffset: 10), now: .milliseconds(100))
        _ = commit.handle(.followerFetched(replica: 2, offset: 10), now: .milliseconds(100))
        _ = commit.handle(.followerFetched(replica: 3, offset: 3), now: .milliseconds(100))
        #expect(commit.highWatermark == 3)
        // Within the lag limit (counted from leadership, when 3 was last caught up): no change.
        #expect(commit.proposedISR(now: .milliseconds(900)) == nil)
        _ = commit.handle(.followerFetched(replica: 2, offset: 10), now: .milliseconds(1_150))
        #expect(commit.proposedISR(now: .milliseconds(1_000)) == nil)
        #expect(commit.proposedISR(now: .milliseconds(1_001)) == [1, 2])
        #expect(commit.handle(.isrChanged([1, 2], revision: 1), now: .milliseconds(1_200)) == [.advanceHighWatermark(to: 10)])
    }

    @Test func followerCommitsTheLeadersWordWithinItsOwnLog() {
        var commit = PartitionCommit(highWatermark: 2, logEndOffset: 2)
        _ = commit.handle(.becameFollower(logEndOffset: 5), now: .zero)
        // Its own copies commit nothing by themselves.
        #expect(commit.handle(.appendedDurably(logEndOffset: 8), now: .zero) == [])
        // The leader's high watermark, capped at what this replica holds.
        #expect(commit.handle(.leaderReported(highWatermark: 20, durableLogEnd: 8), now: .zero) == [.advanceHighWatermark(to: 8)])
        #expect(commit.handle(.leaderReported(highWatermark: 6, durableLogEnd: 8), now: .zero) == [])
        #expect(commit.handle(.leaderReported(highWatermark: 20, durableLogEnd: 12), now: .zero) == [.advanceHighWatermark(to: 12)])
        // Truncated back to the leader's history: the high watermark goes no further than the log.
        _ = commit.handle(.truncated(logEndOffset: 6), now: .zero)
        #expect(commit.highWatermark == 6 && commit.logEndOffset == 6)
    }

    @Test func leadershipLostThenRegainedStartsFromTheLogItHas() {
        var commit = PartitionCommit(highWatermark: 0, logEndOffset: 0)
        _ = commit.handle(.becameLeader(leader: 1, replicas: [1, 2], isr: [1], logEndOffset: 0, replicaLagMax: .seconds(30)), now: .zero)
        #expect(commit.handle(.appendedDurably(logEndOffset: 4), now: .zero) == [.advanceHighWatermark(to: 4)])
        _ = commit.handle(.becameFollower(logEndOffset: 4), now: .zero)
        #expect(commit.tracker == nil)
        #expect(commit.handle(.followerFetched(replica: 2, offset: 4), now: .zero) == [])
        _ = commit.handle(.becameLeader(leader: 1, replicas: [1, 2], isr: [1, 2], logEndOffset: 9, replicaLagMax: .seconds(30)), now: .zero)
        #expect(commit.tracker?.isr == [1, 2])
        #expect(commit.handle(.followerFetched(replica: 2, offset: 9), now: .zero) == [.advanceHighWatermark(to: 9)])
    }
}

/// The shell: a real partition log, a manual clock; it is the only code
/// that persists a high watermark, and it tells its observers.
@Suite struct HighWatermarksTests {
    final class Seen: Sendable {
        let values = Mutex<[Int64]>([])
    }

    @Test func theShellPersistsTellsObserversAndTimesTheISRLagByItsClock() async throws {
        let path = NSTemporaryDirectory() + "postduif-hw-\(UUID().uuidString)"
        let store = try LogStore(path: path, options: LogStoreOptions(durability: .none))
        defer {
            store.close()
            try? FileManager.default.removeItem(atPath: path)
        }
        try store.createTopic("t", configuration: TopicConfiguration(partitionCount: 1))
        let log = try store.partition(topic: "t", index: 0)
        let clock = ManualClock()
        let owner = HighWatermarks(clock: clock)
        let seen = Seen()
        owner.observe(readsLog: true) { _, highWatermark in seen.values.withLock { $0.append(highWatermark) } }
        let id = PartitionID(topic: "t", index: 0)

        try owner.handle(.becameLeader(leader: 1, replicas: [1, 2], isr: [1, 2], logEndOffset: 0, replicaLagMax: .seconds(10)), for: log)
        var builder = RecordBatchBuilder()
        for value in 0..<4 { builder.append(key: nil, value: [UInt8(value)], timestamp: 1) }
        let appended = try log.write(builder.build())
        #expect(try owner.handle(.appendedDurably(logEndOffset: try await appended.durable().lastOffset + 1), for: log) == nil)
        #expect(log.highWatermark == 0)
        #expect(try owner.handle(.followerFetched(replica: 2, offset: 4), for: log) == 4)
        #expect(log.highWatermark == 4)
        #expect(seen.values.withLock { $0 } == [4])

        // The follower stops fetching: proposed out only once the clock passes the limit.
        clock.advance(by: .seconds(10))
        #expect(owner.proposedISR(id) == nil)
        clock.advance(by: .milliseconds(1))
        #expect(owner.proposedISR(id) == [1])
    }
}

/// The replica fetcher's rests, with time given by hand.
@Suite struct FetchRestsTests {
    @Test func aRefusedPartitionRestsWhileTheOthersAreAsked() {
        var rests = FetchRests(restAfterRefusal: .milliseconds(100))
        #expect(rests.plan(count: 3, now: .zero) == .fetch([0, 1, 2]))
        rests.refused(1, now: .milliseconds(10))
        #expect(rests.plan(count: 3, now: .milliseconds(50)) == .fetch([0, 2]))
        #expect(rests.plan(count: 3, now: .milliseconds(109)) == .fetch([0, 2]))
        #expect(rests.plan(count: 3, now: .milliseconds(110)) == .fetch([0, 1, 2]))
    }

    @Test func whenEveryPartitionRestsTheFetcherWaitsForTheFirstToEnd() {
        var rests = FetchRests(restAfterRefusal: .milliseconds(100))
        rests.refused(0, now: .milliseconds(30))
        rests.refused(1, now: .milliseconds(20))
        #expect(rests.plan(count: 2, now: .milliseconds(40)) == .waitUntil(.milliseconds(120)))
        #expect(rests.plan(count: 2, now: .milliseconds(120)) == .fetch([1]))
        #expect(rests.plan(count: 0, now: .milliseconds(500)) == .fetch([]))
    }
}
