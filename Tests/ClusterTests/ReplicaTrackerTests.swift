import Testing

@testable import Cluster

@Suite struct ReplicaTrackerTests {
    func tracker() -> ReplicaTracker {
        ReplicaTracker(leader: 1, replicas: [1, 2, 3], isr: [1, 2, 3], leaderLogEnd: 0, highWatermark: 0, now: 0, lagMaxMilliseconds: 1000)
    }

    @Test func theHighWatermarkIsTheSlowestInSyncReplicasEnd() {
        var t = tracker()
        var moved = t.leaderAppended(logEndOffset: 10)
        #expect(!moved && t.highWatermark == 0)
        moved = t.followerFetched(2, offset: 10, now: 5)
        #expect(!moved && t.highWatermark == 0)  // 3 has not fetched yet
        moved = t.followerFetched(3, offset: 4, now: 6)
        #expect(moved && t.highWatermark == 4)
        moved = t.followerFetched(3, offset: 10, now: 7)
        #expect(moved && t.highWatermark == 10)
        // Never back: a follower refetching an older offset (after a restart) does not lower it.
        moved = t.followerFetched(3, offset: 2, now: 8)
        #expect(!moved && t.highWatermark == 10)
    }

    @Test func aLaggingFollowerLeavesTheISRAndTheHighWatermarkMovesOn() throws {
        var t = tracker()
        _ = t.leaderAppended(logEndOffset: 10)
        _ = t.followerFetched(2, offset: 10, now: 100)
        _ = t.followerFetched(3, offset: 3, now: 100)
        #expect(t.highWatermark == 3)
        #expect(t.proposedISR(now: 900) == nil)  // within the lag limit
        // 2 keeps fetching at the end; 3 stays behind for more than the limit.
        _ = t.followerFetched(2, offset: 10, now: 1150)
        let shrunk = try #require(t.proposedISR(now: 1200))
        #expect(shrunk == [1, 2])
        let moved = t.isrChanged(to: shrunk, revision: 1)
        #expect(moved && t.highWatermark == 10)
        #expect(t.acceptsAcksAll(minInsyncReplicas: 2))
        #expect(!t.acceptsAcksAll(minInsyncReplicas: 3))
        // 3 catches up: it joins again.
        _ = t.followerFetched(3, offset: 10, now: 1300)
        #expect(t.proposedISR(now: 1300) == [1, 2, 3])
    }

    /// The fault campaign's seed 201 round 20: a follower proposed into the
    /// ISR counts for the high watermark while the record's write is in
    /// flight, so nothing appended meanwhile is committed without it; a
    /// write that failed lets the old ISR commit again.
    @Test func aFollowerJoiningTheISRCountsFromItsProposal() throws {
        var t = ReplicaTracker(leader: 1, replicas: [1, 2], isr: [1], leaderLogEnd: 10, highWatermark: 10, now: 0, lagMaxMilliseconds: 1000)
        _ = t.followerFetched(2, offset: 10, now: 5)
        let proposed = t.proposeISR(now: 5)
        let proposal = try #require(proposed)
        #expect(proposal == [1, 2] && t.joining == [2] && t.isr == [1])
        // Appended while the ISR write is in flight: not committed until 2 has it.
        var moved = t.leaderAppended(logEndOffset: 12)
        #expect(!moved && t.highWatermark == 10)
        moved = t.followerFetched(2, offset: 12, now: 6)
        #expect(moved && t.highWatermark == 12)
        _ = t.isrChanged(to: proposal, revision: 1)
        #expect(t.joining.isEmpty && t.isr == [1, 2])

        // A write that failed: the joiner no longer holds commits back.
        var u = ReplicaTracker(leader: 1, replicas: [1, 2], isr: [1], leaderLogEnd: 10, highWatermark: 10, now: 0, lagMaxMilliseconds: 1000)
        _ = u.followerFetched(2, offset: 10, now: 5)
        _ = u.proposeISR(now: 5)
        _ = u.leaderAppended(logEndOffset: 12)
        #expect(u.highWatermark == 10)
        moved = u.expanding([])
        #expect(moved && u.highWatermark == 12 && u.joining.isEmpty)
    }

