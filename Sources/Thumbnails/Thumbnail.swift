import CGD

/// Thumbnails of uploaded images, through libgd (Debian's libgd-dev):
/// JPEG, PNG and GIF (its first frame) in; JPEG for a JPEG, PNG for the
/// others (keeping transparency) out.
///
/// An image's size is read from its header before anything is decoded,
/// and one of more than `pixelsMax` pixels is refused: a small file can
/// claim a picture of gigabytes. The gateway runs this in a child process
/// (`postduif thumbnail`), so a decoder fault costs a thumbnail, not the
/// process that serves chat.
public enum Thumbnail {
    /// Scale: fit inside the box, keeping the aspect ratio. Crop: fill the
    /// box exactly, cutting what sticks out evenly on both sides.
    public enum Method: String, Sendable {
        case scale
        case crop
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case notAnImage
        case tooManyPixels(width: Int, height: Int)
        case undecodable
        case unencodable

        public var description: String {
            switch self {
            case .notAnImage: "not a JPEG, PNG or GIF"
            case .tooManyPixels(let width, let height): "\(width)×\(height) is more pixels than a thumbnail is made of"
            case .undecodable: "the image does not decode"
            case .unencodable: "the thumbnail does not encode"
            }
        }
    }

    /// Synapse's default limit: 32 megapixels, a 6,000 × 5,000 photograph with room to spare.
    public static let pixelsMax = 32_000_000

    /// The sizes made, as Synapse's defaults: a request gets the smallest
    /// of its method at least as large as it asked, or the largest.
    public static let sizes: [(width: Int, height: Int, method: Method)] = [
        (32, 32, .crop), (96, 96, .crop), (320, 240, .scale), (640, 480, .scale), (800, 600, .scale),
    ]

    /// The box a request for `width` × `height` by `method` is served from.
    public static func box(width: Int, height: Int, method: Method) -> (width: Int, height: Int) {
        let ofMethod = sizes.filter { $0.method == method }
        let chosen = ofMethod.first { $0.width >= width && $0.height >= height } ?? ofMethod.last!
        return (chosen.width, chosen.height)
    }

    /// The image's kind and size from its header; nil if it is none of the three.
    public static func header(_ image: [UInt8]) -> (type: String, width: Int, height: Int)? {
        func big16(_ at: Int) -> Int { Int(image[at]) << 8 | Int(image[at + 1]) }
        func big32(_ at: Int) -> Int { big16(at) << 16 | big16(at + 2) }
        if image.count >= 24, image.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            return ("image/png", big32(16), big32(20))
        }
        if image.count >= 10, image.starts(with: Array("GIF8".utf8)) {
            return ("image/gif", Int(image[6]) | Int(image[7]) << 8, Int(image[8]) | Int(image[9]) << 8)
        }
        guard image.count >= 4, image.starts(with: [0xFF, 0xD8]) else { return nil }
        // JPEG: walk the segments to the frame header (SOF0-SOF15 but for
        // DHT, JPG and DAC), which holds height then width.
        var at = 2
        while at + 9 < image.count {
            guard image[at] == 0xFF else { return nil }
            let marker = image[at + 1]
            if marker == 0xFF {
                at += 1
                continue
            }
            if (0xC0...0xCF).contains(marker) && ![0xC4, 0xC8, 0xCC].contains(marker) {
                return ("image/jpeg", big16(at + 7), big16(at + 5))
            }
            if marker == 0xD9 || marker == 0xDA { return nil }
            at += 2 + big16(at + 2)
        }
        return nil
    }

    /// A thumbnail of `image` for a `box` by `method`, or nil where the
    /// image is no larger than the box already (it is its own thumbnail).
    public static func make(_ image: [UInt8], box: (width: Int, height: Int), method: Method) throws(Failure) -> (bytes: [UInt8], contentType: String)? {
        guard let (type, width, height) = header(image), width > 0, height > 0 else { throw .notAnImage }
        // Each side first: a header may claim 2^32 - 1 of each, whose product overflows.
        guard width <= pixelsMax, height <= pixelsMax, width * height <= pixelsMax else { throw .tooManyPixels(width: width, height: height) }
        guard width > box.width || height > box.height else { return nil }
        var copy = image
        let decoded: gdImagePtr? = copy.withUnsafeMutableBytes { bytes in
            switch type {
            case "image/png": gdImageCreateFromPngPtr(Int32(bytes.count), bytes.baseAddress)
            case "image/gif": gdImageCreateFromGifPtr(Int32(bytes.count), bytes.baseAddress)
            default: gdImageCreateFromJpegPtr(Int32(bytes.count), bytes.baseAddress)
            }
        }
        guard let source = decoded else { throw .undecodable }
        defer { gdImageDestroy(source) }
        let sourceWidth = Int(source.pointee.sx)
        let sourceHeight = Int(source.pointee.sy)
        // The part of the source used and the thumbnail's own size.
        var from = (x: 0, y: 0, width: sourceWidth, height: sourceHeight)
        let size: (width: Int, height: Int)
        switch method {
        case .scale:
            let factor = min(Double(box.width) / Double(sourceWidth), Double(box.height) / Double(sourceHeight), 1)
            size = (max(1, Int((Double(sourceWidth) * factor).rounded())), max(1, Int((Double(sourceHeight) * factor).rounded())))
        case .crop:
            size = (min(box.width, sourceWidth), min(box.height, sourceHeight))
            // The largest part of the source with the box's aspect ratio, centred.
            let factor = min(Double(sourceWidth) / Double(size.width), Double(sourceHeight) / Double(size.height))
            from.width = min(sourceWidth, Int((Double(size.width) * factor).rounded()))
            from.height = min(sourceHeight, Int((Double(size.height) * factor).rounded()))
            from.x = (sourceWidth - from.width) / 2
            from.y = (sourceHeight - from.height) / 2
        }
        guard let thumbnail = gdImageCreateTrueColor(Int32(size.width), Int32(size.height)) else { throw .unencodable }
        defer { gdImageDestroy(thumbnail) }
        let keepsAlpha = type != "image/jpeg"
        if keepsAlpha {
            gdImageAlphaBlending(thumbnail, 0)
            gdImageSaveAlpha(thumbnail, 1)
        }
        gdImageCopyResampled(thumbnail, source, 0, 0, Int32(from.x), Int32(from.y), Int32(size.width), Int32(size.height), Int32(from.width), Int32(from.height))
        var count: Int32 = 0
        let encoded = keepsAlpha ? gdImagePngPtr(thumbnail, &count) : gdImageJpegPtr(thumbnail, &count, 85)
        guard let encoded, count > 0 else { throw .unencodable }
        defer { gdFree(encoded) }
        let bytes = [UInt8](UnsafeRawBufferPointer(start: encoded, count: Int(count)))
        return (bytes, keepsAlpha ? "image/png" : "image/jpeg")
    }
}
