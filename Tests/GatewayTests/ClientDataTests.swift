import ChatWire
import Core
import Testing

@testable import Gateway

/// What clients keep per user (account data, filters, profiles, device
/// names), typing, push rules and transaction ids in events.
@Suite struct ClientDataTests {
    @Test func userDataKeysRoundTripAndForeignKeysAreRefused() {
        let keys: [UserDataKey] = [
            .accountData(user: "@a:gov.example", room: nil, type: "m.direct"),
            .accountData(user: "@a:gov.example", room: "!r:gov.example", type: "m.tag"),
            .filter(user: "@a:gov.example", id: "f1"), .profile(user: "@a:gov.example"), .device(user: "@a:gov.example", id: "PHONE"),
        ]
        for key in keys { #expect(UserDataKey(key.bytes) == key) }
        for bad in ["", "a\u{0}@a", "z\u{0}@a\u{0}b", "p\u{0}@a\u{0}extra"] { #expect(UserDataKey(Array(bad.utf8)) == nil, "accepted \(bad)") }
    }

    @Test func everyToDeviceMessageIsKeptWhereUserRecordsAreCompacted() {
        #expect(ChatTopicNames.compacted.contains(ChatTopicNames.userData))
        #expect(ChatTopicNames.compacted.contains(ChatTopicNames.redactions))
        #expect(!ChatTopicNames.compacted.contains(ChatTopicNames.toDevice))
    }

    @Test func accountDataIsShownSinceItsOffsetAndOnlyToItsUser() {
        let table = UserDataTable()
        #expect(table.apply(.accountData(user: "@a:x", room: nil, type: "m.direct"), json: "{\"@b:x\":[\"!r:x\"]}", offset: 3))
        #expect(table.apply(.accountData(user: "@a:x", room: "!r:x", type: "m.tag"), json: "{\"tags\":{}}", offset: 5))
        // A filter or a profile is not something a sync shows.
        #expect(!table.apply(.filter(user: "@a:x", id: "f"), json: "{}", offset: 6))
        #expect(table.accountData(user: "@a:x", since: nil).keys.sorted() == ["m.direct"])
        #expect(table.accountData(user: "@a:x", since: 4).isEmpty)
        #expect(table.roomAccountData(user: "@a:x", room: "!r:x", since: 5).keys.sorted() == ["m.tag"])
        #expect(table.changed(user: "@a:x", since: 5) && !table.changed(user: "@a:x", since: 6))
        #expect(!table.changed(user: "@b:x", since: 0))
        #expect(table.accountData(user: "@b:x", since: nil).isEmpty)
        // A null removes a device's name.
        table.apply(.device(user: "@a:x", id: "D"), json: "{\"display_name\":\"laptop\"}", offset: 7)
        table.apply(.device(user: "@a:x", id: "D"), json: nil, offset: 8)
        #expect(table.deviceName(user: "@a:x", id: "D") == nil)
    }

    @Test func typingChangesTakeSerialsAndExpire() {
        let typing = TypingTable()
        #expect(typing.set(room: "!r", user: "@a", typing: true, until: 1_000) == 1)
        // A renewal is no change.
        #expect(typing.set(room: "!r", user: "@a", typing: true, until: 2_000) == nil)
        #expect(typing.typing(room: "!r", since: 0, now: 500) == ["@a"])
        #expect(typing.typing(room: "!r", since: 1, now: 500) == nil)
        // A token of another gateway (a serial past this one's) sees the room as it is.
        #expect(typing.typing(room: "!r", since: 9, now: 500) == ["@a"])
        #expect(typing.expire(now: 1_999).isEmpty)
        #expect(typing.expire(now: 2_000) == ["!r"])
        #expect(typing.typing(room: "!r", since: 1, now: 2_000) == [])
        #expect(typing.typing(room: "!other", since: 0, now: 0) == nil)
    }

    @Test func pushRulesStartAsTheSpecsDefaultsAndUserRulesGoBeforeThem() throws {
        var rules = PushRules.defaults(for: "@alice:gov.example")
        #expect(rules.rules["override"]?.first?["rule_id"]?.string == ".m.rule.master")
        #expect(rules.rules["content"]?.first?["pattern"]?.string == "alice")
        #expect(rules.rules["underride"]?.map { $0["rule_id"]?.string ?? "" }.contains(".m.rule.message") == true)
        try rules.put(kind: "override", id: "mute-bot", rule: ["rule_id": "mute-bot", "default": false, "enabled": true, "actions": []], before: nil, after: nil)
        // After master, before every other default.
        #expect(rules.rules["override"]?.map { $0["rule_id"]?.string ?? "" }.prefix(3) == [".m.rule.master", "mute-bot", ".m.rule.suppress_notices"])
        try rules.set(kind: "override", id: ".m.rule.master", attribute: "enabled", value: true)
        #expect(rules.rule(kind: "override", id: ".m.rule.master")?["enabled"] == true)
        #expect(throws: MatrixError.self) { try rules.delete(kind: "override", id: ".m.rule.master") }
        #expect(throws: MatrixError.self) { try rules.put(kind: "room", id: ".mine", rule: [:], before: nil, after: nil) }
        try rules.delete(kind: "override", id: "mute-bot")
        // Stored and read back whole.
        let stored = try #require(PushRules(accountData: MatrixJSON.encode(rules.accountData)))
        #expect(stored == rules)
    }

    @Test func theSendingDeviceSeesItsTransactionIDAndNoOneElseDoes() {
        let withSequence = ChatState.clientEvent(roomID: "!r", partition: 0, offset: 4, timestamp: 1, stored: Array("{\"content\":{},\"sender\":\"@a:x\",\"type\":\"m.room.message\"}".utf8), sequence: 2)
        var event = try! #require(withSequence)
        event.transaction = "@a:x|PHONE|t|1"
        let own = Session(userID: "@a:x", deviceID: "PHONE")
        #expect(event.json(forDevice: own.devicePrefix)?.contains("\"unsigned\":{\"transaction_id\":\"t|1\",\"postduif.seq\":2}") == true)
        #expect(event.json(forDevice: Session(userID: "@a:x", deviceID: "LAPTOP").devicePrefix) == nil)
        #expect(Session.devicePrefix(ofTransaction: event.transaction!) == own.devicePrefix)
        event.sequence = nil
        #expect(event.json(forDevice: own.devicePrefix)?.hasPrefix("{\"unsigned\":{\"transaction_id\":\"t|1\"},\"event_id\"") == true)
    }
}
