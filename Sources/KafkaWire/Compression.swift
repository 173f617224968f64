import CLZ4
import CSnappy
import CZlib
import CZstd
// The fuzz build compiles Core into the same module (Tests/Fuzz/run.sh).
#if canImport(Core)
import Core
#endif

/// The compression codecs of record batch attributes bits 0–2.
public enum CompressionCodec: Int16, Sendable, CaseIterable, CustomStringConvertible {
    case none = 0
    case gzip = 1
    case snappy = 2
    case lz4 = 3
    case zstd = 4

    public var description: String {
        switch self {
        case .none: "none"
        case .gzip: "gzip"
        case .snappy: "snappy"
        case .lz4: "lz4"
        case .zstd: "zstd"
        }
    }
}

/// A compressed payload that could not be inflated, or inflated too far.
public struct CompressionError: Error, Equatable, Sendable, CustomStringConvertible {
    public var codec: CompressionCodec
    public var message: String

    public init(codec: CompressionCodec, message: String) {
        self.codec = codec
        self.message = message
    }

    public var description: String { "\(codec) decompression failed: \(message)" }
}

/// Compression and decompression of record payloads with the system
/// libraries Kafka clients use: zlib, snappy, LZ4 frame and zstd.
public enum Compression {
    /// The magic that opens kafka-python's and the Java client's xerial snappy framing.
    static let xerialMagic: [UInt8] = [0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00]

    /// Inflates `input`, refusing output larger than `outputBytesMax`.
    public static func decompress(
        _ input: ArraySlice<UInt8>, codec: CompressionCodec, outputBytesMax: Int = Limits.decompressedBatchBytesMax
    ) throws(CompressionError) -> [UInt8] {
        switch codec {
        case .none: return Array(input)
        case .gzip: return try inflateGzip(input, outputBytesMax: outputBytesMax)
        case .snappy: return try decompressSnappy(input, outputBytesMax: outputBytesMax)
        case .lz4: return try decompressLZ4Frame(input, outputBytesMax: outputBytesMax)
        case .zstd: return try decompressZstd(input, outputBytesMax: outputBytesMax)
        }
    }

    /// Compresses `input` the way Kafka clients do: gzip (not bare zlib),
    /// raw snappy (or xerial framing when asked), LZ4 frame with independent
    /// 64 KiB blocks, and a zstd frame.
    public static func compress(_ input: [UInt8], codec: CompressionCodec, xerialSnappy: Bool = false) -> [UInt8] {
        switch codec {
        case .none: return input
        case .gzip: return deflateGzip(input)
        case .snappy: return xerialSnappy ? compressSnappyXerial(input) : compressSnappyRaw(ArraySlice(input))
        case .lz4: return compressLZ4Frame(input)
        case .zstd: return compressZstd(input)
        }
    }

    // MARK: gzip

    private static func inflateGzip(_ input: ArraySlice<UInt8>, outputBytesMax: Int) throws(CompressionError) -> [UInt8] {
        var stream = z_stream()
        // 15 + 32: accept gzip and zlib headers (automatic detection).
        guard inflateInit2_(&stream, 15 + 32, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw CompressionError(codec: .gzip, message: "inflateInit2 failed")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: min(max(input.count * 4, 4096), outputBytesMax + 1))
        var status: Int32 = Z_OK
        var failure: String?
        input.withUnsafeBufferPointer { source in
            stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
            stream.avail_in = UInt32(source.count)
            while status == Z_OK {
                let chunkCount = chunk.count
                let produced = chunk.withUnsafeMutableBufferPointer { destination -> Int in
                    stream.next_out = destination.baseAddress
                    stream.avail_out = UInt32(chunkCount)
                    status = inflate(&stream, Z_NO_FLUSH)
                    return chunkCount - Int(stream.avail_out)
                }
                output.append(contentsOf: chunk[0..<produced])
                if output.count > outputBytesMax {
                    failure = "output exceeds \(outputBytesMax) bytes"
                    return
                }
                if status == Z_BUF_ERROR && stream.avail_in == 0 {
                    failure = "input ends inside the stream"
                    return
                }
                if status == Z_BUF_ERROR { status = Z_OK }
            }
            if status != Z_STREAM_END {
                failure = stream.msg.map { String(cString: $0) } ?? "zlib status \(status)"
            }
        }
        if let failure { throw CompressionError(codec: .gzip, message: failure) }
        return output
    }

