import ChatWire
import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import KafkaNIO
import KafkaWire
import NIOCore
import Synchronization
import Thumbnails

/// Uploaded files as chat-media-index describes them: where each chunk of
/// a file lies in chat-media, and who uploaded it. Written by that topic's
/// tail; the chunks are read from the broker when a file is asked for, so
/// every gateway serves every file and none keeps one on its own disk.
final class MediaTable: Sendable {
    struct Media: Codable, Sendable, Equatable {
        var uploader: String
        var contentType: String
        var fileName: String?
        var size: Int
        var sha256: String
        /// Partition and offset of each chunk in chat-media, in order.
        var chunks: [[Int64]]
        var createdMs: Int64

        enum CodingKeys: String, CodingKey {
            case uploader
            case contentType = "content_type"
            case fileName = "file_name"
            case size
            case sha256
            case chunks
            case createdMs = "created_ts"
        }
    }

    private let media = Mutex<[String: Media]>([:])

    func apply(_ record: StoredRecord) {
        guard let id = String(validating: record.key, as: UTF8.self) else { return }
        let value = record.value.flatMap { MatrixJSON.decodeRecord(Media.self, from: $0) }
        media.withLock { $0[id] = value }
    }

    func get(_ id: String) -> Media? { media.withLock { $0[id] } }

    /// Thumbnails made, by file and box, the least recently used dropped
    /// past `thumbnailBytesMax`: a client asks for the same few sizes of
    /// each image every time a room is shown, and each is made in a child
    /// process from the whole file.
    private let thumbnails = Mutex(ThumbnailCache())
    static let thumbnailBytesMax = 64 << 20

    struct ThumbnailCache {
        var entries: [String: (bytes: [UInt8], contentType: String, used: UInt64)] = [:]
        var bytes = 0
        var clock: UInt64 = 0
    }

    func thumbnail(_ key: String) -> (bytes: [UInt8], contentType: String)? {
        thumbnails.withLock { cache in
            guard var entry = cache.entries[key] else { return nil }
            cache.clock += 1
            entry.used = cache.clock
            cache.entries[key] = entry
            return (entry.bytes, entry.contentType)
        }
    }

    func keepThumbnail(_ key: String, bytes: [UInt8], contentType: String) {
        thumbnails.withLock { cache in
            cache.clock += 1
            if let old = cache.entries.updateValue((bytes, contentType, cache.clock), forKey: key) { cache.bytes -= old.bytes.count }
            cache.bytes += bytes.count
            while cache.bytes > Self.thumbnailBytesMax, let oldest = cache.entries.min(by: { $0.value.used < $1.value.used }) {
                cache.bytes -= oldest.value.bytes.count
                cache.entries.removeValue(forKey: oldest.key)
            }
        }
    }
}

/// Makes thumbnails of uploaded images; `postduif` runs each in a child
/// process (`postduif thumbnail`). Without one, an image is its own thumbnail.
public protocol ThumbnailMaker: Sendable {
    /// A thumbnail of `image` (JPEG, PNG or GIF) for a box of `width` ×
    /// `height` by `method`, or nil where the image is no larger.
    func thumbnail(of image: [UInt8], width: Int, height: Int, method: Thumbnail.Method) async throws -> (bytes: [UInt8], contentType: String)?
}

// Media: upload, download and thumbnails (authenticated media, v1.11, and
// the older /_matrix/media paths, which here ask for a token too).
extension MatrixAPI {
    /// Bytes per chunk record in chat-media: well inside a batch's 1 MiB.
    static let mediaChunkBytes = 256 << 10

    func addMediaRoutes(_ router: Router<GatewayRequestContext>) {
        for prefix in ["/_matrix/media/v3", "/_matrix/media/r0", "/_matrix/client/v1/media"] {
            let routes = router.group(RouterPath(prefix))
            routes.get("config") { request, _ in
                _ = try authenticate(request)
                return Self.ok(["m.upload.size": .int(Int64(configuration.mediaBytesMax))] as JSONValue)
            }
            routes.get("download/:serverName/:mediaId") { request, context in try await download(request, context, thumbnail: false) }
            routes.get("download/:serverName/:mediaId/:fileName") { request, context in try await download(request, context, thumbnail: false) }
            routes.get("thumbnail/:serverName/:mediaId") { request, context in try await download(request, context, thumbnail: true) }
            if prefix != "/_matrix/client/v1/media" {
                routes.post("upload") { request, _ in try await upload(request) }
            }
        }
    }

