/// A bounds-checked reader over bytes in Kafka's big-endian encoding.
/// Every read past the end throws `WireError.truncated`, never traps.
public struct ByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var position: Int
    public let end: Int

    public init(_ bytes: [UInt8], from start: Int = 0, to end: Int? = nil) {
        self.bytes = bytes
        self.position = start
        self.end = end ?? bytes.count
        precondition(start >= 0 && self.end <= bytes.count && start <= self.end, "reader range outside its bytes")
    }

    public var remainingCount: Int { end - position }
    public var isAtEnd: Bool { position >= end }

    @inline(__always)
    mutating func require(_ count: Int, _ what: StaticString) throws(WireError) {
        guard count >= 0, count <= end - position else {
            throw WireError.truncated(String(describing: what), needed: count, available: end - position)
        }
    }

    public mutating func readUInt8(_ what: StaticString = "byte") throws(WireError) -> UInt8 {
        try require(1, what)
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func readInt8(_ what: StaticString = "int8") throws(WireError) -> Int8 {
        Int8(bitPattern: try readUInt8(what))
    }

    public mutating func readInt16(_ what: StaticString = "int16") throws(WireError) -> Int16 {
        try require(2, what)
        defer { position += 2 }
        return Int16(bitPattern: UInt16(bytes[position]) << 8 | UInt16(bytes[position + 1]))
    }

    public mutating func readUInt32(_ what: StaticString = "uint32") throws(WireError) -> UInt32 {
        try require(4, what)
        defer { position += 4 }
        return UInt32(bytes[position]) << 24 | UInt32(bytes[position + 1]) << 16
            | UInt32(bytes[position + 2]) << 8 | UInt32(bytes[position + 3])
    }

    public mutating func readInt32(_ what: StaticString = "int32") throws(WireError) -> Int32 {
        Int32(bitPattern: try readUInt32(what))
    }

    public mutating func readInt64(_ what: StaticString = "int64") throws(WireError) -> Int64 {
        let high = UInt64(try readUInt32(what))
        let low = UInt64(try readUInt32(what))
        return Int64(bitPattern: high << 32 | low)
    }

    /// An unsigned LEB128 varint of at most 64 bits.
    public mutating func readUnsignedVarint64(_ what: StaticString = "varint") throws(WireError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try readUInt8(what)
            if shift == 63 && byte > 1 {
                throw WireError.malformed("\(what): varint longer than 64 bits")
            }
            result |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw WireError.malformed("\(what): varint longer than 64 bits") }
        }
    }

    /// A zigzag-encoded signed varint (record fields), limited to 32 bits.
    public mutating func readVarint(_ what: StaticString = "varint") throws(WireError) -> Int32 {
        let raw = try readUnsignedVarint64(what)
        guard raw <= UInt64(UInt32.max) else { throw WireError.malformed("\(what): varint larger than 32 bits") }
        let value = UInt32(raw)
        return Int32(bitPattern: (value >> 1) ^ (0 &- (value & 1)))
    }

    /// A zigzag-encoded signed varlong (record timestamps).
    public mutating func readVarlong(_ what: StaticString = "varlong") throws(WireError) -> Int64 {
        let value = try readUnsignedVarint64(what)
        return Int64(bitPattern: (value >> 1) ^ (0 &- (value & 1)))
    }

    /// `count` bytes as a new array.
    public mutating func readBytes(_ count: Int, _ what: StaticString = "bytes") throws(WireError) -> [UInt8] {
        try require(count, what)
        defer { position += count }
        return Array(bytes[position..<(position + count)])
    }

    /// Skips `count` bytes, returning the range they occupied.
    public mutating func skip(_ count: Int, _ what: StaticString = "bytes") throws(WireError) -> Range<Int> {
        try require(count, what)
        defer { position += count }
        return position..<(position + count)
    }
}

/// Appends Kafka's big-endian and varint encodings to a byte array.
public struct ByteWriter: Sendable {
    public var bytes: [UInt8]

    public init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public var count: Int { bytes.count }

    public mutating func writeInt8(_ value: Int8) { bytes.append(UInt8(bitPattern: value)) }
    public mutating func writeUInt8(_ value: UInt8) { bytes.append(value) }

    public mutating func writeInt16(_ value: Int16) {
        let v = UInt16(bitPattern: value)
        bytes.append(UInt8(v >> 8)); bytes.append(UInt8(truncatingIfNeeded: v))
    }

    public mutating func writeUInt32(_ value: UInt32) {
        bytes.append(UInt8(value >> 24)); bytes.append(UInt8(truncatingIfNeeded: value >> 16))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8)); bytes.append(UInt8(truncatingIfNeeded: value))
    }

    public mutating func writeInt32(_ value: Int32) { writeUInt32(UInt32(bitPattern: value)) }

    public mutating func writeInt64(_ value: Int64) {
        let v = UInt64(bitPattern: value)
        writeUInt32(UInt32(v >> 32)); writeUInt32(UInt32(truncatingIfNeeded: v))
    }

    public mutating func writeUnsignedVarint64(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    public mutating func writeVarint(_ value: Int32) {
        writeUnsignedVarint64(UInt64(UInt32(bitPattern: (value << 1) ^ (value >> 31))))
    }

    public mutating func writeVarlong(_ value: Int64) {
        writeUnsignedVarint64(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    public mutating func writeBytes(_ value: some Sequence<UInt8>) { bytes.append(contentsOf: value) }

    // Concrete overloads: the generic one, called from another module, may
    // copy byte by byte through the Sequence witness; these are one memcpy.
    @inlinable public mutating func writeBytes(_ value: [UInt8]) { bytes.append(contentsOf: value) }
    @inlinable public mutating func writeBytes(_ value: ArraySlice<UInt8>) { bytes.append(contentsOf: value) }
    @inlinable public mutating func writeBytes(_ value: UnsafeRawBufferPointer) { bytes.append(contentsOf: value) }

    /// Overwrites four bytes at `index` with a big-endian value.
    public mutating func patchUInt32(_ value: UInt32, at index: Int) {
        bytes[index] = UInt8(value >> 24); bytes[index + 1] = UInt8(truncatingIfNeeded: value >> 16)
        bytes[index + 2] = UInt8(truncatingIfNeeded: value >> 8); bytes[index + 3] = UInt8(truncatingIfNeeded: value)
    }
}

/// Bytes that do not follow Kafka's encoding.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(String, needed: Int, available: Int)
    case malformed(String)

    public var description: String {
        switch self {
        case .truncated(let what, let needed, let available):
            "truncated \(what): needed \(needed) bytes, \(available) left"
        case .malformed(let message):
            "malformed: \(message)"
        }
    }
}
