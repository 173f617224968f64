import COpenSSL
import Foundation

/// SCRAM credentials of one user for one hash (RFC 5802): never the
/// password itself, only what verifies it.
struct ScramCredential: Codable, Equatable, Sendable {
    var salt: Data
    var iterations: Int
    var storedKey: Data
    var serverKey: Data
}

/// The SCRAM hashes Kafka clients offer.
enum ScramHash: String, CaseIterable, Sendable {
    case sha256 = "SCRAM-SHA-256"
    case sha512 = "SCRAM-SHA-512"

    var digest: OpaquePointer {
        switch self {
        case .sha256: EVP_sha256()
        case .sha512: EVP_sha512()
        }
    }

    var length: Int { self == .sha256 ? 32 : 64 }

    /// Kafka's minimum iteration count (ScramMechanism.java).
    static let iterationsMin = 4096

    func saltedPassword(_ password: String, salt: Data, iterations: Int) -> Data {
        var output = Data(count: length)
        let password = Array(password.utf8)
        let status = output.withUnsafeMutableBytes { out in
            salt.withUnsafeBytes { saltBytes in
                password.withUnsafeBufferPointer { passwordBytes in
                    PKCS5_PBKDF2_HMAC(
                        UnsafeRawPointer(passwordBytes.baseAddress)?.assumingMemoryBound(to: CChar.self), Int32(passwordBytes.count),
                        saltBytes.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(saltBytes.count),
                        Int32(iterations), digest, Int32(length), out.baseAddress?.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
        precondition(status == 1, "PBKDF2 failed")
        return output
    }

    func hmac(key: Data, _ message: Data) -> Data {
        var output = Data(count: length)
        var outputLength: UInt32 = 0
        output.withUnsafeMutableBytes { out in
            key.withUnsafeBytes { keyBytes in
                message.withUnsafeBytes { messageBytes in
                    _ = HMAC(digest, keyBytes.baseAddress, Int32(keyBytes.count),
                             messageBytes.baseAddress?.assumingMemoryBound(to: UInt8.self), messageBytes.count,
                             out.baseAddress?.assumingMemoryBound(to: UInt8.self), &outputLength)
                }
            }
        }
        precondition(Int(outputLength) == length, "HMAC produced \(outputLength) bytes")
        return output
    }

    func hash(_ message: Data) -> Data {
        var output = Data(count: length)
        var outputLength: UInt32 = 0
        let status = output.withUnsafeMutableBytes { out in
            message.withUnsafeBytes { bytes in
                EVP_Digest(bytes.baseAddress, bytes.count, out.baseAddress?.assumingMemoryBound(to: UInt8.self), &outputLength, digest, nil)
            }
        }
        precondition(status == 1 && Int(outputLength) == length, "digest failed")
        return output
    }

    func credential(password: String, salt: Data = randomBytes(32), iterations: Int = ScramHash.iterationsMin) -> ScramCredential {
        let salted = saltedPassword(password, salt: salt, iterations: iterations)
        let clientKey = hmac(key: salted, Data("Client Key".utf8))
        return ScramCredential(salt: salt, iterations: iterations, storedKey: hash(clientKey), serverKey: hmac(key: salted, Data("Server Key".utf8)))
    }
}

func randomBytes(_ count: Int) -> Data {
    var generator = SystemRandomNumberGenerator()
    return Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
}

/// Compares without an early exit, so timing does not reveal a prefix.
func constantTimeEqual(_ a: Data, _ b: Data) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (x, y) in zip(a, b) { difference |= x ^ y }
    return difference == 0
}

/// The user file: SCRAM credentials per user, JSON, written atomically
/// with owner-only permissions. The broker reads it at each authentication,
/// so `postduif user add` takes effect on a running node.
public struct UserStore: Sendable {
    public let path: String

    struct User: Codable {
        var credentials: [String: ScramCredential]
    }

    public init(path: String) {
        self.path = path
    }

    func load() throws -> [String: User] {
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        return try JSONDecoder().decode([String: User].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    private func save(_ users: [String: User]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(users)
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw UserError("cannot write \(temporary)")
        }
        // rename(2) replaces the old file atomically: readers see old or new, never half.
        guard rename(temporary, path) == 0 else { throw UserError("cannot replace \(path): errno \(errno)") }
    }

    /// Adds a user or replaces its password.
    public func add(user: String, password: String) throws {
        guard !user.isEmpty, !password.isEmpty else { throw UserError("user name and password must not be empty") }
        var users = try load()
        users[user] = User(credentials: Dictionary(uniqueKeysWithValues: ScramHash.allCases.map { ($0.rawValue, $0.credential(password: password)) }))
        try save(users)
    }

    public func remove(user: String) throws {
        var users = try load()
        guard users.removeValue(forKey: user) != nil else { throw UserError("no user \(user)") }
        try save(users)
    }

    public func list() throws -> [String] {
        try load().keys.sorted()
    }

    func credential(user: String, hash: ScramHash) throws -> ScramCredential? {
        try load()[user]?.credentials[hash.rawValue]
    }
}

public struct UserError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