    /// What the first bytes of an image say it is; nil for anything else.
    static func sniffedImageType(_ bytes: ByteBuffer) -> String? {
        let head = bytes.getBytes(at: bytes.readerIndex, length: min(12, bytes.readableBytes)) ?? []
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return "image/png" }
        if head.starts(with: [0xFF, 0xD8, 0xFF]) { return "image/jpeg" }
        if head.starts(with: Array("GIF8".utf8)) { return "image/gif" }
        if head.count >= 12, head.starts(with: Array("RIFF".utf8)), Array(head[8..<12]) == Array("WEBP".utf8) { return "image/webp" }
        return nil
    }

    func upload(_ request: Request) async throws -> Response {
        // A request's body can be iterated once: this iterator reads it all.
        var body = request.body.makeAsyncIterator()
        do {
            return try await receiveUpload(request, body: &body)
        } catch {
            // Read to its end (up to the declared length and the limit
            // again) before the error is answered: a client that sends its
            // whole body before it reads, on a connection it asked to close
            // (Python's urllib), would otherwise wait on a full socket for
            // an answer that comes after it; Hummingbird does not read the
            // rest of such a request.
            var left = (request.headers[.contentLength].flatMap { Int($0) } ?? 0) + configuration.mediaBytesMax
            do {
                while left > 0, let piece = try await body.next() { left -= piece.readableBytes }
            } catch {}
            throw error
        }
    }

    func receiveUpload(_ request: Request, body: inout RequestBody.AsyncIterator) async throws -> Response {
        let session = try authenticate(request)
        let limit = configuration.mediaBytesMax
        let tooLarge = MatrixError(.contentTooLarge, "M_TOO_LARGE", "a file is at most \(limit) bytes")
        let length = request.headers[.contentLength].flatMap { Int($0) }
        if let length, length > limit { throw tooLarge }
        let declared = (request.headers[.contentType] ?? "application/octet-stream").split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        let mediaID = Secrets.opaque(24)
        let key = Array(mediaID.utf8)
        let partition = KafkaPartitioner.partition(forKey: key, partitionCount: try await link.partitionCount(ChatTopics.media))
        // The file's SHA-256 on a task of its own, over the received pieces
        // in order, beside the receiving and appending.
        let (toHash, hashFeed) = AsyncStream.makeStream(of: ByteBuffer.self)
        async let digest = Self.sha256(of: toHash)
        defer { hashFeed.finish() }
        // A body of a declared length is written to chat-media as it
        // arrives (ADR 0035): each chunk is appended while the next is
        // received, so the disk writes the file while the client sends it,
        // and no copy of the whole file is made. A body without a length
        // (chunked) is taken whole first, so one over the limit leaves
        // nothing behind.
        var whole: ByteBuffer? = nil
        if length == nil {
            var collected = ByteBuffer()
            while var piece = try await body.next() {
                guard collected.readableBytes + piece.readableBytes <= limit else { throw tooLarge }
                collected.writeBuffer(&piece)
            }
            whole = collected
        }
        // Where this process's broker takes appends directly, a chunk goes
        // from the received buffers into its record batch, copied once.
        let local = configuration.directAppends.flatMap { $0.appendsDirectly ? $0 : nil }
        let placed = try await withThrowingTaskGroup(of: (Int, Int32, Int64).self) { group in
            var pending = ReceivedPieces()
            var count = 0
            var size = 0
            // Sends the next `length` bytes as one chunk; the first is
            // checked against the declared type before anything is written.
            func send(_ length: Int) throws {
                if count == 0 { try Self.checkMediaType(declared: declared, head: pending.prefix(12)[...]) }
                let index = count
                count += 1
                // Written here, in the receiving loop, where the broker of
                // this process takes it: a task per chunk waited for one of
                // the two pool threads, busy receiving and hashing, and the
                // disk's syncs fell behind the file. The task only waits.
                if let local, case let outcome = AppendOutcome(),
                   local.appendDirect(topic: ChatTopics.media, partition: partition, key: key, valueCount: length, timestamp: Self.now,
                                      appendValue: { pending.move(length, to: &$0) }, done: outcome.complete) {
                    group.addTask { (index, partition, try await outcome.offset()) }
                } else {
                    // Elsewhere a Produce: the link's producer puts chunks
                    // sent together into as few requests as its limits allow.
                    var value: [UInt8] = []
                    value.reserveCapacity(length)
                    pending.move(length, to: &value)
                    group.addTask { [value] in (index, partition, try await link.produce(topic: ChatTopics.media, key: key, value: value, timestamp: Self.now).offset) }
                }
            }
            while true {
                let next = length == nil ? whole.take() : try await body.next()
                guard let piece = next else { break }
                size += piece.readableBytes
                guard size <= limit else { throw tooLarge }
                hashFeed.yield(piece)
                pending.append(piece)
                while pending.count >= Self.mediaChunkBytes { try send(Self.mediaChunkBytes) }
            }
            // The last part, or the one empty chunk of an empty file.
            if pending.count > 0 || count == 0 { try send(pending.count) }
            var placed = try await group.reduce(into: [(Int, Int32, Int64)]()) { $0.append($1) }
            placed.sort { $0.0 < $1.0 }
            return (size: size, chunks: placed.map { [Int64($0.1), $0.2] })
        }
        hashFeed.finish()
        let fileName = request.uri.queryParameters.get("filename").map { Self.pathParameter(String($0)) }
        let media = MediaTable.Media(uploader: session.userID, contentType: declared.isEmpty ? "application/octet-stream" : declared, fileName: fileName,
                                     size: placed.size, sha256: await digest, chunks: placed.chunks, createdMs: Self.now)
        let record = MatrixJSON.encodeBytes(media)
        let indexPartition = KafkaPartitioner.partition(forKey: key, partitionCount: try await link.partitionCount(ChatTopics.mediaIndex))
        let offset: Int64
        // The index record as the chunks went: straight to this process's
        // broker where it takes appends (no Produce frame to encode, send
        // and decode, 0.4-0.8 ms of an upload's tail), else a Produce.
        if let local, case let outcome = AppendOutcome(),
           local.appendDirect(topic: ChatTopics.mediaIndex, partition: indexPartition, key: key, value: record, headers: [], timestamp: Self.now, done: outcome.complete) {
            offset = try await outcome.offset()
        } else {
            offset = try await link.produce(topic: ChatTopics.mediaIndex, key: key, value: record, timestamp: Self.now).offset
        }
        await state.waitApplied(topic: ChatTopics.mediaIndex, partition: indexPartition, offset: offset)
        return Self.ok(["content_uri": .string("mxc://\(server)/\(mediaID)")] as JSONValue)
    }

    /// The SHA-256 of bytes in the order they come.
    static func sha256(of pieces: AsyncStream<ByteBuffer>) async -> String {
        let hash = Secrets.SHA256Stream()
        for await piece in pieces { piece.withUnsafeReadableBytes { hash.update($0) } }
        return hash.finish()
    }

    /// An image must be the image it says it is: clients show images
    /// inline, and a file that lies about its type is how one gets a
    /// browser to run what it should only display.
    static func checkMediaType(declared: String, head: ArraySlice<UInt8>) throws {
        let sniffed = sniffedImageType(ByteBuffer(bytes: head))
        if declared.hasPrefix("image/") || sniffed != nil {
            guard sniffed == declared || (declared == "image/jpg" && sniffed == "image/jpeg") else {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "the content is \(sniffed ?? "not an image"), not \(declared)")
            }
        }
    }

    /// Whether `user` may read what `uploader` uploaded: themselves, or
    /// someone joined to a room the uploader is joined to.
    func mayRead(_ user: String, uploadedBy uploader: String) -> Bool {
        guard user != uploader else { return true }
        let theirs = Set(state.directory.rooms(of: uploader).filter { $0.member.membership == "join" }.map(\.roomID))
        return state.directory.rooms(of: user).contains { $0.member.membership == "join" && theirs.contains($0.roomID) }
    }

    /// A file, or its thumbnail: a JPEG, PNG or GIF scaled or cropped to
    /// the nearest of Synapse's sizes at least as large as asked (made once,
    /// then kept), other images are their own thumbnail (the specification
    /// lets a thumbnail be larger than asked for; clients scale it), and
    /// anything else has none.
    func download(_ request: Request, _ context: GatewayRequestContext, thumbnail: Bool) async throws -> Response {
        let session = try authenticate(request)
        let notFound = MatrixError(.notFound, "M_NOT_FOUND", "no such file")
        guard parameter(context, "serverName") == server, let media = state.media.get(parameter(context, "mediaId")) else { throw notFound }
        // Someone who may not read it learns nothing, not even that it exists.
        guard mayRead(session.userID, uploadedBy: media.uploader) else { throw notFound }
        if thumbnail && !media.contentType.hasPrefix("image/") {
            throw MatrixError(.badRequest, "M_UNKNOWN", "only images have thumbnails")
        }
        let mediaID = parameter(context, "mediaId")
        if thumbnail, let maker = configuration.thumbnails, ["image/jpeg", "image/png", "image/gif"].contains(media.contentType) {
            let query = request.uri.queryParameters
            guard let width = query.get("width").flatMap({ Int($0) }), let height = query.get("height").flatMap({ Int($0) }), width > 0, height > 0 else {
                throw MatrixError(.badRequest, "M_MISSING_PARAM", "a thumbnail needs a positive width and height")
            }
            let method = Thumbnail.Method(rawValue: query.get("method").map { String($0) } ?? "scale") ?? .scale
            let chosen = Thumbnail.box(width: width, height: height, method: method)
            let key = "\(mediaID)/\(chosen.width)x\(chosen.height)/\(method)"
            if let made = state.media.thumbnail(key) { return fileResponse(made.bytes, contentType: made.contentType, media: media, context) }
            let bytes = try await verifiedBytes(media, mediaID)
            do {
                if let made = try await maker.thumbnail(of: bytes, width: chosen.width, height: chosen.height, method: method) {
                    state.media.keepThumbnail(key, bytes: made.bytes, contentType: made.contentType)
                    return fileResponse(made.bytes, contentType: made.contentType, media: media, context)
                }
                // No larger than the box: the image is its own thumbnail.
                state.media.keepThumbnail(key, bytes: bytes, contentType: media.contentType)
            } catch {
                logger.warning("no thumbnail made; the image itself is served", metadata: ["media": "\(mediaID)", "error": "\(error)"])
            }
            return fileResponse(bytes, contentType: media.contentType, media: media, context)
        }
        return try await streamedFile(media, mediaID, context)
    }

    /// A file streamed from its chunks (ADR 0035): each chunk goes to the
    /// socket as it is read, its batch's CRC-32C and key checked first, so
    /// no copy of the whole file is made and the first bytes leave before
    /// the last are read. The first chunk is read before the answer starts:
    /// a file no longer stored is a 404, not a 200 cut short. A chunk that
    /// fails later ends the connection before the declared length, which
    /// every client takes as a failed download.
    func streamedFile(_ media: MediaTable.Media, _ mediaID: String, _ context: GatewayRequestContext) async throws -> Response {
        let positions = try Self.chunkPositions(media)
        var reader = MediaChunkReader(link: link, direct: configuration.directReads, mediaID: mediaID)
        let first: ByteBuffer
        do {
            first = try await reader.value(at: positions[0])
        } catch {
            await reader.close()
            throw damageLogged(error, mediaID)
        }
        let logger = logger
        let body = ResponseBody(contentLength: media.size) { [reader] writer in
            var reader = reader
            do {
                var sent = first.readableBytes
                try await writer.write(first)
                for position in positions.dropFirst() {
                    let value = try await reader.value(at: position)
                    sent += value.readableBytes
                    guard sent <= media.size else { throw MediaChunkReader.damaged }
                    try await writer.write(value)
                }
                guard sent == media.size else { throw MediaChunkReader.damaged }
                await reader.close()
            } catch {
                await reader.close()
                logger.error("a file's download ended early", metadata: ["media": "\(mediaID)", "error": "\(error)"])
                throw error
            }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: fileHeaders(size: media.size, contentType: media.contentType, media: media, context), body: body)
    }

    /// A damaged chunk logged, and answered as a file that cannot be read
    /// whole; any other error as it is.
    func damageLogged(_ error: any Error, _ mediaID: String) -> any Error {
        guard let damage = error as? MediaChunkReader.Damage else { return error }
        logger.error("a stored file is damaged", metadata: ["media": "\(mediaID)", "error": "\(damage)"])
        return MediaChunkReader.damaged
    }

    /// Where a file's chunks lie: partition and offset each, in order.
    static func chunkPositions(_ media: MediaTable.Media) throws -> [(partition: Int32, offset: Int64)] {
        guard !media.chunks.isEmpty, media.chunks.allSatisfy({ $0.count == 2 }) else {
            throw MatrixError(.internalServerError, "M_UNKNOWN", "a file's record is damaged")
        }
        return media.chunks.map { (Int32($0[0]), $0[1]) }
    }

    /// A file's bytes, checked against the length and SHA-256 its record
    /// keeps: a thumbnail is made from the whole file.
    func verifiedBytes(_ media: MediaTable.Media, _ mediaID: String) async throws -> [UInt8] {
        var reader = MediaChunkReader(link: link, direct: configuration.directReads, mediaID: mediaID)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(media.size)
        do {
            for position in try Self.chunkPositions(media) { bytes.append(contentsOf: try await reader.value(at: position).readableBytesView) }
        } catch {
            await reader.close()
            throw damageLogged(error, mediaID)
        }
        await reader.close()
        guard bytes.count == media.size, Secrets.sha256Hex(bytes) == media.sha256 else {
            logger.error("a stored file does not match its record", metadata: ["media": "\(mediaID)"])
            throw MediaChunkReader.damaged
        }
        return bytes
    }

    /// A file's headers: its type, kept from being sniffed or run as a page,
    /// shown inline only if it is an image, audio or video.
    func fileHeaders(size: Int, contentType: String, media: MediaTable.Media, _ context: GatewayRequestContext) -> HTTPFields {
        var headers: HTTPFields = [.contentType: contentType, .contentLength: String(size)]
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[.contentSecurityPolicy] = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"
        let inline = media.contentType.hasPrefix("image/") || media.contentType.hasPrefix("video/") || media.contentType.hasPrefix("audio/")
        let name = context.parameters.get("fileName").map(Self.pathParameter) ?? media.fileName
        let quoted = name.map { "; filename*=utf-8''" + ($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "file") } ?? ""
        headers[.contentDisposition] = (inline ? "inline" : "attachment") + quoted
        return headers
    }

    /// A thumbnail's or a whole file's answer from bytes in hand.
    func fileResponse(_ bytes: [UInt8], contentType: String, media: MediaTable.Media, _ context: GatewayRequestContext) -> Response {
        Response(status: .ok, headers: fileHeaders(size: bytes.count, contentType: contentType, media: media, context), body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

/// The outcome of one direct append, awaited by a task other than the
/// one that made it (the append's callback comes from the thread that made
/// it durable).
final class AppendOutcome: Sendable {
    private let state = Mutex<(result: Result<Int64, DirectAppendRefusal>?, waiter: CheckedContinuation<Int64, any Error>?)>((nil, nil))

    @Sendable func complete(_ result: Result<Int64, DirectAppendRefusal>) {
        let waiter = state.withLock { state in
            defer { state.waiter = nil }
            if state.waiter == nil { state.result = result }
            return state.waiter
        }
        waiter?.resume(with: Self.answer(result))
    }

    func offset() async throws -> Int64 {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state in
                if state.result == nil { state.waiter = continuation }
                return state.result
            }
            if let ready { continuation.resume(with: Self.answer(ready)) }
        }
    }

    private static func answer(_ result: Result<Int64, DirectAppendRefusal>) -> Result<Int64, any Error> {
        result.mapError { BrokerRefusal(description: $0.description) }
    }
}

