import Testing

@testable import Gateway

/// `RoomEvent.json(addingUnsigned:)`, which splices a member into the
/// event's text rather than parsing it.
@Suite struct AddingUnsignedTests {
    func event(_ json: String, sequence: UInt64? = nil) -> RoomEvent {
        RoomEvent(roomID: "!r:gov.example", eventID: "$0_1", type: "m.room.message", sender: "@a:gov.example", partition: 0, offset: 1, sequence: sequence, json: json)
    }

    func object(_ text: String) -> JSONValue? { JSONValue(parsing: Array(text.utf8)) }

    @Test func theMemberJoinsTheEventsFirstUnsignedWhereverClientEventPutIt() {
        let stored = "{\"content\":{\"body\":\"caf\u{E9} \\\"unsigned\\\":{ \u{1F600}\"},\"sender\":\"@a:gov.example\",\"type\":\"m.room.message\"}"
        let made = ChatState.clientEvent(roomID: "!r:gov.example", partition: 0, offset: 1, timestamp: 5, stored: Array(stored.utf8), sequence: 9)
        guard let made else {
            Issue.record("the stored event was refused")
            return
        }
        #expect(made.sequence == 9)
        let added = made.json(addingUnsigned: "\"transaction_id\":\"t1\"")
        let parsed = object(added)
        #expect(parsed?["unsigned"] == .object(["transaction_id": .string("t1"), "postduif.seq": .int(9)]), "\(added)")
        #expect(parsed?["content"]?["body"] == .string("caf\u{E9} \"unsigned\":{ \u{1F600}"))
    }

    @Test func anEventWithUnsignedInFrontOrNoneGetsItInFront() {
        let front = event("{\"unsigned\":{\"age\":3},\"content\":{\"body\":\"\u{4E2D}\"}}").json(addingUnsigned: "\"transaction_id\":\"t\"")
        #expect(front.hasPrefix("{\"unsigned\":{\"transaction_id\":\"t\","))
        #expect(object(front)?["unsigned"] == .object(["transaction_id": .string("t"), "age": .int(3)]))
        // Without a sequence, an "unsigned" further on could be inside the
        // content, so a new one goes in front.
        let none = event("{\"content\":{\"note\":\"\\\"unsigned\\\":{\"},\"type\":\"x\"}").json(addingUnsigned: "\"k\":1")
        #expect(none.hasPrefix("{\"unsigned\":{\"k\":1},\"content\""))
        #expect(object(none)?["content"]?["note"] == .string("\"unsigned\":{"))
    }
}

/// `StoredEventHead`: what every delivered event is indexed by.
@Suite struct StoredEventHeadTests {
    func head(_ text: String) -> StoredEventHead? { StoredEventHead(parsing: Array(text.utf8)) }

    @Test func aHeadNeedsAnObjectWithAStringTypeAndSender() {
        #expect(head("{\"type\":\"m.room.message\",\"sender\":\"@a:gov.example\",\"content\":{}}")?.type == "m.room.message")
        #expect(head("{\"type\":\"m.room.message\",\"content\":{}}") == nil)
        #expect(head("{\"type\":7,\"sender\":\"@a:gov.example\"}") == nil)
        #expect(head("[\"type\",\"sender\"]") == nil)
        #expect(head("{\"type\":\"x\",\"sender\":\"@a:gov.example\"") == nil)
    }

    @Test func aMembershipIsReadFromMemberEventsAloneAndAStateKeyOnlyWhenAString() {
        let member = head("{\"type\":\"m.room.member\",\"sender\":\"@a:gov.example\",\"state_key\":\"@b:gov.example\",\"content\":{\"membership\":\"invite\"}}")
        #expect(member?.membership == "invite")
        #expect(member?.stateKey == "@b:gov.example")
        let other = head("{\"type\":\"m.room.name\",\"sender\":\"@a:gov.example\",\"state_key\":\"\",\"content\":{\"membership\":\"join\"}}")
        #expect(other?.membership == nil)
        #expect(other?.stateKey == "")
        #expect(head("{\"type\":\"m.room.message\",\"sender\":\"@a:gov.example\",\"state_key\":5}")?.stateKey == nil)
    }
}
