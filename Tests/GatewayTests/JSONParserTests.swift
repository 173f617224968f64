import Core
import Foundation
import NIOCore
import Testing

@testable import Gateway

/// `JSONParser` against Foundation's `JSONDecoder`, which it replaces for
/// stored events: the same value for every text the decoder accepts, and a
/// refusal for every text it refuses.
@Suite struct JSONParserTests {
    func decoded(_ bytes: [UInt8]) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }

    func expectAgreement(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        expectAgreement(Array(text.utf8), sourceLocation: sourceLocation)
    }

    func expectAgreement(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        let parsed = JSONValue(parsing: bytes)
        let expected = decoded(bytes)
        #expect(parsed == expected, "\(String(decoding: bytes, as: UTF8.self).debugDescription)", sourceLocation: sourceLocation)
    }

    @Test func valuesOfEveryKindAgreeWithJSONDecoder() {
        let texts = [
            "null", "true", "false", "0", "-0", "7", "-12", "9223372036854775807",
            "9223372036854775808", "-9223372036854775808", "-9223372036854775809", "-9223372036854775807", "12345678901234567890123", "-9223372036854775808.0", "9223372036854775808.0", "-9223372036854775809.0", "1.25e1", "4.0e18",
            "1.5", "-0.25", "1.0", "-0.0", "2.50", "1e2", "1E+2", "1e-2", "-3.5e3", "0.1e1", "1.7976931348623157e308", "5e-324",
            "\"\"", "\"plain text\"", "\"caf\u{E9} \u{1F600} \u{4E2D}\"", "\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"",
            "\"\\u0041\\u00e9\\u4e2d\"", "\"\\ud83d\\ude00\"", "\"a\\u0000b\"", "\"mixed \\n then \u{E9} and \\u00e9 again\"",
            "[]", "{}", "[1, \"two\", 3.5, null, true, [false], {\"k\": []}]",
            " \t\n\r{ \"a\" : 1 , \"b\" : [ 2 , 3 ] } \n",
            "{\"a\": 1, \"a\": 2}", "[1,]", "{\"a\":1,}", "[1 ,\n]", "{\"a\":[2,],}",
            "{\"type\":\"m.room.message\",\"content\":{\"msgtype\":\"m.text\",\"body\":\"hello @alice\",\"m.mentions\":{\"user_ids\":[\"@alice:gov.example\"]}},\"origin_server_ts\":1733500000000,\"unsigned\":{\"age\":12}}",
        ]
        for text in texts { expectAgreement(text) }
    }

    @Test func textsJSONDecoderRefusesAreRefused() {
        let texts = [
            "", " ", "nul", "tru", "True", "NaN", "Infinity", "-", "+1", "01", "-01", "1.", ".5", "1e", "1e+", "0x10", "1e400", "-1e400",
            "\"unterminated", "\"bad \\x escape\"", "\"\\u12\"", "\"\\u12G4\"", "\"\\ud83d\"", "\"\\ud83d\\u0041\"", "\"\\ude00\"",
            "\"tab\there\"", "\"line\nbreak\"",
            "[1,,]", "[1,,2]", "{\"a\":1,,}", "[1 2]", "[", "]", "{\"a\" 1}", "{a:1}", "{\"a\":1", "{,}", "[,]",
            "1 2", "{} {}", "// comment\n{}", "{\"a\":1} x",
        ]
        for text in texts {
            #expect(decoded(Array(text.utf8)) == nil, "JSONDecoder accepts \(text.debugDescription), so this list is wrong")
            #expect(JSONValue(parsing: Array(text.utf8)) == nil, "\(text.debugDescription) was accepted")
        }
    }

    @Test func invalidUTF8IsRefusedInsideAndOutsideEscapedStrings() {
        for bytes: [UInt8] in [[0x22, 0xC3, 0x28, 0x22], [0x22, 0x5C, 0x6E, 0xFF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xE2, 0x82, 0x22]] {
            #expect(JSONValue(parsing: bytes) == nil)
            #expect(decoded(bytes) == nil)
        }
    }

    @Test func nestingStopsAtTheLimit() {
        let deepest = String(repeating: "[", count: Limits.jsonNestingDepthMax) + String(repeating: "]", count: Limits.jsonNestingDepthMax)
        #expect(JSONValue(parsing: Array(deepest.utf8)) != nil)
        let deeper = "[" + deepest + "]"
        #expect(JSONValue(parsing: Array(deeper.utf8)) == nil)
        expectAgreement(deepest)
        expectAgreement(deeper)
        let objects = String(repeating: "{\"a\":", count: Limits.jsonNestingDepthMax + 1) + "1" + String(repeating: "}", count: Limits.jsonNestingDepthMax + 1)
        #expect(JSONValue(parsing: Array(objects.utf8)) == nil)
    }

    /// Random documents written by JSONSerialization (escapes, numbers and
    /// nesting it chooses) and then disturbed byte by byte: the parser and
    /// the decoder agree on every one, accepted or refused.
    @Test func randomDocumentsAndTheirMutationsAgreeWithJSONDecoder() throws {
        var generator = SeededGenerator(seed: 20_261_206)
        let alphabet: [String] = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\u{01}", "\u{7F}", "é", "中", "😀", "\u{2028}", "@room", "{", "]"]
        func randomString() -> String {
            (0..<Int.random(in: 0...12, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }.joined()
        }
        func randomValue(_ depth: Int) -> Any {
            switch Int.random(in: 0...(depth > 3 ? 4 : 6), using: &generator) {
            case 0: return NSNull()
            case 1: return Bool.random(using: &generator)
            case 2: return Int64.random(in: Int64.min...Int64.max, using: &generator) >> Int64.random(in: 0...63, using: &generator)
            case 3: return Double.random(in: -1e6...1e6, using: &generator)
            case 4: return randomString()
            case 5: return (0..<Int.random(in: 0...4, using: &generator)).map { _ in randomValue(depth + 1) }
            default:
                var object: [String: Any] = [:]
                for _ in 0..<Int.random(in: 0...4, using: &generator) { object[randomString()] = randomValue(depth + 1) }
                return object
            }
        }
        let mutations: [UInt8] = Array("{}[]\",:\\ 0-.eu".utf8) + [0x00, 0x80, 0xC3, 0xFF]
        for _ in 0..<1000 {
            let document = try JSONSerialization.data(withJSONObject: ["content": randomValue(0)], options: [.fragmentsAllowed])
            let bytes = [UInt8](document)
            expectAgreement(bytes)
            for _ in 0..<5 {
                var mutated = bytes
                let index = Int.random(in: 0..<mutated.count, using: &generator)
                switch Int.random(in: 0...2, using: &generator) {
                case 0: mutated[index] = mutations.randomElement(using: &generator)!
                case 1: mutated.remove(at: index)
                default: mutated.insert(mutations.randomElement(using: &generator)!, at: index)
                }
                expectAgreement(mutated)
            }
        }
    }

    @Test func aMessagesContentMustBeAnObjectWithTheDecodersErrors() throws {
        func code(_ text: String) -> String? {
            do {
                _ = try MatrixAPI.contentText(ByteBuffer(string: text))
                return nil
            } catch let error as MatrixError {
                return error.code
            } catch {
                return "\(error)"
            }
        }
        #expect(code("{\"body\":\"hi\",}") == nil)
        #expect(code("") == nil)
        #expect(code("{not json") == "M_NOT_JSON")
        #expect(code("[1]") == "M_BAD_JSON")
        #expect(code("\"text\"") == "M_BAD_JSON")
        #expect(try MatrixAPI.contentText(ByteBuffer(string: " {\"a\":1} ")) == " {\"a\":1} ", "the text is kept as sent")
    }

    @Test func anEventsContentIsItsContentMember() {
        let event = "{\"type\":\"m.room.message\",\"sender\":\"@a:gov.example\",\"content\":{\"body\":\"hi\",\"n\":3}}"
        #expect(MatrixAPI.content(event) == .object(["body": .string("hi"), "n": .int(3)]))
        #expect(MatrixAPI.content("{\"type\":\"m.room.message\"}") == nil)
        #expect(MatrixAPI.content("{\"content\":") == nil)
    }
}
