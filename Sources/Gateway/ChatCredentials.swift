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
    func applyAccount(_ record: StoredRecord) {
        guard let userID = String(bytes: record.key, encoding: .utf8) else { return }
        defer { revision.add(1, ordering: .releasing) }
        guard let value = record.value else {
            tables.withLock { tables in tables.accounts[userID] = (nil, tables.accounts[userID]?.offset ?? record.offset) }
            return
        }
        guard let account = MatrixJSON.decodeRecord(AccountRecord.self, from: value) else { return }
        tables.withLock { tables in
            if account.setBy == "operator" {
                tables.accounts[userID] = (account.passwordHash, tables.accounts[userID]?.offset ?? record.offset)
            } else if tables.accounts[userID] == nil {
                tables.accounts[userID] = (account.passwordHash, record.offset)
            }
        }
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
