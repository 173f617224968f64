import CCRC32C

/// CRC-32C (Castagnoli), the checksum of record batch v2.
public enum CRC32C {
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        postduif_crc32c_extend(0, bytes.baseAddress, bytes.count)
    }

    public static func checksum(_ bytes: [UInt8], from start: Int = 0, to end: Int? = nil) -> UInt32 {
        let end = end ?? bytes.count
        precondition(start >= 0 && start <= end && end <= bytes.count, "checksum range outside its bytes")
        return bytes.withUnsafeBytes { raw in
            postduif_crc32c_extend(0, raw.baseAddress.map { $0 + start }, end - start)
        }
    }

    /// The table implementation, whatever the CPU: tests compare it with `checksum`.
    public static func portableChecksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { postduif_crc32c_extend_portable(0, $0.baseAddress, $0.count) }
    }

    /// True when the CPU instruction computes it (x86-64 with SSE 4.2).
    public static var isHardwareAccelerated: Bool { postduif_crc32c_is_hardware() != 0 }
}
