import Foundation
import NIOCore

/// Any JSON value: the parts of Matrix bodies whose shape the client
/// chooses (event content, power-level overrides, creation content).
/// Integers stay integers, so a power level of 100 is stored as 100.
enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(String.self) {
            // Strings first: most values in event content are strings, and
            // each wrong guess costs a thrown error.
            self = .string(value)
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .double(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { members[key] } else { nil }
    }

    var string: String? {
        if case .string(let value) = self { value } else { nil }
    }

    var bool: Bool? {
        if case .bool(let value) = self { value } else { nil }
    }

    /// An object's members; nil for any other value.
    var members: [String: JSONValue]? {
        if case .object(let value) = self { value } else { nil }
    }
}

/// JSON in and out of the gateway: request bodies decoded into their
/// types with Matrix errors for what does not fit, and records and answers
/// encoded with sorted keys (the order clients and tests have always seen).
enum MatrixJSON {
    /// Decodes a request body (`{}` when empty): `M_NOT_JSON` for what is
    /// not JSON, `M_BAD_JSON` for JSON of another shape.
    static func decodeBody<T: Decodable>(_ type: T.Type, from buffer: ByteBuffer) throws -> T {
        if buffer.readableBytes == 0 { return try decodeBody(type, from: Data("{}".utf8)) }
        return try decodeBody(type, from: Data(buffer.readableBytesView))
    }

    static func decodeBody<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty {
            throw MatrixError(.badRequest, "M_NOT_JSON", "the body is not JSON")
        } catch DecodingError.typeMismatch(_, let context) where context.codingPath.isEmpty {
            throw MatrixError(.badRequest, "M_BAD_JSON", "the body must be a JSON object")
        } catch {
            throw MatrixError(.badRequest, "M_BAD_JSON", "the body does not fit: \(Self.describe(error))")
        }
    }

    /// Checks that a body kept as the client sent it (a message's content)
    /// is a JSON object, with `decodeBody`'s errors, without building it
    /// into a type: `M_NOT_JSON` for what is not JSON, `M_BAD_JSON` for
    /// JSON of another shape.
    static func requireObject(_ bytes: some Collection<UInt8>) throws {
        guard let value = JSONValue(parsing: bytes) else { throw MatrixError(.badRequest, "M_NOT_JSON", "the body is not JSON") }
        guard case .object = value else { throw MatrixError(.badRequest, "M_BAD_JSON", "the body must be a JSON object") }
    }

    /// A stored record (the gateway's own topics); nil when it does not fit.
    static func decodeRecord<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) -> T? {
        try? JSONDecoder().decode(type, from: Data(bytes))
    }

    static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Every value encoded here is made of strings, numbers and
        // dictionaries with string keys: encoding cannot fail.
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    static func encodeBytes(_ value: some Encodable) -> [UInt8] {
        Array(encode(value).utf8)
    }

    /// Which field did not fit, for the error message.
    static func describe(_ error: any Error) -> String {
        let path: [any CodingKey]
        switch error as? DecodingError {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .keyNotFound(_, let context), .dataCorrupted(let context):
            path = context.codingPath
        default:
            return "\(error)"
        }
        let field = path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        return field.isEmpty ? "wrong shape" : "\(field) has the wrong type"
    }
}

// Literals, so content the gateway writes itself (power levels, join
// rules) reads as the JSON it becomes.
extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    init(stringLiteral value: String) { self = .string(value) }
    init(integerLiteral value: Int64) { self = .int(value) }
    init(booleanLiteral value: Bool) { self = .bool(value) }
    init(arrayLiteral elements: JSONValue...) { self = .array(elements) }

    init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}
