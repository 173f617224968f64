import Core

/// Parses JSON text into a `JSONValue` in one pass over its bytes.
///
/// Why not `JSONDecoder`: `JSONValue` is a Codable enum, and decoding one
/// through a single-value container tries each case in turn, a thrown
/// error per wrong guess. Parsing each stored event's content that way
/// for the push rules was 4.5% of the process's CPU in twenty rooms of 2
/// (Docs/benchmarks.md).
///
/// It accepts what `JSONDecoder` accepts, and so whatever a client's body
/// passed when it was stored: RFC 8259 JSON, and one trailing comma before
/// an array's or object's end, which the decoder lets through (no
/// comments, leading zeros, bare control characters, lone surrogates or
/// invalid UTF-8). It gives the values the decoder gives: a number without
/// a fraction or exponent that fits an `Int64` is `.int`, as is one with a
/// fraction or exponent whose value is a whole number of magnitude below
/// 2^63; every other number is `.double`. A key given twice keeps its
/// first value.
struct JSONParser {
    struct Failure: Error, Equatable {
        var position: Int
        var reason: String
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private var position = 0
    private var depth = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    /// The value `text` holds, with nothing but whitespace around it.
    static func parse(_ text: some Collection<UInt8>) throws(Failure) -> JSONValue {
        let parsed: Result<JSONValue, Failure>? = text.withContiguousStorageIfAvailable { parse(buffer: $0) }
        if let parsed { return try parsed.get() }
        return try Array(text).withUnsafeBufferPointer { parse(buffer: $0) }.get()
    }

    private static func parse(buffer: UnsafeBufferPointer<UInt8>) -> Result<JSONValue, Failure> {
        var parser = JSONParser(buffer)
        do throws(Failure) {
            parser.skipWhitespace()
            let value = try parser.value()
            parser.skipWhitespace()
            guard parser.position == buffer.count else { throw parser.failure("text after the value") }
            return .success(value)
        } catch {
            return .failure(error)
        }
    }

    private func failure(_ reason: String) -> Failure {
        Failure(position: position, reason: reason)
    }

    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private mutating func value() throws(Failure) -> JSONValue {
        guard let byte = current else { throw failure("the text ends where a value should be") }
        switch byte {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw failure("no JSON value starts with byte \(byte)")
        }
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let count = word.utf8CodeUnitCount
        guard bytes.count - position >= count else { throw failure("the text ends inside \(word)") }
        for offset in 0..<count where bytes[position + offset] != word.utf8Start[offset] {
            throw failure("not \(word)")
        }
        position += count
    }

    /// Enters an object or array, one level deeper than the limit allows at most.
    private mutating func enter() throws(Failure) {
        depth += 1
        guard depth <= Limits.jsonNestingDepthMax else {
            throw failure("nested deeper than \(Limits.jsonNestingDepthMax) levels")
        }
        position += 1
        skipWhitespace()
    }

