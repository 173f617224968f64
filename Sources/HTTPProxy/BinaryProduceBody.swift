import CBase64
import Core
import Foundation

/// A produce body in the REST Proxy's binary format, read straight from
/// its bytes: `{"records": [{"key": "<base64>", "value": "<base64>",
/// "partition": 0}, ...]}`, keys and values base64 or null, the partition
/// optional, other members of either object ignored.
///
/// Foundation's JSONDecoder made a String of every base64 text, then Data
/// of its decoding, then an array of that: with 100 records of 1 KiB per
/// request, more than a third of the broker's CPU under batched HTTP
/// produce (Docs/benchmarks.md). Here a base64 text is decoded from the
/// request's own bytes into the record's bytes, once.
struct BinaryProduceBody {
    struct Entry: Equatable {
        var key: [UInt8]?
        var value: Value
        var partition: Int32?
    }

    /// A record's value as the body gives it. Values are decoded later,
    /// straight into the record batch (`write`), so a value of 1 KiB is
    /// not first an array of its own.
    enum Value: Equatable {
        case null
        /// A base64 text without escapes: its place in the body.
        case text(Range<Int>)
        /// A text a writer escaped something in ("\/"), decoded already.
        case bytes([UInt8])

        /// The decoded bytes' count (nil for null), from the text's length.
        func count(in body: UnsafeRawBufferPointer) -> Int? {
            switch self {
            case .null: nil
            case .text(let range): Base64.decodedCount(UnsafeRawBufferPointer(rebasing: body[range])) ?? 0
            case .bytes(let bytes): bytes.count
            }
        }

        /// Decodes into `output` (`count(in:)` bytes); false when the text is not base64.
        func write(in body: UnsafeRawBufferPointer, to output: UnsafeMutableRawBufferPointer) -> Bool {
            switch self {
            case .null: return true
            case .text(let range): return Base64.decode(UnsafeRawBufferPointer(rebasing: body[range]), into: output)
            case .bytes(let bytes):
                bytes.withUnsafeBytes { output.copyMemory(from: $0) }
                return true
            }
        }

        /// The decoded bytes (nil for null); `Failure.notBase64` when the text is not base64.
        func decoded(in body: UnsafeRawBufferPointer) throws(Failure) -> [UInt8]? {
            switch self {
            case .null: return nil
            case .bytes(let bytes): return bytes
            case .text(let range):
                guard let bytes = Base64.decode(UnsafeRawBufferPointer(rebasing: body[range])) else { throw .notBase64 }
                return bytes
            }
        }
    }

    enum Failure: Error, Equatable {
        /// Not JSON, or JSON of another shape; says where and what.
        case malformed(String)
        /// A key or value that is not a base64 text.
        case notBase64
    }

    static func parse(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> [Entry] {
        var reader = JSONBytes(bytes)
        var entries: [Entry]?
        try reader.object { (reader, name) throws(Failure) in
            if name.elementsEqual("records".utf8) {
                var found: [Entry] = []
                try reader.array { (reader) throws(Failure) in found.append(try entry(&reader)) }
                entries = found
            } else {
                try reader.skipValue()
            }
        }
        reader.skipSpace()
        guard reader.atEnd else { throw .malformed("more after the body's object at byte \(reader.at)") }
        guard let entries else { throw .malformed("no \"records\" list") }
        return entries
    }

    private static func entry(_ reader: inout JSONBytes) throws(Failure) -> Entry {
        var entry = Entry(key: nil, value: .null, partition: nil)
        try reader.object { (reader, name) throws(Failure) in
            if name.elementsEqual("key".utf8) {
                entry.key = try reader.base64OrNull()
            } else if name.elementsEqual("value".utf8) {
                entry.value = try reader.base64TextOrNull()
            } else if name.elementsEqual("partition".utf8) {
                entry.partition = try reader.int32OrNull()
            } else {
                try reader.skipValue()
            }
        }
        return entry
    }
}

/// A cursor over JSON text (RFC 8259), for the few shapes the proxy reads
/// at speed; nesting deeper than `depthMax` is refused rather than recursed.
struct JSONBytes {
    typealias Failure = BinaryProduceBody.Failure
    let bytes: UnsafeRawBufferPointer
    var at = 0
    static let depthMax = 64

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var atEnd: Bool { at >= bytes.count }

    mutating func skipSpace() {
        while at < bytes.count {
            switch bytes[at] {
            case 0x20, 0x09, 0x0A, 0x0D: at += 1
            default: return
            }
        }
    }

