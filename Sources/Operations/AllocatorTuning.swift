#if canImport(Glibc)
import CMalloc
#endif

/// How the server's processes ask glibc's allocator to keep the memory of
/// large buffers (ADR 0036).
///
/// A file streamed through the gateway passes through buffers of 256 KiB to
/// 1 MiB: the socket's reads, the chunks, the record batches. With glibc's
/// defaults each such buffer is a fresh `mmap` until the first is freed,
/// and after that the free memory at the top of a heap is given back to the
/// kernel once it passes twice the largest buffer freed so far. Either way
/// the next file's buffers touch new pages: 2,000 page faults for a 10 MiB
/// upload, a sixth of its server CPU. These values lie inside the range
/// glibc's own sliding thresholds may reach (a mapping threshold of up to
/// 32 MiB, a trim threshold of twice that); they are fixed from the start
/// so the memory of one file is reused for the next.
public enum AllocatorTuning {
    /// Allocations below this come from the heaps, whose memory is reused;
    /// larger ones are mapped and unmapped each time.
    public static let mapThresholdBytes = 4 << 20
    /// Free memory at the top of a heap beyond this is given back to the
    /// kernel: one 10 MiB file's buffers stay, a burst's excess does not.
    public static let trimThresholdBytes = 32 << 20

    /// Sets both, unless the operator chose the allocator's settings with
    /// `GLIBC_TUNABLES`, which then stand. Returns whether it set them.
    @discardableResult
    public static func apply(environment: [String: String]) -> Bool {
        #if canImport(Glibc)
        if let tunables = environment["GLIBC_TUNABLES"], tunables.contains("glibc.malloc.") { return false }
        // mallopt returns 1 on success; a value it refuses leaves the default.
        let mapped = mallopt(M_MMAP_THRESHOLD, Int32(mapThresholdBytes)) == 1
        let trimmed = mallopt(M_TRIM_THRESHOLD, Int32(trimThresholdBytes)) == 1
        return mapped && trimmed
        #else
        return false
        #endif
    }
}
