/// Kafka's protocol primitives on top of `ByteReader` and `ByteWriter`:
/// int16-length strings, int32-length bytes and arrays, and, for flexible
/// versions, their compact forms (unsigned varint of length + 1) and tagged
/// fields. Every length is checked against the bytes that remain before
/// anything is allocated, so a lying length costs nothing.
extension ByteReader {
    public mutating func readBool(_ what: StaticString = "bool") throws(WireError) -> Bool {
        try readInt8(what) != 0
    }

    /// A length field: int16/int32 in classic versions, uvarint N+1 in compact ones. Nil is null.
    mutating func readLength(compact: Bool, wide: Bool, _ what: StaticString) throws(WireError) -> Int? {
        let length: Int
        if compact {
            let raw = try readUnsignedVarint64(what)
            guard raw <= UInt64(Int32.max) + 1 else { throw .malformed("\(what): compact length \(raw) too large") }
            length = Int(raw) - 1
        } else if wide {
            length = Int(try readInt32(what))
        } else {
            length = Int(try readInt16(what))
        }
        if length < 0 {
            guard length == -1 else { throw .malformed("\(what): negative length \(length)") }
            return nil
        }
        guard length <= remainingCount else {
            throw .truncated(String(describing: what), needed: length, available: remainingCount)
        }
        return length
    }

    public mutating func readNullableString(compact: Bool = false, _ what: StaticString = "string") throws(WireError) -> String? {
        guard let length = try readLength(compact: compact, wide: false, what) else { return nil }
        let range = try skip(length, what)
        return String(decoding: bytes[range], as: UTF8.self)
    }

    public mutating func readString(compact: Bool = false, _ what: StaticString = "string") throws(WireError) -> String {
        guard let value = try readNullableString(compact: compact, what) else { throw .malformed("\(what): null where a string is required") }
        return value
    }

    public mutating func readNullableBytes(compact: Bool = false, _ what: StaticString = "bytes") throws(WireError) -> [UInt8]? {
        guard let length = try readLength(compact: compact, wide: true, what) else { return nil }
        return try readBytes(length, what)
    }

    /// An array's element count; nil for a null array. Each element takes at
    /// least `elementBytesMin` bytes, so the count is checked against what
    /// remains before any element is read.
    public mutating func readArrayCount(compact: Bool = false, elementBytesMin: Int = 1, _ what: StaticString = "array") throws(WireError) -> Int? {
        let count: Int
        if compact {
            let raw = try readUnsignedVarint64(what)
            if raw == 0 { return nil }
            guard raw <= UInt64(Int32.max) else { throw .malformed("\(what): array count \(raw) too large") }
            count = Int(raw) - 1
        } else {
            count = Int(try readInt32(what))
            if count == -1 { return nil }
            guard count >= 0 else { throw .malformed("\(what): negative array count \(count)") }
        }
        guard count * max(elementBytesMin, 1) <= remainingCount else {
            throw .malformed("\(what): \(count) elements cannot fit in \(remainingCount) bytes")
        }
        return count
    }

    /// Reads an array of `count` elements (nil for null).
    public mutating func readArray<T>(compact: Bool = false, elementBytesMin: Int = 1, _ what: StaticString = "array", _ element: (inout ByteReader) throws(WireError) -> T) throws(WireError) -> [T]? {
        guard let count = try readArrayCount(compact: compact, elementBytesMin: elementBytesMin, what) else { return nil }
        var result: [T] = []
        result.reserveCapacity(count)
        for _ in 0..<count { result.append(try element(&self)) }
        return result
    }

    /// Skips a tagged-field section (flexible versions), checking its layout.
    public mutating func skipTaggedFields() throws(WireError) {
        let count = try readUnsignedVarint64("tagged field count")
        guard count <= UInt64(remainingCount) else { throw .malformed("\(count) tagged fields cannot fit") }
        for _ in 0..<count {
            _ = try readUnsignedVarint64("tag")
            let size = try readUnsignedVarint64("tagged field size")
            guard size <= UInt64(remainingCount) else { throw .malformed("tagged field of \(size) bytes overruns") }
            _ = try skip(Int(size), "tagged field")
        }
    }
}

extension ByteWriter {
    public mutating func writeBool(_ value: Bool) { writeInt8(value ? 1 : 0) }

    public mutating func writeString(_ value: String?, compact: Bool = false) {
        guard let value else {
            if compact { writeUnsignedVarint64(0) } else { writeInt16(-1) }
            return
        }
        let utf8 = Array(value.utf8)
        if compact { writeUnsignedVarint64(UInt64(utf8.count + 1)) } else { writeInt16(Int16(utf8.count)) }
        writeBytes(utf8)
    }

    public mutating func writeNullableBytes(_ value: [UInt8]?, compact: Bool = false) {
        guard let value else {
            if compact { writeUnsignedVarint64(0) } else { writeInt32(-1) }
            return
        }
        if compact { writeUnsignedVarint64(UInt64(value.count + 1)) } else { writeInt32(Int32(value.count)) }
        writeBytes(value)
    }

    public mutating func writeArrayCount(_ count: Int?, compact: Bool = false) {
        guard let count else {
            if compact { writeUnsignedVarint64(0) } else { writeInt32(-1) }
            return
        }
        if compact { writeUnsignedVarint64(UInt64(count + 1)) } else { writeInt32(Int32(count)) }
    }

    public mutating func writeArray<T>(_ elements: [T]?, compact: Bool = false, _ element: (inout ByteWriter, T) -> Void) {
        writeArrayCount(elements?.count, compact: compact)
        for value in elements ?? [] { element(&self, value) }
    }

    /// An empty tagged-field section.
    public mutating func writeEmptyTaggedFields() { writeUInt8(0) }
}
