import NIOCore

/// Splits the byte stream into Kafka frames (an int32 size, then that many
/// bytes). A size of zero or less, or above the limit, is a protocol error:
/// the connection is closed, because nothing after it can be trusted.
public struct KafkaFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer

    public let frameBytesMax: Int

    public init(frameBytesMax: Int) {
        self.frameBytesMax = frameBytesMax
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let size = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else { return .needMoreData }
        guard size > 0 else { throw FrameError.invalidSize(Int(size)) }
        guard Int(size) <= frameBytesMax else { throw FrameError.tooLarge(Int(size), max: frameBytesMax) }
        guard buffer.readableBytes >= 4 + Int(size) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        let frame = buffer.readSlice(length: Int(size))!
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A client that disconnects mid-frame leaves a partial frame: dropped.
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

public enum FrameError: Error, CustomStringConvertible {
    case invalidSize(Int)
    case tooLarge(Int, max: Int)

    public var description: String {
        switch self {
        case .invalidSize(let size): "frame size \(size) is not positive"
        case .tooLarge(let size, let max): "frame of \(size) bytes exceeds the limit of \(max)"
        }
    }
}
