import Foundation
import KafkaWire
import LogStore
import Testing

/// A follower's log: batches copied from a leader's log with `appendReplica`
/// keep their bytes, offsets and epochs, and leave the follower ready to
/// lead (conversation index and producer sequences included).
@Suite struct ReplicaAppendTests {
    func conversationTopic(_ store: LogStore) throws -> PartitionLog {
        var configuration = TopicConfiguration(partitionCount: 1)
        configuration.conversationIndex = true
        try store.createTopic("chat", configuration: configuration)
        return try store.partition(topic: "chat", index: 0)
    }

    @Test func aFollowerHoldsTheLeadersBatchesByteForByte() async throws {
        let leaderStore = try TemporaryStore()
        let followerStore = try TemporaryStore()
        let leader = try conversationTopic(leaderStore.store)
        let follower = try conversationTopic(followerStore.store)
        _ = try await leader.append(makeBatch(count: 3, conversations: ["room-a", "room-b"]), leaderEpoch: 1)
        _ = try await leader.append(makeBatch(count: 2, conversations: ["room-a"], producerID: 7, producerEpoch: 0, baseSequence: 0), leaderEpoch: 1)
        _ = try await leader.append(makeBatch(count: 4, conversations: ["room-c", "room-a"]), leaderEpoch: 3)

        for batch in try leader.read(from: 0, bytesMax: 1 << 20).batches {
            let result = try await follower.appendReplica(batch)
            #expect(!result.isDuplicate)
        }
        #expect(follower.logEndOffset == leader.logEndOffset)
        #expect(try follower.read(from: 0, bytesMax: 1 << 20).batches == leader.read(from: 0, bytesMax: 1 << 20).batches)
        // The epoch history came along: OffsetForLeaderEpoch answers alike.
        #expect(follower.currentLeaderEpoch == 3)
        for epoch: Int32 in [0, 1, 2, 3] {
            let mine = follower.endOffset(forLeaderEpoch: epoch)
            let theirs = leader.endOffset(forLeaderEpoch: epoch)
            #expect(mine?.epoch == theirs?.epoch && mine?.endOffset == theirs?.endOffset)
        }
        // The conversation index too.
        for room in ["room-a", "room-b", "room-c"] {
            let mine = try follower.history(conversation: Array(room.utf8), limit: 50)
            let theirs = try leader.history(conversation: Array(room.utf8), limit: 50)
            #expect(mine == theirs)
            #expect(!mine.isEmpty)
        }
        // The producer's sequences too: once it leads, a retry of the last batch is a duplicate.
        let retry = try await follower.append(makeBatch(count: 2, conversations: ["room-a"], producerID: 7, producerEpoch: 0, baseSequence: 0), leaderEpoch: 4)
        #expect(retry.isDuplicate && retry.baseOffset == 3)
        try #require(follower.verify().isEmpty)
    }

    @Test func aBatchThatDoesNotFollowTheLogEndIsRefused() async throws {
        let leaderStore = try TemporaryStore()
        let followerStore = try TemporaryStore()
        let leader = try conversationTopic(leaderStore.store)
        let follower = try conversationTopic(followerStore.store)
        _ = try await leader.append(makeBatch(count: 2), leaderEpoch: 0)
        _ = try await leader.append(makeBatch(count: 2), leaderEpoch: 0)
        let batches = try leader.read(from: 0, bytesMax: 1 << 20).batches
        // The second batch first: a gap.
        await #expect(throws: LogStoreError.self) { _ = try await follower.appendReplica(batches[1]) }
        #expect(follower.logEndOffset == 0)
        _ = try await follower.appendReplica(batches[0])
        // The first again: an overlap.
        await #expect(throws: LogStoreError.self) { _ = try await follower.appendReplica(batches[0]) }
        _ = try await follower.appendReplica(batches[1])
        #expect(follower.logEndOffset == 4)
    }

    @Test func aCopyFromAFormerRoleIsFencedOff() async throws {
        let leaderStore = try TemporaryStore()
        let followerStore = try TemporaryStore()
        let leader = try conversationTopic(leaderStore.store)
        let follower = try conversationTopic(followerStore.store)
        _ = try await leader.append(makeBatch(count: 2), leaderEpoch: 0)
        _ = try await leader.append(makeBatch(count: 2), leaderEpoch: 0)
        let batches = try leader.read(from: 0, bytesMax: 1 << 20).batches
        let following = follower.fenceReplicas()
        _ = try await follower.appendReplica(batches[0], fence: following)
        // The follower takes the lead: the old leader's late answer must not land.
        _ = follower.fenceReplicas()
        let error = await #expect(throws: LogStoreError.self) { _ = try await follower.appendReplica(batches[1], fence: following) }
        #expect(error?.code == .replicaFenced)
        #expect(follower.logEndOffset == 2)
    }

    @Test func aCorruptReplicatedBatchIsRefusedAndNothingIsWritten() async throws {
        let leaderStore = try TemporaryStore()
        let followerStore = try TemporaryStore()
        let leader = try conversationTopic(leaderStore.store)
        let follower = try conversationTopic(followerStore.store)
        _ = try await leader.append(makeBatch(count: 2), leaderEpoch: 0)
        var batch = try leader.read(from: 0, bytesMax: 1 << 20).batches[0]
        batch[batch.count - 1] ^= 0xff
        await #expect(throws: LogStoreError.self) { _ = try await follower.appendReplica(batch) }
        #expect(follower.logEndOffset == 0)
    }
}