/// Reads one file's chunks from chat-media, in the order asked: from the
/// broker of this process where it leads the partition (no Fetch frame),
/// otherwise from the partition's leader on a connection of the reader's
/// own. A read asks for a few chunks' bytes, so the next chunks usually
/// come with it. Every batch's CRC-32C is checked and every chunk must
/// carry the file's id as its key: the bytes go out as they are read, with
/// no whole-file check after them.
struct MediaChunkReader: Sendable {
    static let damaged = MatrixError(.internalServerError, "M_UNKNOWN", "the file could not be read whole")
    static let gone = MatrixError(.notFound, "M_NOT_FOUND", "the file is no longer stored")
    /// Bytes of batches one Fetch asks for: four chunks, a round trip
    /// for several. A read in this process takes one batch at a time: a
    /// run of batches read together is copied apart again.
    static let fetchBytes = 4 * MatrixAPI.mediaChunkBytes

    let link: BrokerLink
    let direct: (any DirectReadPort)?
    let key: [UInt8]
    private var connections: [Int32: KafkaClientConnection] = [:]
    /// Records the last read of each partition brought, not yet asked for.
    private var held: [Int32: [Int64: HeldChunk]] = [:]

    /// A chunk's record as read: its key, and its value, left where it lies
    /// in the batch read in this process (copied once, into the buffer for
    /// the socket, when asked for) or copied out of a Fetch's answer.
    struct HeldChunk: Sendable {
        var key: [UInt8]
        var bytes: [UInt8]
        var value: Range<Int>?
    }

