import Operations
import Testing

/// The allocator's settings are the server's unless the operator chose
/// them; what they do to a file's page faults is tested with the real
/// server (test_matrix_media.py).
@Suite struct AllocatorTuningTests {
    @Test func anOperatorsAllocatorTunablesStand() {
        #expect(!AllocatorTuning.apply(environment: ["GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"]))
        #expect(!AllocatorTuning.apply(environment: ["GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=512:glibc.malloc.arena_max=2"]))
    }

    @Test func otherwiseBothThresholdsAreSet() {
        #expect(AllocatorTuning.apply(environment: ["GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=512"]))
        #expect(AllocatorTuning.apply(environment: [:]))
    }
}