    /// The fault campaign's seed 20261205 round 64: a cluster view read
    /// before the leader's own ISR write landed, delivered after it, must
    /// not take the follower just written in back out: the high watermark
    /// would move on without it while etcd's record, which the controller
    /// hands leadership by, names it in sync.
    @Test func aRecordOlderThanTheLeadersOwnISRWriteChangesNothing() throws {
        var t = ReplicaTracker(leader: 3, replicas: [1, 3], isr: [3], isrRevision: 50, leaderLogEnd: 10, highWatermark: 10, now: 0, lagMaxMilliseconds: 1000)
        _ = t.followerFetched(1, offset: 10, now: 5)
        let proposed = t.proposeISR(now: 5)
        let proposal = try #require(proposed)
        var moved = t.isrChanged(to: proposal, revision: 60)
        #expect(!moved && t.isr == [1, 3] && t.isrRevision == 60)
        _ = t.leaderAppended(logEndOffset: 12)
        // The stale view (revision 50, ISR [3]): ignored, so 10 and 11 wait for broker 1.
        moved = t.isrChanged(to: [3], revision: 50)
        #expect(!moved && t.isr == [1, 3] && t.highWatermark == 10)
        moved = t.isrChanged(to: [1, 3], revision: 60)
        #expect(!moved && t.isrRevision == 60)
        moved = t.followerFetched(1, offset: 12, now: 6)
        #expect(moved && t.highWatermark == 12)
        // A newer record (the controller took broker 1 out) is etcd's word.
        _ = t.leaderAppended(logEndOffset: 14)
        moved = t.isrChanged(to: [3], revision: 70)
        #expect(moved && t.isr == [3] && t.highWatermark == 14)
    }

    @Test func aFollowerBehindTheHighWatermarkDoesNotJoin() {
        var t = tracker()
        _ = t.leaderAppended(logEndOffset: 10)
        _ = t.followerFetched(2, offset: 10, now: 0)
        _ = t.followerFetched(3, offset: 10, now: 0)
        _ = t.isrChanged(to: [1, 2], revision: 1)
        _ = t.leaderAppended(logEndOffset: 20)
        _ = t.followerFetched(2, offset: 20, now: 4000)
        #expect(t.highWatermark == 20)
        _ = t.followerFetched(3, offset: 15, now: 5000)
        #expect(t.proposedISR(now: 5000) == nil)
        _ = t.followerFetched(2, offset: 20, now: 5050)
        _ = t.followerFetched(3, offset: 20, now: 5100)
        #expect(t.proposedISR(now: 5100) == [1, 2, 3])
    }

    @Test func aFollowerThatStopsFetchingFallsOutEvenWhenNothingIsWritten() {
        var t = tracker()
        _ = t.followerFetched(2, offset: 0, now: 10)
        _ = t.followerFetched(3, offset: 0, now: 10)
        _ = t.followerFetched(2, offset: 0, now: 1500)
        #expect(t.proposedISR(now: 1500) == [1, 2])
    }

    @Test func fetchesFromStrangersAreIgnored() {
        var t = tracker()
        _ = t.leaderAppended(logEndOffset: 5)
        let moved = t.followerFetched(9, offset: 5, now: 0)
        #expect(!moved)
        #expect(t.logEnd(of: 9) == nil)
        #expect(t.logEnd(of: 1) == 5)
    }

    @Test func aLeaderAloneInItsISRCommitsWhatItWrites() {
        var t = ReplicaTracker(leader: 1, replicas: [1, 2, 3], isr: [1], leaderLogEnd: 0, highWatermark: 0, now: 0)
        let moved = t.leaderAppended(logEndOffset: 7)
        #expect(moved && t.highWatermark == 7)
        #expect(!t.acceptsAcksAll(minInsyncReplicas: 2))
    }
}
