import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import Synchronization

// Accounts and sessions, as the chat-accounts and chat-sessions topics hold them.
extension ChatState {
    func account(_ userID: String) -> (hash: String?, offset: Int64)? { inner.withLock { $0.accounts[userID] } }

    func session(forDigest digest: String) -> Session? { inner.withLock { $0.sessions[digest] } }

    var activeAccounts: [String] { inner.withLock { $0.accounts.filter { $0.value.hash != nil }.keys.sorted() } }

    /// A registration counts only for a name not yet taken (the first
    /// wins); an operator's record (`postduif user add --chat`) sets the
    /// password whatever was there; a null removes the account and keeps
    /// the name taken, so a user id never passes to someone else.
    func applyAccount(_ record: StoredRecord) {
        guard let userID = String(bytes: record.key, encoding: .utf8) else { return }
        defer { credentialsRevision.add(1, ordering: .releasing) }
        guard let value = record.value else {
            inner.withLock { inner in inner.accounts[userID] = (nil, inner.accounts[userID]?.offset ?? record.offset) }
            return
        }
        guard let account = MatrixJSON.decodeRecord(AccountRecord.self, from: value) else { return }
        let hash = account.passwordHash
        let byOperator = account.setBy == "operator"
        inner.withLock { inner in
            if byOperator {
                inner.accounts[userID] = (hash, inner.accounts[userID]?.offset ?? record.offset)
            } else if inner.accounts[userID] == nil {
                inner.accounts[userID] = (hash, record.offset)
            }
        }
    }

    func applySession(_ record: StoredRecord) {
        guard let digest = String(bytes: record.key, encoding: .utf8) else { return }
        guard let value = record.value, let stored = MatrixJSON.decodeRecord(SessionRecord.self, from: value) else {
            _ = inner.withLock { $0.sessions.removeValue(forKey: digest) }
            credentialsRevision.add(1, ordering: .releasing)
            return
        }
        inner.withLock { $0.sessions[digest] = Session(userID: stored.userID, deviceID: stored.deviceID) }
        credentialsRevision.add(1, ordering: .releasing)
    }
}