    private mutating func object() throws(Failure) -> JSONValue {
        try enter()
        var members: [String: JSONValue] = [:]
        if current == UInt8(ascii: "}") {
            position += 1
            depth -= 1
            return .object(members)
        }
        while true {
            guard current == UInt8(ascii: "\"") else { throw failure("an object's key must be a string") }
            let key = try string()
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw failure("a key must be followed by a colon") }
            position += 1
            skipWhitespace()
            let member = try value()
            if members[key] == nil { members[key] = member }
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
                if current == UInt8(ascii: "}") { fallthrough }
            case UInt8(ascii: "}"):
                position += 1
                depth -= 1
                return .object(members)
            default:
                throw failure("a member must be followed by a comma or the object's end")
            }
        }
    }

    private mutating func array() throws(Failure) -> JSONValue {
        try enter()
        var elements: [JSONValue] = []
        if current == UInt8(ascii: "]") {
            position += 1
            depth -= 1
            return .array(elements)
        }
        while true {
            elements.append(try value())
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
                if current == UInt8(ascii: "]") { fallthrough }
            case UInt8(ascii: "]"):
                position += 1
                depth -= 1
                return .array(elements)
            default:
                throw failure("an element must be followed by a comma or the array's end")
            }
        }
    }

    /// A string from its opening quote to past its closing one. Text
    /// without escapes (nearly all of it) is validated and copied at once.
    private mutating func string() throws(Failure) -> String {
        position += 1
        let start = position
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                let text = try utf8(from: start, to: position)
                position += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            guard byte >= 0x20 else { throw failure("a control character inside a string") }
            position += 1
        }
        guard position < bytes.count else { throw failure("the text ends inside a string") }
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: try utf8(from: start, to: position).unicodeScalars)
        while position < bytes.count {
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                position += 1
                return String(scalars)
            case UInt8(ascii: "\\"):
                scalars.append(try escape())
            default:
                guard byte >= 0x20 else { throw failure("a control character inside a string") }
                let runStart = position
                while position < bytes.count, bytes[position] != UInt8(ascii: "\""), bytes[position] != UInt8(ascii: "\\"), bytes[position] >= 0x20 {
                    position += 1
                }
                scalars.append(contentsOf: try utf8(from: runStart, to: position).unicodeScalars)
            }
        }
        throw failure("the text ends inside a string")
    }

    private func utf8(from start: Int, to end: Int) throws(Failure) -> String {
        guard let text = String(validating: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self) else {
            throw Failure(position: start, reason: "a string is not valid UTF-8")
        }
        return text
    }

    /// One escape sequence, from its backslash; a surrogate pair is one scalar.
    private mutating func escape() throws(Failure) -> Unicode.Scalar {
        position += 1
        guard let byte = current else { throw failure("the text ends inside an escape") }
        position += 1
        switch byte {
        case UInt8(ascii: "\""): return "\""
        case UInt8(ascii: "\\"): return "\\"
        case UInt8(ascii: "/"): return "/"
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "u"):
            let unit = try hexUnit()
            if (0xD800...0xDBFF).contains(unit) {
                guard bytes.count - position >= 2, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                    throw failure("a high surrogate without its low one")
                }
                position += 2
                let low = try hexUnit()
                guard (0xDC00...0xDFFF).contains(low) else { throw failure("a high surrogate without its low one") }
                let value = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
                return Unicode.Scalar(value)!
            }
            guard let scalar = Unicode.Scalar(unit) else { throw failure("a low surrogate without its high one") }
            return scalar
        default:
            throw failure("no escape \\\(Unicode.Scalar(byte))")
        }
    }

    private mutating func hexUnit() throws(Failure) -> UInt16 {
        guard bytes.count - position >= 4 else { throw failure("the text ends inside a \\u escape") }
        var unit: UInt16 = 0
        for _ in 0..<4 {
            guard let digit = ASCII.hexDigitValue(bytes[position]) else { throw failure("a \\u escape needs four hexadecimal digits") }
            unit = unit << 4 | UInt16(digit)
            position += 1
        }
        return unit
    }

    private mutating func number() throws(Failure) -> JSONValue {
        let start = position
        if current == UInt8(ascii: "-") { position += 1 }
        guard let first = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else {
            throw failure("a minus sign without digits")
        }
        if first == UInt8(ascii: "0") {
            position += 1
        } else {
            skipDigits()
        }
        var whole = true
        if current == UInt8(ascii: ".") {
            whole = false
            position += 1
            guard skipDigits() > 0 else { throw failure("a decimal point without digits after it") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            whole = false
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard skipDigits() > 0 else { throw failure("an exponent without digits") }
        }
        if let next = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(next) {
            throw failure("a number with a leading zero")
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        if whole, let integer = Int64(text) { return .int(integer) }
        guard let double = Double(text), double.isFinite else { throw Failure(position: start, reason: "a number out of range") }
        // A whole number written with a fraction or exponent is an integer
        // when its magnitude fits (the decoder's rule; so -2^63 is not).
        if !whole, let integer = Int64(exactly: double), integer != .min { return .int(integer) }
        return .double(double)
    }

    /// Skips a run of digits; returns how many.
    @discardableResult
    private mutating func skipDigits() -> Int {
        let start = position
        while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) {
            position += 1
        }
        return position - start
    }
}

extension JSONValue {
    /// The JSON value `text` holds; nil when it is not JSON.
    init?(parsing text: some Collection<UInt8>) {
        guard let value = try? JSONParser.parse(text) else { return nil }
        self = value
    }
}
