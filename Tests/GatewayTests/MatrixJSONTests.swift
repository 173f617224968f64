import Foundation
import NIOCore
import Testing

@testable import Gateway

/// Request bodies into their types, records and answers out of them.
@Suite struct MatrixJSONTests {
    func errorCode(_ body: String, as type: (some Decodable).Type) -> String? {
        do {
            _ = try MatrixJSON.decodeBody(type, from: ByteBuffer(string: body))
            return nil
        } catch let error as MatrixError {
            return error.code
        } catch {
            return "\(error)"
        }
    }

    @Test func bodiesThatAreNotJSONOrNotObjectsGetTheirOwnErrors() {
        #expect(errorCode("{not json", as: LoginRequest.self) == "M_NOT_JSON")
        #expect(errorCode("[1, 2]", as: LoginRequest.self) == "M_BAD_JSON")
        #expect(errorCode("\"text\"", as: CreateRoomRequest.self) == "M_BAD_JSON")
        // A field of the wrong type is bad JSON, and the message names it.
        let wrong = errorCode("{\"invite\": \"@a:gov.example\"}", as: CreateRoomRequest.self)
        #expect(wrong == "M_BAD_JSON")
        do {
            _ = try MatrixJSON.decodeBody(CreateRoomRequest.self, from: ByteBuffer(string: "{\"invite\": 3}"))
            Issue.record("an invite list of the wrong type was accepted")
        } catch let error as MatrixError {
            #expect(error.message.contains("invite"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func anEmptyBodyIsAnEmptyObjectAndUnknownFieldsAreIgnored() throws {
        let empty = try MatrixJSON.decodeBody(RegisterRequest.self, from: ByteBuffer())
        #expect(empty.username == nil && empty.password == nil)
        let login = try MatrixJSON.decodeBody(
            LoginRequest.self,
            from: ByteBuffer(string: #"{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"pw","initial_device_display_name":"nheko"}"#))
        #expect(login.identifier?.user == "alice" && login.password == "pw" && login.type == "m.login.password")
    }

    @Test func messageContentIsCheckedToBeAnObjectAndKeptAsSent() throws {
        let text = #"{"msgtype":"m.text","body":"Kamerbrief \u00e9 / 2026"}"#
        #expect(try MatrixAPI.contentText(ByteBuffer(string: text)) == text)
        #expect(try MatrixAPI.contentText(ByteBuffer()) == "{}")
        #expect(throws: MatrixError.self) { try MatrixAPI.contentText(ByteBuffer(string: "[]")) }
        #expect(throws: MatrixError.self) { try MatrixAPI.contentText(ByteBuffer(string: "{\"body\":")) }
    }

    @Test func anyJSONRoundTripsWithIntegersKeptIntegers() throws {
        let text = #"{"a":[1,2.5,true,null,"x"],"b":{"c":100},"d":-7}"#
        let value = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        #expect(value["b"]?["c"] == .int(100))
        #expect(value["a"] == .array([.int(1), .double(2.5), .bool(true), .null, .string("x")]))
        #expect(MatrixJSON.encode(value) == text)
    }

    @Test func answersAndRecordsEncodeWithSortedKeysAndUnescapedSlashes() {
        #expect(MatrixJSON.encode(LoginAnswer(userID: "@a:gov.example", deviceID: "D", accessToken: "t/1", homeServer: "gov.example"))
            == #"{"access_token":"t/1","device_id":"D","home_server":"gov.example","user_id":"@a:gov.example"}"#)
        #expect(MatrixJSON.encode(JoinedMembersAnswer(joined: ["@a:gov.example": .init()]))
            == #"{"joined":{"@a:gov.example":{"avatar_url":null,"display_name":null}}}"#)
        #expect(MatrixError(.forbidden, "M_FORBIDDEN", "nee \"dus\"").body == #"{"errcode":"M_FORBIDDEN","error":"nee \"dus\""}"#)
        let receipt = ReceiptEvent(content: ["$1_2": .init(read: ["@a:gov.example": .init(ts: 5)])])
        #expect(MatrixJSON.encode(receipt) == #"{"content":{"$1_2":{"m.read":{"@a:gov.example":{"ts":5}}}},"type":"m.receipt"}"#)
    }

    @Test func aStoredEventIsIndexedFromItsHeadAndAMalformedOneIsDropped() {
        let member = Array(#"{"content":{"membership":"join","displayname":"a"},"sender":"@a:gov.example","state_key":"@a:gov.example","type":"m.room.member"}"#.utf8)
        let event = ChatState.clientEvent(roomID: "!r:gov.example", partition: 1, offset: 7, timestamp: 99, stored: member)
        #expect(event?.membership == "join" && event?.stateKey == "@a:gov.example" && event?.eventID == "$1_7")
        #expect(event?.json.hasPrefix(#"{"event_id":"$1_7","origin_server_ts":99,"room_id":"!r:gov.example","content":"#) == true)
        // A message whose content is not an object is still a message.
        let odd = Array(#"{"content":"x","sender":"@a:gov.example","type":"m.room.message"}"#.utf8)
        #expect(ChatState.clientEvent(roomID: "!r:gov.example", partition: 0, offset: 1, timestamp: 1, stored: odd)?.type == "m.room.message")
        #expect(ChatState.clientEvent(roomID: "!r:gov.example", partition: 0, offset: 1, timestamp: 1, stored: Array("{\"sender\":1}".utf8)) == nil)
        #expect(ChatState.clientEvent(roomID: "!r:gov.example", partition: 0, offset: 1, timestamp: 1, stored: Array("[]".utf8)) == nil)
    }
}
