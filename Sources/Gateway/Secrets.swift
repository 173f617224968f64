import COpenSSL
import Foundation

/// Passwords and access tokens, through the system's OpenSSL.
enum Secrets {
    /// scrypt's cost: N = 2^15, r = 8, p = 1 (32 MiB, tens of milliseconds
    /// here): memory-hard, so a stolen account record is slow to attack on
    /// GPUs too. Stored with each hash, so it can be raised later.
    static let scryptN: UInt64 = 1 << 15
    static let scryptR: UInt64 = 8
    static let scryptP: UInt64 = 1

    static func randomBytes(_ count: Int) -> [UInt8] {
        // The system generator reads getrandom(2) on Linux: fit for secrets.
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    static func scrypt(_ password: String, salt: [UInt8], n: UInt64, r: UInt64, p: UInt64) -> [UInt8]? {
        var key = [UInt8](repeating: 0, count: 32)
        let password = Array(password.utf8)
        let status = password.withUnsafeBufferPointer { pass in
            salt.withUnsafeBufferPointer { salt in
                key.withUnsafeMutableBufferPointer { out in
                    EVP_PBE_scrypt(UnsafeRawPointer(pass.baseAddress)?.assumingMemoryBound(to: CChar.self), pass.count,
                                   salt.baseAddress, salt.count, n, r, p, 64 << 20, out.baseAddress, out.count)
                }
            }
        }
        return status == 1 ? key : nil
    }

    /// `scrypt$N$r$p$salt$hash`, salt and hash in base64.
    static func hashPassword(_ password: String, n: UInt64 = scryptN) -> String {
        let salt = randomBytes(16)
        let hash = scrypt(password, salt: salt, n: n, r: scryptR, p: scryptP) ?? []
        return "scrypt$\(n)$\(scryptR)$\(scryptP)$\(Data(salt).base64EncodedString())$\(Data(hash).base64EncodedString())"
    }

    static func verifyPassword(_ password: String, against stored: String) -> Bool {
        let parts = stored.split(separator: "$")
        guard parts.count == 6, parts[0] == "scrypt", let n = UInt64(parts[1]), let r = UInt64(parts[2]), let p = UInt64(parts[3]),
              let salt = Data(base64Encoded: String(parts[4])), let expected = Data(base64Encoded: String(parts[5])),
              let computed = scrypt(password, salt: Array(salt), n: n, r: r, p: p) else { return false }
        guard computed.count == expected.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(computed, expected) { difference |= a ^ b }
        return difference == 0
    }

    /// A new access token: 32 random bytes, URL-safe base64.
    static func newToken() -> String {
        "pdt_" + Data(randomBytes(32)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// What the sessions topic keeps of a token: its SHA-256, so reading
    /// the topic does not give anyone a usable token.
    static func tokenDigest(_ token: String) -> String {
        sha256Hex(Array(token.utf8))
    }

    /// SHA-256 of `bytes`, in lowercase hex.
    static func sha256Hex(_ bytes: [UInt8]) -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        _ = bytes.withUnsafeBufferPointer { input in
            digest.withUnsafeMutableBufferPointer { out in
                EVP_Digest(input.baseAddress, input.count, out.baseAddress, &length, EVP_sha256(), nil)
            }
        }
        return hex(digest)
    }

    /// SHA-256 over bytes that come in pieces (an upload as it arrives).
    /// Not Sendable: one task feeds it.
    final class SHA256Stream {
        private let context: OpaquePointer

        init() {
            context = EVP_MD_CTX_new()
            EVP_DigestInit_ex(context, EVP_sha256(), nil)
        }

        deinit { EVP_MD_CTX_free(context) }

        func update(_ bytes: UnsafeRawBufferPointer) {
            EVP_DigestUpdate(context, bytes.baseAddress, bytes.count)
        }

        /// The digest in lowercase hex; call once.
        func finish() -> String {
            var digest = [UInt8](repeating: 0, count: 32)
            var length: UInt32 = 0
            digest.withUnsafeMutableBufferPointer { _ = EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
            return Secrets.hex(digest)
        }
    }

    private static func hex(_ digest: [UInt8]) -> String {
        // Hex by hand: String(format:) cost a fifth of a sync's CPU.
        let hex = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(64)
        for byte in digest {
            text.append(hex[Int(byte >> 4)])
            text.append(hex[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// An opaque identifier (room ids, device ids).
    static func opaque(_ count: Int) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        var generator = SystemRandomNumberGenerator()
        return String((0..<count).map { _ in alphabet.randomElement(using: &generator)! })
    }
}