    private static func deflateGzip(_ input: [UInt8]) -> [UInt8] {
        var stream = z_stream()
        // 15 + 16: write a gzip header, as Kafka clients do.
        let initStatus = deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        precondition(initStatus == Z_OK, "deflateInit2 failed")
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, UInt(input.count))) + 32
        var output = [UInt8](repeating: 0, count: bound)
        let produced = input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { destination -> Int in
                stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
                stream.avail_in = UInt32(source.count)
                stream.next_out = destination.baseAddress
                stream.avail_out = UInt32(destination.count)
                let status = deflate(&stream, Z_FINISH)
                precondition(status == Z_STREAM_END, "deflate into a bound-sized buffer did not finish")
                return destination.count - Int(stream.avail_out)
            }
        }
        output.removeSubrange(produced...)
        return output
    }

    // MARK: snappy

    private static func decompressSnappy(_ input: ArraySlice<UInt8>, outputBytesMax: Int) throws(CompressionError) -> [UInt8] {
        if input.count >= 16 && input.prefix(8).elementsEqual(xerialMagic) {
            // Xerial framing: magic, version, compatible version, then blocks
            // of a big-endian int32 length and a raw snappy block.
            var output = [UInt8]()
            var position = input.startIndex + 16
            while position < input.endIndex {
                guard input.endIndex - position >= 4 else {
                    throw CompressionError(codec: .snappy, message: "xerial block length truncated")
                }
                let length = Int(UInt32(input[position]) << 24 | UInt32(input[position + 1]) << 16 | UInt32(input[position + 2]) << 8 | UInt32(input[position + 3]))
                position += 4
                guard length <= input.endIndex - position else {
                    throw CompressionError(codec: .snappy, message: "xerial block of \(length) bytes overruns the payload")
                }
                let block = try decompressSnappyRaw(input[position..<(position + length)], outputBytesMax: outputBytesMax - output.count)
                output.append(contentsOf: block)
                position += length
            }
            return output
        }
        return try decompressSnappyRaw(input, outputBytesMax: outputBytesMax)
    }

    private static func decompressSnappyRaw(_ input: ArraySlice<UInt8>, outputBytesMax: Int) throws(CompressionError) -> [UInt8] {
        try input.withUnsafeBufferPointer { source throws(CompressionError) -> [UInt8] in
            let pointer = UnsafeRawPointer(source.baseAddress)?.assumingMemoryBound(to: CChar.self)
            var length = 0
            guard snappy_uncompressed_length(pointer, source.count, &length) == SNAPPY_OK else {
                throw CompressionError(codec: .snappy, message: "not a snappy block")
            }
            guard length <= outputBytesMax else {
                throw CompressionError(codec: .snappy, message: "output of \(length) bytes exceeds \(outputBytesMax)")
            }
            var output = [UInt8](repeating: 0, count: length)
            var produced = length
            let status = output.withUnsafeMutableBufferPointer { destination in
                snappy_uncompress(pointer, source.count, UnsafeMutableRawPointer(destination.baseAddress)?.assumingMemoryBound(to: CChar.self), &produced)
            }
            guard status == SNAPPY_OK, produced == length else {
                throw CompressionError(codec: .snappy, message: "corrupt snappy block")
            }
            return output
        }
    }

    private static func compressSnappyRaw(_ input: ArraySlice<UInt8>) -> [UInt8] {
        var length = snappy_max_compressed_length(input.count)
        var output = [UInt8](repeating: 0, count: length)
        let status = input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { destination in
                snappy_compress(
                    UnsafeRawPointer(source.baseAddress)?.assumingMemoryBound(to: CChar.self), source.count,
                    UnsafeMutableRawPointer(destination.baseAddress)?.assumingMemoryBound(to: CChar.self), &length)
            }
        }
        precondition(status == SNAPPY_OK, "snappy_compress into a bound-sized buffer failed")
        output.removeSubrange(length...)
        return output
    }

    private static func compressSnappyXerial(_ input: [UInt8]) -> [UInt8] {
        var writer = ByteWriter(capacity: input.count + 64)
        writer.writeBytes(xerialMagic)
        writer.writeInt32(1)  // version
        writer.writeInt32(1)  // minimum compatible version
        let blockBytes = 32 << 10
        var start = 0
        while start < input.count {
            let end = min(start + blockBytes, input.count)
            let block = compressSnappyRaw(input[start..<end])
            writer.writeInt32(Int32(block.count))
            writer.writeBytes(block)
            start = end
        }
        return writer.bytes
    }

    // MARK: LZ4 frame

    private static func decompressLZ4Frame(_ input: ArraySlice<UInt8>, outputBytesMax: Int) throws(CompressionError) -> [UInt8] {
        var context: OpaquePointer?
        guard LZ4F_isError(LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))) == 0, let context else {
            throw CompressionError(codec: .lz4, message: "cannot create a decompression context")
        }
        defer { LZ4F_freeDecompressionContext(context) }
        var output = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var failure: String?
        input.withUnsafeBufferPointer { source in
            var consumed = 0
            while true {
                var sourceCount = source.count - consumed
                var destinationCount = chunk.count
                let hint = chunk.withUnsafeMutableBufferPointer { destination in
                    LZ4F_decompress(context, destination.baseAddress, &destinationCount, source.baseAddress.map { $0 + consumed }, &sourceCount, nil)
                }
                if LZ4F_isError(hint) != 0 {
                    failure = String(cString: LZ4F_getErrorName(hint))
                    return
                }
                consumed += sourceCount
                output.append(contentsOf: chunk[0..<destinationCount])
                if output.count > outputBytesMax {
                    failure = "output exceeds \(outputBytesMax) bytes"
                    return
                }
                if hint == 0 { return }  // the frame is complete
                if consumed >= source.count && destinationCount == 0 {
                    failure = "input ends inside the frame"
                    return
                }
            }
        }
        if let failure { throw CompressionError(codec: .lz4, message: failure) }
        return output
    }

    private static func compressLZ4Frame(_ input: [UInt8]) -> [UInt8] {
        var preferences = LZ4F_preferences_t()
        preferences.frameInfo.blockSizeID = LZ4F_max64KB
        preferences.frameInfo.blockMode = LZ4F_blockIndependent
        let bound = LZ4F_compressFrameBound(input.count, &preferences)
        var output = [UInt8](repeating: 0, count: bound)
        let produced = input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { destination in
                LZ4F_compressFrame(destination.baseAddress, bound, source.baseAddress, source.count, &preferences)
            }
        }
        precondition(LZ4F_isError(produced) == 0, "LZ4F_compressFrame into a bound-sized buffer failed")
        output.removeSubrange(produced...)
        return output
    }

    // MARK: zstd

    private static func decompressZstd(_ input: ArraySlice<UInt8>, outputBytesMax: Int) throws(CompressionError) -> [UInt8] {
        guard let stream = ZSTD_createDStream() else {
            throw CompressionError(codec: .zstd, message: "cannot create a decompression stream")
        }
        defer { ZSTD_freeDStream(stream) }
        ZSTD_initDStream(stream)
        var output = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: Int(ZSTD_DStreamOutSize()))
        var failure: String?
        input.withUnsafeBufferPointer { source in
            var inBuffer = ZSTD_inBuffer(src: source.baseAddress, size: source.count, pos: 0)
            while true {
                let chunkCount = chunk.count
                var produced = 0
                let result = chunk.withUnsafeMutableBufferPointer { destination -> Int in
                    var outBuffer = ZSTD_outBuffer(dst: destination.baseAddress, size: chunkCount, pos: 0)
                    let result = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
                    produced = outBuffer.pos
                    return result
                }
                if ZSTD_isError(result) != 0 {
                    failure = String(cString: ZSTD_getErrorName(result))
                    return
                }
                output.append(contentsOf: chunk[0..<produced])
                if output.count > outputBytesMax {
                    failure = "output exceeds \(outputBytesMax) bytes"
                    return
                }
                if result == 0 && inBuffer.pos == inBuffer.size { return }  // frame done, input used up
                if inBuffer.pos == inBuffer.size && produced == 0 {
                    failure = result == 0 ? "no frame" : "input ends inside the frame"
                    return
                }
            }
        }
        if let failure { throw CompressionError(codec: .zstd, message: failure) }
        return output
    }

    private static func compressZstd(_ input: [UInt8]) -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        var output = [UInt8](repeating: 0, count: bound)
        let produced = input.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { destination in
                ZSTD_compress(destination.baseAddress, bound, source.baseAddress, source.count, 3)
            }
        }
        precondition(ZSTD_isError(produced) == 0, "ZSTD_compress into a bound-sized buffer failed")
        output.removeSubrange(produced...)
        return output
    }
}
