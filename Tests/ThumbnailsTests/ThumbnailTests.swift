import CGD
import Testing
import Thumbnails

@Suite("Thumbnails")
struct ThumbnailTests {
    /// A test picture made with libgd: left half red, right half blue,
    /// encoded as PNG or JPEG.
    static func picture(width: Int, height: Int, jpeg: Bool = false) -> [UInt8] {
        let image = gdImageCreateTrueColor(Int32(width), Int32(height))!
        defer { gdImageDestroy(image) }
        gdImageFilledRectangle(image, 0, 0, Int32(width / 2 - 1), Int32(height - 1), 0xFF0000)
        gdImageFilledRectangle(image, Int32(width / 2), 0, Int32(width - 1), Int32(height - 1), 0x0000FF)
        var count: Int32 = 0
        let bytes = jpeg ? gdImageJpegPtr(image, &count, 90)! : gdImagePngPtr(image, &count)!
        defer { gdFree(bytes) }
        return [UInt8](UnsafeRawBufferPointer(start: bytes, count: Int(count)))
    }

    @Test func aRequestGetsTheSmallestSizeOfItsMethodAtLeastAsLarge() {
        #expect(Thumbnail.box(width: 50, height: 50, method: .crop) == (96, 96))
        #expect(Thumbnail.box(width: 32, height: 32, method: .crop) == (32, 32))
        #expect(Thumbnail.box(width: 300, height: 300, method: .scale) == (640, 480))
        #expect(Thumbnail.box(width: 4000, height: 10, method: .scale) == (800, 600))
        #expect(Thumbnail.box(width: 500, height: 500, method: .crop) == (96, 96))
    }

    @Test func scaleKeepsTheAspectRatioInsideTheBox() throws {
        let made = try #require(try Thumbnail.make(Self.picture(width: 1600, height: 800), box: (320, 240), method: .scale))
        #expect(made.contentType == "image/png")
        let header = try #require(Thumbnail.header(made.bytes))
        #expect(header.width == 320 && header.height == 160)
    }

    @Test func cropFillsTheBoxFromTheMiddle() throws {
        let made = try #require(try Thumbnail.make(Self.picture(width: 1000, height: 400, jpeg: true), box: (96, 96), method: .crop))
        #expect(made.contentType == "image/jpeg")
        let header = try #require(Thumbnail.header(made.bytes))
        #expect(header.type == "image/jpeg" && header.width == 96 && header.height == 96)
        // The middle 400 of 1000 columns: red on the left, blue on the right.
        var copy = made.bytes
        let image = try #require(copy.withUnsafeMutableBytes { gdImageCreateFromJpegPtr(Int32($0.count), $0.baseAddress) })
        defer { gdImageDestroy(image) }
        let left = gdImageGetTrueColorPixel(image, 5, 48)
        let right = gdImageGetTrueColorPixel(image, 90, 48)
        #expect((left >> 16) & 0xFF > 200 && left & 0xFF < 60, "left \(String(left, radix: 16))")
        #expect(right & 0xFF > 200 && (right >> 16) & 0xFF < 60, "right \(String(right, radix: 16))")
    }

    @Test func anImageNoLargerThanTheBoxIsItsOwnThumbnail() throws {
        #expect(try Thumbnail.make(Self.picture(width: 300, height: 200), box: (320, 240), method: .scale) == nil)
    }

    @Test func theHeaderIsReadBeforeAnythingIsDecoded() throws {
        // A PNG signature and IHDR claiming 100,000 × 100,000 pixels, and nothing after.
        var bomb: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13] + Array("IHDR".utf8)
        bomb += [0x00, 0x01, 0x86, 0xA0, 0x00, 0x01, 0x86, 0xA0, 8, 2, 0, 0, 0]
        #expect(throws: Thumbnail.Failure.tooManyPixels(width: 100_000, height: 100_000)) { try Thumbnail.make(bomb, box: (96, 96), method: .crop) }
        // The largest sides a header can claim do not overflow the check.
        var largest = bomb
        largest.replaceSubrange(16..<24, with: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: Thumbnail.Failure.self) { try Thumbnail.make(largest, box: (96, 96), method: .crop) }
        #expect(throws: Thumbnail.Failure.notAnImage) { try Thumbnail.make(Array("not an image".utf8), box: (96, 96), method: .crop) }
        // A real header over a body that is not an image.
        let truncated = Array(Self.picture(width: 400, height: 400).prefix(40))
        #expect(throws: Thumbnail.Failure.undecodable) { try Thumbnail.make(truncated, box: (96, 96), method: .crop) }
    }
}
