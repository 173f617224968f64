import KafkaNIO
import NIOCore
import NIOEmbedded
import Testing

/// Framing on an embedded channel: no sockets.
@Suite struct FrameDecoderTests {
    func channel(max: Int = 64) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KafkaFrameDecoder(frameBytesMax: max)))
        return channel
    }

    func bytes(_ values: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: values) }

    @Test func framesSplitAcrossReadsAndPackedInOneReadAllArrive() throws {
        let channel = try channel()
        // One frame in three pieces, then two frames in one read.
        try channel.writeInbound(bytes([0, 0]))
        try channel.writeInbound(bytes([0, 3, 1]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        try channel.writeInbound(bytes([2, 3]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == bytes([1, 2, 3]))
        try channel.writeInbound(bytes([0, 0, 0, 1, 9, 0, 0, 0, 2, 7, 8]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == bytes([9]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == bytes([7, 8]))
        #expect(try channel.finish().isClean)
    }

    @Test func aFrameOverTheLimitIsAnErrorBeforeItsBytesArrive() throws {
        let channel = try channel(max: 64)
        #expect(throws: FrameError.self) { try channel.writeInbound(bytes([0, 0, 0, 65])) }
    }

    @Test func aSizeOfZeroOrLessIsAnError() throws {
        #expect(throws: FrameError.self) { try channel().writeInbound(bytes([0, 0, 0, 0])) }
        #expect(throws: FrameError.self) { try channel().writeInbound(bytes([0xff, 0xff, 0xff, 0xff])) }
    }

    @Test func aPartialFrameAtTheEndIsDropped() throws {
        let channel = try channel()
        try channel.writeInbound(bytes([0, 0, 0, 5, 1, 2]))
        _ = try channel.finish()
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
    }
}
