import COpenSSL
import Foundation

/// SHA-256 through the system's OpenSSL, streamed.
struct Digest {
    private let context: OpaquePointer

    init() {
        context = EVP_MD_CTX_new()
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
    }

    func update(_ bytes: some ContiguousBytes) {
        _ = bytes.withUnsafeBytes { EVP_DigestUpdate(context, $0.baseAddress, $0.count) }
    }

    func finish() -> String {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        out.withUnsafeMutableBufferPointer { _ = EVP_DigestFinal_ex(context, $0.baseAddress, &length) }
        EVP_MD_CTX_free(context)
        return out.map { String(format: "%02x", $0) }.joined()
    }

    static func hex(_ bytes: some ContiguousBytes) -> String {
        let digest = Digest()
        digest.update(bytes)
        return digest.finish()
    }

    /// The SHA-256 of `length` bytes of a file from `offset` (the whole
    /// file when `length` is nil); nil if the file is shorter or missing.
    static func file(_ path: String, from offset: UInt64 = 0, length: UInt64? = nil) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        do {
            try handle.seek(toOffset: offset)
            let digest = Digest()
            var left = length ?? UInt64.max
            while left > 0 {
                let chunk = try handle.read(upToCount: Int(min(left, 1 << 20))) ?? Data()
                if chunk.isEmpty { break }
                digest.update(chunk)
                left -= UInt64(chunk.count)
            }
            let result = digest.finish()
            return length == nil || left == 0 ? result : nil
        } catch {
            return nil
        }
    }
}