    init(link: BrokerLink, direct: (any DirectReadPort)?, mediaID: String) {
        self.link = link
        self.direct = direct
        key = Array(mediaID.utf8)
    }

    /// What a chunk that cannot be served is: a batch failing its checks,
    /// or a record of another file where the index puts this one's.
    struct Damage: Error, CustomStringConvertible {
        var description: String
    }

    mutating func value(at position: (partition: Int32, offset: Int64)) async throws -> ByteBuffer {
        if held[position.partition]?[position.offset] == nil {
            do {
                held[position.partition] = try await read(position.partition, from: position.offset)
            } catch let error as RecordBatchError {
                throw Damage(description: "chunk at \(ChatTopics.media)/\(position.partition)@\(position.offset): \(error)")
            }
        }
        guard let record = held[position.partition]?.removeValue(forKey: position.offset), let value = record.value else { throw Self.gone }
        guard record.key == key else { throw Damage(description: "the record at \(ChatTopics.media)/\(position.partition)@\(position.offset) is another file's") }
        return ByteBuffer(bytes: record.bytes[value])
    }

    private mutating func read(_ partition: Int32, from offset: Int64) async throws -> [Int64: HeldChunk] {
        var records: [StoredRecord] = []
        if let direct {
            let stored: [[UInt8]]?
            do {
                stored = try direct.readCommitted(topic: ChatTopics.media, partition: partition, from: offset, bytesMax: 1)
            } catch .offsetOutOfRange {
                throw Self.gone
            } catch {
                throw BrokerRefusal(description: "reading \(ChatTopics.media)/\(partition): \(error)")
            }
            if let stored {
                var chunks: [Int64: HeldChunk] = [:]
                for bytes in stored {
                    let batch = try RecordBatch(validating: bytes, bytesMax: Limits.batchBytesConfigurableMax)
                    guard let ranges = try batch.valueRanges() else {
                        // Compressed (not as the gateway writes chunks): copied out.
                        _ = try StoredRecord.append(of: [batch], from: offset, to: &records)
                        continue
                    }
                    for (delta, key, value) in ranges where batch.baseOffset + Int64(delta) >= offset {
                        chunks[batch.baseOffset + Int64(delta)] = HeldChunk(key: key ?? [], bytes: batch.bytes, value: value)
                    }
                }
                return chunks.merging(Self.byOffset(records)) { _, copied in copied }
            }
        }
        if connections[partition] == nil {
            connections[partition] = try await link.open(try await link.leader(topic: ChatTopics.media, partition: partition, refresh: false))
        }
        let tail = PartitionTail(topic: ChatTopics.media, partition: partition, connection: connections[partition]!)
        records = try await tail.fetch(from: offset, maxWaitMilliseconds: 0, bytesMax: Int32(Self.fetchBytes), checksums: true).records
        return Self.byOffset(records)
    }

    private static func byOffset(_ records: [StoredRecord]) -> [Int64: HeldChunk] {
        Dictionary(records.map { ($0.offset, HeldChunk(key: $0.key, bytes: $0.value ?? [], value: $0.value.map { 0..<$0.count })) }, uniquingKeysWith: { _, last in last })
    }

    func close() async {
        for connection in connections.values { await connection.close() }
    }
}
