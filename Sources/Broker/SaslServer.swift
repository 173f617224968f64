import Foundation

/// One connection's SASL exchange: PLAIN (one message) or SCRAM (RFC 5802,
/// two round trips). A pure state machine over messages; the user file is
/// consulted, sockets are not.
struct SaslServer: Sendable {
    static let mechanisms = ["PLAIN", ScramHash.sha256.rawValue, ScramHash.sha512.rawValue]

    enum Step {
        /// Send this challenge and wait for the next message.
        case challenge([UInt8])
        /// Authenticated as this user; send the final bytes.
        case success(user: String, final: [UInt8])
        case failure(String)
    }

    private enum State {
        case start
        case scramSentFirst(hash: ScramHash, user: String, nonce: String, clientFirstBare: String, serverFirst: String, credential: ScramCredential)
        case finished
    }

    let mechanism: String
    let users: UserStore
    /// The server's part of the SCRAM nonce; random, injectable for test vectors.
    let makeNonce: @Sendable () -> String
    private var state = State.start

    init?(mechanism: String, users: UserStore, makeNonce: @escaping @Sendable () -> String = { randomBytes(18).base64EncodedString().replacingOccurrences(of: ",", with: "_") }) {
        guard Self.mechanisms.contains(mechanism) else { return nil }
        self.mechanism = mechanism
        self.users = users
        self.makeNonce = makeNonce
    }

    mutating func receive(_ message: [UInt8]) -> Step {
        switch state {
        case .start:
            if mechanism == "PLAIN" {
                state = .finished
                return plain(message)
            }
            return scramFirst(message, hash: ScramHash(rawValue: mechanism)!)
        case .scramSentFirst(let hash, let user, let nonce, let clientFirstBare, let serverFirst, let credential):
            state = .finished
            return scramFinal(message, hash: hash, user: user, nonce: nonce, clientFirstBare: clientFirstBare, serverFirst: serverFirst, credential: credential)
        case .finished:
            return .failure("authentication already finished")
        }
    }

    /// PLAIN: `authzid NUL user NUL password`, checked against the user's
    /// SCRAM-SHA-512 credential, so no password is ever stored.
    private func plain(_ message: [UInt8]) -> Step {
        let parts = message.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure("malformed PLAIN message") }
        let user = String(decoding: parts[1], as: UTF8.self)
        let password = String(decoding: parts[2], as: UTF8.self)
        guard let credential = try? users.credential(user: user, hash: .sha512) else {
            return .failure("authentication failed for user \(user)")
        }
        let expected = ScramHash.sha512.credential(password: password, salt: credential.salt, iterations: credential.iterations)
        guard constantTimeEqual(expected.storedKey, credential.storedKey) else {
            return .failure("authentication failed for user \(user)")
        }
        return .success(user: user, final: [])
    }

    private mutating func scramFirst(_ message: [UInt8], hash: ScramHash) -> Step {
        let text = String(decoding: message, as: UTF8.self)
        // gs2 header: "n,," or "y,," (no channel binding), optionally "a=authzid".
        let headerParts = text.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard headerParts.count == 3, headerParts[0] == "n" || headerParts[0] == "y" else {
            return .failure("malformed SCRAM client-first message")
        }
        let clientFirstBare = String(headerParts[2])
        let attributes = Self.attributes(clientFirstBare)
        guard let name = attributes["n"], let clientNonce = attributes["r"], !clientNonce.isEmpty else {
            return .failure("SCRAM client-first message lacks a user or nonce")
        }
        let user = name.replacingOccurrences(of: "=2C", with: ",").replacingOccurrences(of: "=3D", with: "=")
        guard let credential = try? users.credential(user: user, hash: hash) else {
            return .failure("authentication failed for user \(user)")
        }
        let nonce = clientNonce + makeNonce()
        let serverFirst = "r=\(nonce),s=\(credential.salt.base64EncodedString()),i=\(credential.iterations)"
        state = .scramSentFirst(hash: hash, user: user, nonce: nonce, clientFirstBare: clientFirstBare, serverFirst: serverFirst, credential: credential)
        return .challenge(Array(serverFirst.utf8))
    }

    private func scramFinal(_ message: [UInt8], hash: ScramHash, user: String, nonce: String, clientFirstBare: String, serverFirst: String, credential: ScramCredential) -> Step {
        let text = String(decoding: message, as: UTF8.self)
        guard let proofRange = text.range(of: ",p=") else { return .failure("SCRAM client-final message lacks a proof") }
        // The signature covers the client-final message as received.
        let withoutProof = String(text[..<proofRange.lowerBound])
        let attributes = Self.attributes(text)
        // librdkafka before 2.6.1 repeats the client nonce in front of the
        // full nonce, so a nonce that ends with ours is accepted.
        guard let echoed = attributes["r"], echoed == nonce || echoed.hasSuffix(nonce) else {
            return .failure("SCRAM nonce mismatch")
        }
        guard let proofText = attributes["p"], let proof = Data(base64Encoded: proofText), proof.count == hash.length else {
            return .failure("malformed SCRAM proof")
        }
        let authMessage = Data("\(clientFirstBare),\(serverFirst),\(withoutProof)".utf8)
        let clientSignature = hash.hmac(key: credential.storedKey, authMessage)
        let clientKey = Data(zip(proof, clientSignature).map { $0 ^ $1 })
        guard constantTimeEqual(hash.hash(clientKey), credential.storedKey) else {
            return .failure("authentication failed for user \(user)")
        }
        let serverSignature = hash.hmac(key: credential.serverKey, authMessage)
        return .success(user: user, final: Array("v=\(serverSignature.base64EncodedString())".utf8))
    }

    /// `k=v` attributes of a SCRAM message (values may contain `=`).
    static func attributes(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for part in text.split(separator: ",") {
            guard let equals = part.firstIndex(of: "="), part.distance(from: part.startIndex, to: equals) == 1 else { continue }
            result[String(part[..<equals])] = String(part[part.index(after: equals)...])
        }
        return result
    }
}