    /// The next byte after white space, not taken.
    mutating func peek() throws(Failure) -> UInt8 {
        skipSpace()
        guard at < bytes.count else { throw .malformed("the body ends early") }
        return bytes[at]
    }

    mutating func expect(_ byte: UInt8) throws(Failure) {
        guard try peek() == byte else { throw .malformed("expected '\(Character(Unicode.Scalar(byte)))' at byte \(at)") }
        at += 1
    }

    /// Each member of an object: its name (unescaped) and the reader at
    /// its value. A name without escapes is read in place.
    mutating func object(_ member: (inout JSONBytes, UnsafeRawBufferPointer) throws(Failure) -> Void) throws(Failure) {
        try expect(UInt8(ascii: "{"))
        if try peek() == UInt8(ascii: "}") {
            at += 1
            return
        }
        while true {
            guard try peek() == UInt8(ascii: "\"") else { throw .malformed("expected a member name at byte \(at)") }
            var end = at + 1
            while end < bytes.count, bytes[end] != UInt8(ascii: "\""), bytes[end] != UInt8(ascii: "\\"), bytes[end] >= 0x20 { end += 1 }
            if end < bytes.count, bytes[end] == UInt8(ascii: "\"") {
                let name = UnsafeRawBufferPointer(rebasing: bytes[(at + 1)..<end])
                at = end + 1
                try expect(UInt8(ascii: ":"))
                try member(&self, name)
            } else {
                let name = try string()
                try expect(UInt8(ascii: ":"))
                try Self.withBytes(name) { (name) throws(Failure) in try member(&self, name) }
            }
            switch try peek() {
            case UInt8(ascii: ","): at += 1
            case UInt8(ascii: "}"): at += 1; return
            default: throw .malformed("expected ',' or '}' at byte \(at)")
            }
        }
    }

    /// Each element of an array, the reader at it.
    mutating func array(_ element: (inout JSONBytes) throws(Failure) -> Void) throws(Failure) {
        try expect(UInt8(ascii: "["))
        if try peek() == UInt8(ascii: "]") {
            at += 1
            return
        }
        while true {
            try element(&self)
            switch try peek() {
            case UInt8(ascii: ","): at += 1
            case UInt8(ascii: "]"): at += 1; return
            default: throw .malformed("expected ',' or ']' at byte \(at)")
            }
        }
    }

    /// `null`, taken, or false (the reader unmoved but for white space).
    mutating func null() throws(Failure) -> Bool {
        guard try peek() == UInt8(ascii: "n") else { return false }
        try literal("null")
        return true
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let count = word.utf8CodeUnitCount
        guard at + count <= bytes.count else { throw .malformed("the body ends early") }
        for index in 0..<count where bytes[at + index] != word.utf8Start[index] {
            throw .malformed("expected \(word) at byte \(at)")
        }
        at += count
    }

    /// A string's bytes as UTF-8, its escapes resolved.
    mutating func string() throws(Failure) -> [UInt8] {
        var text: [UInt8] = []
        try string { text.append(contentsOf: $0) }
        return text
    }

