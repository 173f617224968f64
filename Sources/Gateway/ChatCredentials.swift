import Foundation
import KafkaNIO
import Synchronization

/// Accounts and sessions, as the chat-accounts and chat-sessions topics
/// hold them: written by those topics' tails alone, read by every request
/// that authenticates.
final class ChatCredentials: Sendable {
    private struct Tables {
        /// A nil hash: the account was removed; its name stays taken.
        var accounts: [String: (hash: String?, offset: Int64)] = [:]
        /// Users whose latest record under their own id is of the layout of
        /// before compaction (a registration there, or a null): compaction
        /// would keep or drop the wrong one, so the gateway writes what
        /// the account is over it (`ChatGateway.compactAccounts`).
        var unrepaired: Set<String> = []
        /// Sessions by the SHA-256 of their access token.
        var sessions: [String: Session] = [:]
    }

    private let tables = Mutex(Tables())
    /// Moves with every change to sessions or accounts: a connection that
    /// authenticated a token keeps the session while this stands still.
    let revision = Atomic<UInt64>(0)

    func account(_ userID: String) -> (hash: String?, offset: Int64)? { tables.withLock { $0.accounts[userID] } }

    func session(forDigest digest: String) -> Session? { tables.withLock { $0.sessions[digest] } }

    /// The devices of `userID` that hold a session, sorted.
    func devices(of userID: String) -> [String] {
        tables.withLock { Set($0.sessions.values.filter { $0.userID == userID }.map(\.deviceID)).sorted() }
    }

    /// The digests of every access token of one device.
    func tokenDigests(of userID: String, device: String) -> [String] {
        tables.withLock { $0.sessions.filter { $0.value.userID == userID && $0.value.deviceID == device }.map(\.key).sorted() }
    }

    var activeAccounts: [String] { tables.withLock { $0.accounts.filter { $0.value.hash != nil }.keys.sorted() } }

    /// A registration counts only for a name not yet taken (the first
    /// wins); an operator's record (`postduif user add --chat`) sets the
    /// password whatever was there; a null removes the account and keeps
    /// the name taken, so a user id never passes to someone else.
    ///
    /// The topic is compacted, so what an account is must not depend on
    /// records compaction drops: a registration has a key of its own
    /// (`user\0r\0id`, never compacted away, the lowest offset wins), and
    /// what an operator sets or removes goes under the user id, where the
    /// latest record wins and a removal is a record (`removed`), not a
    /// null that compaction would drop after `delete.retention.ms`.
    func applyAccount(_ record: StoredRecord) {
        guard let key = String(bytes: record.key, encoding: .utf8) else { return }
        defer { revision.add(1, ordering: .releasing) }
        let parts = key.split(separator: "\u{0}", maxSplits: 2, omittingEmptySubsequences: false)
        let userID = String(parts[0])
        let registration = parts.count == 3 && parts[1] == "r"
        guard let value = record.value else {
            // The layout of before: a null removed the account.
            tables.withLock { tables in
                tables.accounts[userID] = (nil, tables.accounts[userID]?.offset ?? record.offset)
                tables.unrepaired.insert(userID)
            }
            return
        }
        guard let account = MatrixJSON.decodeRecord(AccountRecord.self, from: value) else { return }
        tables.withLock { tables in
            if !registration && account.setBy != nil {
                // Set by an operator or kept by a repair: what the account is.
                tables.accounts[userID] = (account.removed == true ? nil : account.passwordHash, tables.accounts[userID]?.offset ?? record.offset)
                tables.unrepaired.remove(userID)
                return
            }
            if !registration { tables.unrepaired.insert(userID) }
            if tables.accounts[userID] == nil {
                tables.accounts[userID] = (account.passwordHash, record.offset)
            }
        }
    }

    /// Users whose account a record of the old layout decides, with what
    /// the account is (a nil hash: removed).
    var unrepairedAccounts: [(user: String, hash: String?)] {
        tables.withLock { tables in tables.unrepaired.sorted().map { ($0, tables.accounts[$0]?.hash) } }
    }

    func applySession(_ record: StoredRecord) {
        guard let digest = String(bytes: record.key, encoding: .utf8) else { return }
        defer { revision.add(1, ordering: .releasing) }
        guard let value = record.value, let stored = MatrixJSON.decodeRecord(SessionRecord.self, from: value) else {
            _ = tables.withLock { $0.sessions.removeValue(forKey: digest) }
            return
        }
        tables.withLock { $0.sessions[digest] = Session(userID: stored.userID, deviceID: stored.deviceID) }
    }
}
