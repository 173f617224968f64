import CBase64
import Foundation
import Testing

@testable import HTTPProxy

@Suite("The REST Proxy's binary produce body")
struct BinaryProduceBodyTests {
    /// An entry with its value decoded, as the proxy writes it into a batch.
    struct Decoded: Equatable {
        var key: [UInt8]?
        var value: [UInt8]?
        var partition: Int32?
    }

    func parse(_ text: String) throws(BinaryProduceBody.Failure) -> [Decoded] {
        let bytes = Array(text.utf8)
        do {
            return try bytes.withUnsafeBytes { body in
                try BinaryProduceBody.parse(body).map { entry in
                    let value = try entry.value.decoded(in: body)
                    // What the batch is given: the count from the text's length, then the bytes written in place.
                    #expect(entry.value.count(in: body) == value?.count)
                    if let value {
                        var written = [UInt8](repeating: 0, count: value.count)
                        #expect(written.withUnsafeMutableBytes { entry.value.write(in: body, to: $0) })
                        #expect(written == value)
                    }
                    return Decoded(key: entry.key, value: value, partition: entry.partition)
                }
            }
        } catch let failure as BinaryProduceBody.Failure {
            throw failure
        } catch {
            Issue.record("an error of another kind: \(error)")
            return []
        }
    }

