import Foundation
import Testing

@testable import Broker

@Suite struct SaslTests {
    /// A user file holding one user with the given SCRAM-SHA-256 credential.
    func userStore(sha256: ScramCredential, password: String) throws -> UserStore {
        let path = NSTemporaryDirectory() + "postduif-users-\(UUID().uuidString).json"
        let users = ["user": UserStore.User(credentials: [
            ScramHash.sha256.rawValue: sha256,
            ScramHash.sha512.rawValue: ScramHash.sha512.credential(password: password),
        ])]
        try JSONEncoder().encode(users).write(to: URL(fileURLWithPath: path))
        return UserStore(path: path)
    }

    /// RFC 7677, section 3: the SCRAM-SHA-256 exchange for user "user" with
    /// password "pencil", byte for byte.
    @Test func scramSha256MatchesTheRFC7677TestVector() throws {
        let salt = try #require(Data(base64Encoded: "W22ZaJ0SNY7soEsUEjb6gQ=="))
        let store = try userStore(sha256: ScramHash.sha256.credential(password: "pencil", salt: salt, iterations: 4096), password: "pencil")
        defer { try? FileManager.default.removeItem(atPath: store.path) }
        let nonce: @Sendable () -> String = { "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0" }
        var server = try #require(SaslServer(mechanism: "SCRAM-SHA-256", users: store, makeNonce: nonce))
        guard case .challenge(let first) = server.receive(Array("n,,n=user,r=rOprNGfwEbeRWgbNEkqO".utf8)) else {
            Issue.record("no server-first message")
            return
        }
        #expect(String(decoding: first, as: UTF8.self) == "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        let final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        guard case .success(let user, let serverFinal) = server.receive(Array(final.utf8)) else {
            Issue.record("the RFC's proof was refused")
            return
        }
        #expect(user == "user")
        #expect(String(decoding: serverFinal, as: UTF8.self) == "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    }

    @Test func aWrongProofAndAnUnknownUserAreRefused() throws {
        let salt = try #require(Data(base64Encoded: "W22ZaJ0SNY7soEsUEjb6gQ=="))
        let store = try userStore(sha256: ScramHash.sha256.credential(password: "pencil", salt: salt, iterations: 4096), password: "pencil")
        defer { try? FileManager.default.removeItem(atPath: store.path) }
        let nonce: @Sendable () -> String = { "server" }
        var server = try #require(SaslServer(mechanism: "SCRAM-SHA-256", users: store, makeNonce: nonce))
        _ = server.receive(Array("n,,n=user,r=client".utf8))
        let wrong = "c=biws,r=clientserver,p=" + Data(repeating: 7, count: 32).base64EncodedString()
        guard case .failure = server.receive(Array(wrong.utf8)) else {
            Issue.record("a wrong proof was accepted")
            return
        }
        var unknown = try #require(SaslServer(mechanism: "SCRAM-SHA-256", users: store))
        guard case .failure = unknown.receive(Array("n,,n=mallory,r=abc".utf8)) else {
            Issue.record("an unknown user got a challenge")
            return
        }
    }

    @Test func plainChecksThePasswordAgainstTheStoredCredential() throws {
        let store = try userStore(sha256: ScramHash.sha256.credential(password: "pencil"), password: "pencil")
        defer { try? FileManager.default.removeItem(atPath: store.path) }
        var good = try #require(SaslServer(mechanism: "PLAIN", users: store))
        guard case .success(let user, _) = good.receive(Array("\u{0}user\u{0}pencil".utf8)) else {
            Issue.record("the right password was refused")
            return
        }
        #expect(user == "user")
        var bad = try #require(SaslServer(mechanism: "PLAIN", users: store))
        guard case .failure = bad.receive(Array("\u{0}user\u{0}crayon".utf8)) else {
            Issue.record("a wrong password was accepted")
            return
        }
        #expect(SaslServer(mechanism: "GSSAPI", users: store) == nil)
    }

    @Test func theUserFileNeverHoldsThePassword() throws {
        let path = NSTemporaryDirectory() + "postduif-users-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = UserStore(path: path)
        try store.add(user: "alice", password: "wonderland-secret")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains("wonderland-secret"))
        #expect(try store.list() == ["alice"])
        let permissions = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(permissions == 0o600)
        try store.remove(user: "alice")
        #expect(try store.list().isEmpty)
    }
}
