import NIOCore
import Testing

@testable import Gateway

/// An upload's received buffers, taken apart into chunks.
@Suite struct ReceivedPiecesTests {
    /// Chunks cut across the buffers' edges come out whole and in order,
    /// empty buffers are skipped, and a look at the head moves nothing.
    @Test func chunksCutAcrossBuffersComeOutInOrder() {
        let file = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        var pieces = ReceivedPieces()
        var start = 0
        for size in [3, 0, 5_000, 1, 4_996] {
            pieces.append(ByteBuffer(bytes: file[start..<(start + size)]))
            start += size
        }
        #expect(pieces.count == 10_000)
        #expect(pieces.prefix(12) == Array(file[..<12]))
        #expect(pieces.count == 10_000)
        var chunks: [[UInt8]] = []
        while pieces.count > 0 {
            var chunk: [UInt8] = []
            pieces.move(min(4_096, pieces.count), to: &chunk)
            chunks.append(chunk)
        }
        #expect(chunks.map(\.count) == [4_096, 4_096, 1_808])
        #expect(Array(chunks.joined()) == file)
        #expect(pieces.prefix(12) == [])
    }
}