    /// A string, handed over as runs of its unescaped UTF-8 bytes: most
    /// strings are one run, taken straight from the input.
    mutating func string(_ run: (UnsafeRawBufferPointer) throws(Failure) -> Void) throws(Failure) {
        try expect(UInt8(ascii: "\""))
        var start = at
        while true {
            guard at < bytes.count else { throw .malformed("a string is not closed") }
            let byte = bytes[at]
            if byte == UInt8(ascii: "\"") {
                try run(UnsafeRawBufferPointer(rebasing: bytes[start..<at]))
                at += 1
                return
            }
            if byte < 0x20 { throw .malformed("a control character in a string at byte \(at)") }
            guard byte == UInt8(ascii: "\\") else {
                at += 1
                continue
            }
            try run(UnsafeRawBufferPointer(rebasing: bytes[start..<at]))
            at += 1
            guard at < bytes.count else { throw .malformed("a string is not closed") }
            let escaped = bytes[at]
            at += 1
            var scalar: UInt32
            switch escaped {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalar = UInt32(escaped)
            case UInt8(ascii: "b"): scalar = 0x08
            case UInt8(ascii: "f"): scalar = 0x0C
            case UInt8(ascii: "n"): scalar = 0x0A
            case UInt8(ascii: "r"): scalar = 0x0D
            case UInt8(ascii: "t"): scalar = 0x09
            case UInt8(ascii: "u"):
                scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    // A surrogate pair: the low half must follow as \uDC00-\uDFFF.
                    guard at + 1 < bytes.count, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") else {
                        throw .malformed("a lone surrogate in a string at byte \(at)")
                    }
                    at += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw .malformed("a lone surrogate in a string at byte \(at)") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw .malformed("a lone surrogate in a string at byte \(at)")
                }
            default:
                throw .malformed("an unknown escape in a string at byte \(at - 1)")
            }
            var utf8: [UInt8] = []
            // Every value here is a valid scalar: surrogates were refused or combined above.
            UTF8.encode(Unicode.Scalar(scalar)!) { utf8.append($0) }
            try Self.withBytes(utf8, run)
            start = at
        }
    }

    /// `Array.withUnsafeBytes` with the body's typed error kept.
    private static func withBytes(_ array: [UInt8], _ body: (UnsafeRawBufferPointer) throws(Failure) -> Void) throws(Failure) {
        do {
            try array.withUnsafeBytes { try body($0) }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw .malformed("\(error)")
        }
    }

    private mutating func hex4() throws(Failure) -> UInt32 {
        guard at + 4 <= bytes.count else { throw .malformed("the body ends early") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let digit = ASCII.hexDigitValue(bytes[at]) else { throw .malformed("a bad \\u escape at byte \(at)") }
            value = value << 4 | UInt32(digit)
            at += 1
        }
        return value
    }

    /// A base64 text's bytes (standard alphabet, padded, as Foundation's
    /// `Data(base64Encoded:)` takes them), or nil for `null`.
    mutating func base64OrNull() throws(Failure) -> [UInt8]? {
        try base64TextOrNull().decoded(in: bytes)
    }

    /// A base64 text left in place (its range; checked here, so decoding
    /// it later cannot fail: a request's records may then be decoded into a
    /// batch shared with other requests), the bytes of one a writer
    /// escaped something in, or null.
    mutating func base64TextOrNull() throws(Failure) -> BinaryProduceBody.Value {
        if try null() { return .null }
        guard try peek() == UInt8(ascii: "\"") else { throw .notBase64 }
        // Base64 has no character JSON must escape: the text ends at the
        // first quote, unless a writer escaped something anyway ("\/"),
        // which the slower way below resolves.
        let start = at + 1
        guard let base = bytes.baseAddress, start <= bytes.count,
              let quote = memchr(base + start, Int32(UInt8(ascii: "\"")), bytes.count - start) else {
            throw .malformed("a string is not closed")
        }
        let end = base.distance(to: UnsafeRawPointer(quote))
        guard memchr(base + start, Int32(UInt8(ascii: "\\")), end - start) != nil else {
            guard Base64.isValid(UnsafeRawBufferPointer(rebasing: bytes[start..<end])) else { throw .notBase64 }
            at = end + 1
            return .text(start..<end)
        }
        guard let decoded = Base64.decode(try string()) else { throw .notBase64 }
        return .bytes(decoded)
    }

    /// An integer that fits 32 bits, or nil for `null`.
    mutating func int32OrNull() throws(Failure) -> Int32? {
        if try null() { return nil }
        let start = at
        try skipNumber()
        let token = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
        if let whole = Int32(token) { return whole }
        // 3.0 or 3e0 is 3, as JSONDecoder takes it; 3.5 is no partition.
        guard let number = Double(token), number.rounded() == number, let whole = Int32(exactly: number) else {
            throw .malformed("a partition must be a 32-bit integer, not \(token)")
        }
        return whole
    }

    private mutating func skipNumber() throws(Failure) {
        skipSpace()
        let start = at
        if at < bytes.count, bytes[at] == UInt8(ascii: "-") { at += 1 }
        func digits(_ reader: inout JSONBytes) -> Int {
            let first = reader.at
            while reader.at < reader.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(reader.bytes[reader.at]) { reader.at += 1 }
            return reader.at - first
        }
        guard digits(&self) > 0 else { throw .malformed("expected a value at byte \(start)") }
        if at < bytes.count, bytes[at] == UInt8(ascii: ".") {
            at += 1
            guard digits(&self) > 0 else { throw .malformed("a bad number at byte \(start)") }
        }
        if at < bytes.count, bytes[at] | 0x20 == UInt8(ascii: "e") {
            at += 1
            if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") { at += 1 }
            guard digits(&self) > 0 else { throw .malformed("a bad number at byte \(start)") }
        }
    }

    /// Steps over any value; objects and arrays at most `depthMax` deep.
    mutating func skipValue(depth: Int = 0) throws(Failure) {
        guard depth < Self.depthMax else { throw .malformed("nested more than \(Self.depthMax) deep") }
        switch try peek() {
        case UInt8(ascii: "{"): try object { (reader, _) throws(Failure) in try reader.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["): try array { (reader) throws(Failure) in try reader.skipValue(depth: depth + 1) }
        case UInt8(ascii: "\""): try string { _ in }
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: try skipNumber()
        }
    }
}

/// Base64 (RFC 4648's standard alphabet, with padding, as Foundation's
/// `Data(base64Encoded:)` takes it), decoded 32 characters at a time with
/// AVX2 and a quad at a time where that stops.
enum Base64 {
    /// Each character's six bits; 0xFF where it is not in the alphabet.
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, character) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() {
            table[Int(character)] = UInt8(index)
        }
        return table
    }()

    static func decode(_ text: [UInt8]) -> [UInt8]? {
        text.withUnsafeBytes { decode($0) }
    }

    /// The count of bytes a text of this length and padding stands for;
    /// nil when its length is not a multiple of four.
    static func decodedCount(_ text: UnsafeRawBufferPointer) -> Int? {
        let count = text.count
        guard count % 4 == 0 else { return nil }
        guard count > 0 else { return 0 }
        let padding = text[count - 1] != UInt8(ascii: "=") ? 0 : (text[count - 2] != UInt8(ascii: "=") ? 1 : 2)
        return count / 4 * 3 - padding
    }

    /// Whether `text` is padded base64: what `decode` takes.
    static func isValid(_ text: UnsafeRawBufferPointer) -> Bool {
        guard let decodedCount = decodedCount(text) else { return false }
        guard let input = text.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return true }
        let significant = text.count - (text.count / 4 * 3 - decodedCount)
        let checked = postduif_base64_check_blocks(input, significant)
        return values.withUnsafeBufferPointer { values in
            var invalid: UInt8 = 0
            for at in checked..<significant { invalid |= values[Int(input[at])] }
            return invalid & 0x80 == 0
        }
    }

    /// The bytes `text` stands for; nil if it is not padded base64.
    static func decode(_ text: UnsafeRawBufferPointer) -> [UInt8]? {
        guard let decodedCount = decodedCount(text) else { return nil }
        var valid = true
        let decoded = [UInt8](unsafeUninitializedCapacity: decodedCount) { output, initialized in
            valid = decode(text, into: UnsafeMutableRawBufferPointer(output))
            initialized = decodedCount
        }
        return valid ? decoded : nil
    }

    /// Decodes `text` into `output`, which holds exactly `decodedCount(text)`
    /// bytes; false if it is not padded base64 (`output` then holds garbage).
    static func decode(_ text: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Bool {
        let count = text.count
        guard let decodedCount = decodedCount(text), output.count == decodedCount else { return false }
        guard count > 0, let input = text.baseAddress?.assumingMemoryBound(to: UInt8.self),
              let output = output.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return true }
        let padding = count / 4 * 3 - decodedCount
        // Every quad but a padded last one: 32 characters at a time where
        // the CPU can (CBase64), the rest and any refused block here.
        let whole = padding == 0 ? count : count - 4
        let vectored = postduif_base64_decode_blocks(input, whole, output)
        return values.withUnsafeBufferPointer { values in
            var at = vectored
            var written = vectored / 4 * 3
            var invalid: UInt8 = 0
            while at < whole {
                let a = values[Int(input[at])]
                let b = values[Int(input[at + 1])]
                let c = values[Int(input[at + 2])]
                let d = values[Int(input[at + 3])]
                invalid |= a | b | c | d
                let quad = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
                output[written] = UInt8(truncatingIfNeeded: quad >> 16)
                output[written + 1] = UInt8(truncatingIfNeeded: quad >> 8)
                output[written + 2] = UInt8(truncatingIfNeeded: quad)
                at += 4
                written += 3
            }
            if padding > 0 {
                let a = values[Int(input[at])]
                let b = values[Int(input[at + 1])]
                let c = padding == 1 ? values[Int(input[at + 2])] : 0
                invalid |= a | b | c
                let quad = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6
                output[written] = UInt8(truncatingIfNeeded: quad >> 16)
                if padding == 1 { output[written + 1] = UInt8(truncatingIfNeeded: quad >> 8) }
            }
            // Valid values are below 64; any 0xFF sets the top bit.
            return invalid & 0x80 == 0
        }
    }
}
