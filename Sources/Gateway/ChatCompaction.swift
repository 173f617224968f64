import ChatWire
import Foundation
import Logging

extension ChatGateway {
    /// Makes `chat-accounts` safe to compact, then compacts it. Accounts
    /// written before the topic was compacted may be decided by a record
    /// compaction would drop (a first registration under the user id with a
    /// losing one after it, or a null that removed the account and goes
    /// after `delete.retention.ms`): each such account gets a record under
    /// its user id saying what it is ("kept"), and only then does the
    /// topic's `cleanup.policy` become `compact`. Every gateway does this at
    /// start, after reading the topic whole; once done there is nothing to
    /// rewrite and one DescribeConfigs to make.
    func compactAccounts(_ state: ChatState) async {
        do {
            let pending = state.credentials.unrepairedAccounts
            for (user, hash) in pending {
                let record = AccountRecord(passwordHash: hash ?? "", createdMs: MatrixAPI.now, setBy: "kept", removed: hash == nil ? true : nil)
                _ = try await link.produce(topic: ChatTopics.accounts, key: Array(user.utf8), value: MatrixJSON.encodeBytes(record), timestamp: MatrixAPI.now)
            }
            if !pending.isEmpty {
                logger.notice("accounts of the layout before compaction rewritten", metadata: ["accounts": "\(pending.count)"])
            }
            if try await link.topicConfig(ChatTopics.accounts, "cleanup.policy") != "compact" {
                try await link.setTopicConfig(ChatTopics.accounts, "cleanup.policy", "compact")
                logger.notice("chat-accounts is compacted from now on")
            }
        } catch {
            // Chat goes on; the topic grows until a later start succeeds.
            logger.warning("chat-accounts not made compacted", metadata: ["error": "\(error)"])
        }
    }
}

extension ChatGateway {
    /// Makes `conversation-members` compacted. Its records were keyed by
    /// room alone (compaction would keep one member per room); they are now
    /// keyed by room and member. Before the topic's `cleanup.policy`
    /// becomes `compact`, every membership the rooms' state holds is
    /// written under its new key, and written again if it changed while
    /// these were written (another gateway's join or leave in between).
    /// Once compacted, one DescribeConfigs at each start.
    func compactMembers(_ state: ChatState) async {
        do {
            guard try await link.topicConfig(ChatTopics.members, "cleanup.policy") != "compact" else { return }
            let written = state.directory.allMemberships()
            try await writeMemberships(written)
            let end = try await link.offset(topic: ChatTopics.state, partition: 0, earliest: false)
            if end > 0 { await state.waitApplied(topic: ChatTopics.state, partition: 0, offset: end - 1, timeout: .seconds(120)) }
            let before = Dictionary(written.map { ($0.roomID + "\u{0}" + $0.member, $0.membership) }, uniquingKeysWith: { $1 })
            try await writeMemberships(state.directory.allMemberships().filter { before[$0.roomID + "\u{0}" + $0.member] != $0.membership })
            try await link.setTopicConfig(ChatTopics.members, "cleanup.policy", "compact")
            logger.notice("conversation-members keyed by room and member, compacted from now on", metadata: ["memberships": "\(written.count)"])
        } catch {
            logger.warning("conversation-members not made compacted", metadata: ["error": "\(error)"])
        }
    }

    private func writeMemberships(_ memberships: [(roomID: String, member: String, membership: String)]) async throws {
        // In rounds of requests at once: one at a time, a large deployment's
        // memberships took minutes.
        var next = 0
        while next < memberships.count {
            let round = memberships[next..<min(next + 256, memberships.count)]
            next += round.count
            try await withThrowingTaskGroup(of: Void.self) { group in
                for entry in round {
                    group.addTask {
                        let change = MatrixJSON.encodeBytes(MembershipChange(member: entry.member, membership: entry.membership))
                        _ = try await self.link.produce(topic: ChatTopics.members, key: MembershipChange.key(room: entry.roomID, member: entry.member),
                                                        partitionKey: Array(entry.roomID.utf8), value: change, timestamp: MatrixAPI.now)
                    }
                }
                try await group.waitForAll()
            }
        }
    }
}
