import ChatWire
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import KafkaNIO
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
        let session = try authenticate(request)
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: configuration.mediaBytesMax)
        } catch {
            throw MatrixError(.contentTooLarge, "M_TOO_LARGE", "a file is at most \(configuration.mediaBytesMax) bytes")
        }
        let declared = (request.headers[.contentType] ?? "application/octet-stream").split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        // An image must be the image it says it is: clients show images
        // inline, and a file that lies about its type is how one gets a
        // browser to run what it should only display.
        let sniffed = Self.sniffedImageType(body)
        if declared.hasPrefix("image/") || sniffed != nil {
            guard sniffed == declared || (declared == "image/jpg" && sniffed == "image/jpeg") else {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "the content is \(sniffed ?? "not an image"), not \(declared)")
            }
        }
        let mediaID = Secrets.opaque(24)
        let bytes = Array(buffer: body)
        // All chunks at once: the broker link puts them into as few Produce
        // requests as its limits allow, so the file costs a few log writes,
        // not one per chunk. The index records where each one landed.
        let starts = Array(stride(from: 0, to: max(bytes.count, 1), by: Self.mediaChunkBytes))
        let placed = try await withThrowingTaskGroup(of: (Int, Int32, Int64).self) { group in
            for (index, start) in starts.enumerated() {
                let chunk = Array(bytes[start..<min(start + Self.mediaChunkBytes, bytes.count)])
                group.addTask {
                    let (partition, offset) = try await link.produce(topic: ChatTopics.media, key: Array(mediaID.utf8), value: chunk, timestamp: Self.now)
                    return (index, partition, offset)
                }
            }
            return try await group.reduce(into: [(Int, Int32, Int64)]()) { $0.append($1) }
        }
        let chunks = placed.sorted { $0.0 < $1.0 }.map { [Int64($0.1), $0.2] }
        let fileName = request.uri.queryParameters.get("filename").map { Self.pathParameter(String($0)) }
        let media = MediaTable.Media(uploader: session.userID, contentType: declared.isEmpty ? "application/octet-stream" : declared, fileName: fileName,
                                     size: bytes.count, sha256: Secrets.sha256Hex(bytes), chunks: chunks, createdMs: Self.now)
        let (partition, offset) = try await link.produce(topic: ChatTopics.mediaIndex, key: Array(mediaID.utf8), value: MatrixJSON.encodeBytes(media), timestamp: Self.now)
        await state.waitApplied(topic: ChatTopics.mediaIndex, partition: partition, offset: offset)
        return Self.ok(["content_uri": .string("mxc://\(server)/\(mediaID)")] as JSONValue)
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
        return fileResponse(try await verifiedBytes(media, mediaID), contentType: media.contentType, media: media, context)
    }

    /// A file's bytes, checked against the length and SHA-256 its record keeps.
    func verifiedBytes(_ media: MediaTable.Media, _ mediaID: String) async throws -> [UInt8] {
        let bytes = try await readChunks(media)
        guard bytes.count == media.size, Secrets.sha256Hex(bytes) == media.sha256 else {
            logger.error("a stored file does not match its record", metadata: ["media": "\(mediaID)"])
            throw MatrixError(.internalServerError, "M_UNKNOWN", "the file could not be read whole")
        }
        return bytes
    }

    /// A file's answer: its type, kept from being sniffed or run as a page,
    /// shown inline only if it is an image, audio or video.
    func fileResponse(_ bytes: [UInt8], contentType: String, media: MediaTable.Media, _ context: GatewayRequestContext) -> Response {
        var headers: HTTPFields = [.contentType: contentType, .contentLength: String(bytes.count)]
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[.contentSecurityPolicy] = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"
        let inline = media.contentType.hasPrefix("image/") || media.contentType.hasPrefix("video/") || media.contentType.hasPrefix("audio/")
        let name = context.parameters.get("fileName").map(Self.pathParameter) ?? media.fileName
        let quoted = name.map { "; filename*=utf-8''" + ($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "file") } ?? ""
        headers[.contentDisposition] = (inline ? "inline" : "attachment") + quoted
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// A file's chunks, read from the leaders of their partitions.
    func readChunks(_ media: MediaTable.Media) async throws -> [UInt8] {
        guard media.chunks.allSatisfy({ $0.count == 2 }) else { throw MatrixError(.internalServerError, "M_UNKNOWN", "a file's record is damaged") }
        let values = try await link.values(topic: ChatTopics.media, at: media.chunks.map { (Int32($0[0]), $0[1]) })
        var bytes: [UInt8] = []
        bytes.reserveCapacity(media.size)
        for value in values {
            guard let value else { throw MatrixError(.notFound, "M_NOT_FOUND", "the file is no longer stored") }
            bytes.append(contentsOf: value)
        }
        return bytes
    }
}
