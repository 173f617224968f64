import Foundation
import KafkaWire
import Logging

/// Operators' account management (`postduif user add|remove|list --chat`):
/// records in the accounts topic, which every gateway reads.
public enum ChatAccounts {
    static func userID(_ name: String, serverName: String) -> String {
        name.hasPrefix("@") ? name : "@\(name):\(serverName)"
    }

    /// Adds an account, or sets its password. Returns the user id.
    public static func set(_ name: String, password: String, broker: String, serverName: String, credentials: (user: String, password: String)? = nil) async throws -> String {
        let user = userID(name, serverName: serverName)
        let link = BrokerLink(bootstrap: broker, logger: Logger(label: "postduif.user"), credentials: credentials)
        try await link.ensureTopic(ChatTopics.accounts, partitions: 1)
        let record = AccountRecord(passwordHash: Secrets.hashPassword(password), createdMs: MatrixAPI.now, setBy: "operator")
        _ = try await link.produce(topic: ChatTopics.accounts, key: Array(user.utf8), value: MatrixJSON.encodeBytes(record), timestamp: MatrixAPI.now)
        return user
    }

    /// Removes an account; its sessions end with it at the next login check,
    /// and its name stays taken.
    public static func remove(_ name: String, broker: String, serverName: String, credentials: (user: String, password: String)? = nil) async throws -> String {
        let user = userID(name, serverName: serverName)
        let link = BrokerLink(bootstrap: broker, logger: Logger(label: "postduif.user"), credentials: credentials)
        try await link.ensureTopic(ChatTopics.accounts, partitions: 1)
        // A record, not a null: compaction drops nulls after a while, and
        // the name must stay taken for good.
        let removed = AccountRecord(passwordHash: "", createdMs: MatrixAPI.now, setBy: "operator", removed: true)
        _ = try await link.produce(topic: ChatTopics.accounts, key: Array(user.utf8), value: MatrixJSON.encodeBytes(removed), timestamp: MatrixAPI.now)
        return user
    }

    /// The accounts that can log in, by user id.
    public static func list(broker: String, credentials: (user: String, password: String)? = nil) async throws -> [String] {
        let link = BrokerLink(bootstrap: broker, logger: Logger(label: "postduif.user"), credentials: credentials)
        try await link.ensureTopic(ChatTopics.accounts, partitions: 1)
        let end = try await link.offset(topic: ChatTopics.accounts, partition: 0, earliest: false)
        var next = try await link.offset(topic: ChatTopics.accounts, partition: 0, earliest: true)
        let connection = try await link.open(try await link.leader(topic: ChatTopics.accounts, partition: 0, refresh: false))
        defer { Task { await connection.close() } }
        let tail = PartitionTail(topic: ChatTopics.accounts, partition: 0, connection: connection)
        let state = ChatState(serverName: "", timelinePartitions: 1)
        while next < end {
            let (records, after, _) = try await tail.fetch(from: next, maxWaitMilliseconds: 100)
            records.forEach(state.credentials.applyAccount)
            guard after > next else { break }
            next = after
        }
        return state.credentials.activeAccounts
    }
}
