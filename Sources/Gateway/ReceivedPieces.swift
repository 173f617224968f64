import NIOCore

/// An upload's bytes received and not yet written, kept in the buffers they
/// arrived in: a chunk is copied once, from them into its record batch
/// (`DirectAppendPort`'s in-place append), rather than first gathered into
/// an array of its own.
struct ReceivedPieces {
    private var pieces = CircularBuffer<ByteBuffer>()
    /// Bytes held.
    private(set) var count = 0

    mutating func append(_ piece: ByteBuffer) {
        guard piece.readableBytes > 0 else { return }
        pieces.append(piece)
        count += piece.readableBytes
    }

    /// The first `length` bytes, or all when fewer are held, left in place.
    func prefix(_ length: Int) -> [UInt8] {
        var head: [UInt8] = []
        for piece in pieces where head.count < length {
            head += piece.getBytes(at: piece.readerIndex, length: min(length - head.count, piece.readableBytes)) ?? []
        }
        return head
    }

    /// Moves the first `length` bytes to the end of `bytes`.
    mutating func move(_ length: Int, to bytes: inout [UInt8]) {
        precondition(length <= count, "moving \(length) bytes of \(count)")
        var left = length
        while left > 0 {
            let first = pieces.startIndex
            let taken = min(left, pieces[first].readableBytes)
            pieces[first].withUnsafeReadableBytes { bytes.append(contentsOf: $0.prefix(taken).bindMemory(to: UInt8.self)) }
            pieces[first].moveReaderIndex(forwardBy: taken)
            if pieces[first].readableBytes == 0 { pieces.removeFirst() }
            left -= taken
        }
        count -= length
    }
}