    func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    @Test func recordsInAnyOrderWithNullsPartitionsAndMembersItIgnores() throws {
        let text = """
         { "value_schema_id" : null, "records" : [
            {"value": "\(base64([0, 255, 1]))", "partition": 2, "key": "\(base64(Array("k".utf8)))", "extra": {"a": [1, 2.5e3, true, false, null, "s\\"t"]}},
            {"key": null, "value": null},
            {"value": "aGk="}
         ], "key_schema": "x" }\t\n
        """
        let entries = try parse(text)
        #expect(entries == [
            .init(key: Array("k".utf8), value: [0, 255, 1], partition: 2),
            .init(key: nil, value: nil, partition: nil),
            .init(key: nil, value: Array("hi".utf8), partition: nil),
        ])
    }

    @Test func escapesInNamesAndInBase64TextAreResolved() throws {
        // "\/" is how some JSON writers (PHP's, by default) send '/', which
        // base64 uses; "\u0076alue" is "value".
        let bytes: [UInt8] = [0xFB, 0xFF, 0xBF]
        let encoded = base64(bytes)
        #expect(encoded.contains("/"))
        let escaped = encoded.replacingOccurrences(of: "/", with: "\\/")
        let entries = try parse(#"{"records":[{"\u0076alue":"\#(escaped)","partition":3.0}]}"#)
        #expect(entries == [.init(key: nil, value: bytes, partition: 3)])
    }

    @Test func decodesWhatFoundationEncodesForEveryLength() throws {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<40 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let entries = try parse(#"{"records":[{"key":"\#(base64(bytes))"}]}"#)
            #expect(entries.first?.key == bytes, "length \(length)")
        }
    }

    /// Long texts, and the bytes of every value (each of the 64
    /// characters in every position of a quad).
    @Test func decodesLongTextsAsFoundationDoes() throws {
        var generator = SystemRandomNumberGenerator()
        for length in Array(40..<200) + [1024, 4097] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let text = Array(base64(bytes).utf8)
            #expect(text.withUnsafeBytes { Base64.decode($0) } == bytes, "length \(length)")
        }
        let every = (0..<192).map { UInt8(truncatingIfNeeded: $0 * 7) } + (0..<192).map { UInt8(truncatingIfNeeded: $0) }
        #expect(Base64.decode(Array(base64(every).utf8)) == every)
    }

    /// The vector path alone: whole blocks only, three bytes for every four
    /// characters, nothing written past them, and a stop before the block
    /// holding a padding character.
    @Test func theVectorPathDecodesWholeBlocksAndStopsBeforeAnyOther() {
        guard postduif_base64_is_vector() == 1 else {
            #expect(postduif_base64_decode_blocks(nil, 0, nil) == 0)
            return
        }
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<300).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let text = Array(base64(bytes).utf8)
        for count in [0, 31, 32, 33, 63, 64, 100, 399] {
            var out = [UInt8](repeating: 0xAA, count: 320)
            let done = text.withUnsafeBufferPointer { text in
                out.withUnsafeMutableBufferPointer { postduif_base64_decode_blocks(text.baseAddress, count, $0.baseAddress) }
            }
            #expect(done == count / 32 * 32, "count \(count)")
            #expect(Array(out[..<(done / 4 * 3)]) == Array(bytes[..<(done / 4 * 3)]), "count \(count)")
            #expect(out[(done / 4 * 3)...].allSatisfy { $0 == 0xAA }, "count \(count): written past the blocks")
        }
        var padded = text
        padded[70] = UInt8(ascii: "=")
        var out = [UInt8](repeating: 0, count: 96)
        let done = padded.withUnsafeBufferPointer { text in
            out.withUnsafeMutableBufferPointer { postduif_base64_decode_blocks(text.baseAddress, 128, $0.baseAddress) }
        }
        #expect(done == 64)
    }

    /// Every byte value in every position of a long valid text: decoded
    /// exactly when it is one of the alphabet's 64 characters (a '=' only
    /// as padding at the end), never read as something else. The text is
    /// two of the vector path's blocks (where the CPU has AVX2, which this
    /// test names), so every position of a block is tried there.
    @Test func everyCharacterOutsideTheAlphabetIsRefusedInEveryPosition() {
        print("base64 blocks decoded with AVX2: \(postduif_base64_is_vector() == 1)")
        let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        let valid = Array(base64((0..<48).map { UInt8($0 * 5) }).utf8)
        #expect(valid.count == 64)
        for position in 0..<64 {
            for value in UInt8.min...UInt8.max {
                var text = valid
                text[position] = value
                let decoded = Base64.decode(text)
                // The check the parser makes agrees with decoding.
                #expect(text.withUnsafeBytes { Base64.isValid($0) } == (decoded != nil), "byte \(value) at \(position)")
                if alphabet.contains(value) {
                    #expect(decoded == Data(base64Encoded: Data(text)).map(Array.init), "byte \(value) at \(position)")
                } else if value == UInt8(ascii: "=") && position == 63 {
                    #expect(decoded == Data(base64Encoded: Data(text)).map(Array.init), "padding at the end")
                } else {
                    #expect(decoded == nil, "byte \(value) at \(position)")
                }
            }
        }
    }

    @Test func refusesTextThatIsNotBase64() {
        for text in ["ab!c", "abc", "ab=c", "a===", "aGk=aGk=", "aGk", "====", "aGk=\\n"] {
            #expect(throws: BinaryProduceBody.Failure.notBase64, "\(text)") { try parse(#"{"records":[{"value":"\#(text)"}]}"#) }
        }
        #expect(throws: BinaryProduceBody.Failure.notBase64) { try parse(#"{"records":[{"value":42}]}"#) }
    }

    @Test func refusesWhatIsNotJSONOrNotThisShape() {
        let bodies = [
            "", "{", #"{"records":[{"value":"aGk="}]"#, #"{"records":[{"value":"aGk="}]} x"#, #"{"records":{}}"#,
            #"{"other":[]}"#, "[]", "{\"records\":[{\"value\":\"a\u{01}\"}]}", #"{"records":[{"x":"\ud800"}]}"#,
            #"{"records":[{"partition":1.5}]}"#, #"{"records":[{"partition":4294967296}]}"#, #"{"records":[{"partition":-}]}"#,
            #"{"records":[{"x":tru}]}"#, #"{"records":[{"x":"\q"}]}"#, #"{"records":[1,]}"#,
            "{\"records\":[{\"x\":" + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}]}",
        ]
        for body in bodies {
            #expect(throws: (any Error).self, "\(body)") { try parse(body) }
            #expect((try? parse(body)) == nil)
        }
    }

    @Test func anEmptyListIsAList() throws {
        #expect(try parse(#"{"records":[]}"#).isEmpty)
    }
}
