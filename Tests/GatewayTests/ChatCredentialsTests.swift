import Testing

@testable import Gateway

/// What `chat-accounts` records make of an account, in both key layouts,
/// and which accounts need a record before the topic may be compacted.
@Suite struct ChatCredentialsTests {
    let credentials = ChatCredentials()
    var next: Int64 = 0

    mutating func apply(_ key: [UInt8], _ record: AccountRecord?) {
        credentials.applyAccount(StoredRecord(offset: next, timestamp: 0, key: key, value: record.map { MatrixJSON.encodeBytes($0) }, headers: []))
        next += 1
    }

    @Test mutating func theFirstRegistrationWinsAndOperatorsAndRemovalsDecide() {
        apply(Array("@a:gov".utf8) + Array("\u{0}r\u{0}one".utf8), AccountRecord(passwordHash: "first"))
        apply(Array("@a:gov".utf8) + Array("\u{0}r\u{0}two".utf8), AccountRecord(passwordHash: "second"))
        #expect(credentials.account("@a:gov")?.hash == "first")
        #expect(credentials.account("@a:gov")?.offset == 0, "the winner is the registration at the lowest offset")
        apply(Array("@a:gov".utf8), AccountRecord(passwordHash: "set", setBy: "operator"))
        #expect(credentials.account("@a:gov")?.hash == "set")
        apply(Array("@a:gov".utf8), AccountRecord(passwordHash: "", setBy: "operator", removed: true))
        #expect(credentials.account("@a:gov") != nil && credentials.account("@a:gov")?.hash == nil, "a removed name stays taken")
        // A registration after the removal changes nothing.
        apply(Array("@a:gov".utf8) + Array("\u{0}r\u{0}three".utf8), AccountRecord(passwordHash: "late"))
        #expect(credentials.account("@a:gov")?.hash == nil)
        #expect(credentials.unrepairedAccounts.isEmpty, "records of the new layout need no rewrite")
    }

    @Test mutating func recordsOfTheOldLayoutAreListedUntilAKeptRecordFollows() {
        // Old layout: registrations and a null under the user id.
        apply(Array("@race:gov".utf8), AccountRecord(passwordHash: "first"))
        apply(Array("@race:gov".utf8), AccountRecord(passwordHash: "second"))
        apply(Array("@gone:gov".utf8), AccountRecord(passwordHash: "x"))
        apply(Array("@gone:gov".utf8), nil)
        apply(Array("@set:gov".utf8), AccountRecord(passwordHash: "op", setBy: "operator"))
        #expect(credentials.account("@race:gov")?.hash == "first")
        let pending = credentials.unrepairedAccounts
        #expect(pending.map(\.user) == ["@gone:gov", "@race:gov"])
        #expect(pending.first { $0.user == "@race:gov" }?.hash == "first")
        #expect(pending.first { $0.user == "@gone:gov" }.map { $0.hash == nil } == true)
        apply(Array("@race:gov".utf8), AccountRecord(passwordHash: "first", setBy: "kept"))
        apply(Array("@gone:gov".utf8), AccountRecord(passwordHash: "", setBy: "kept", removed: true))
        #expect(credentials.unrepairedAccounts.isEmpty)
        #expect(credentials.account("@race:gov")?.hash == "first" && credentials.account("@gone:gov")?.hash == nil)
    }
}
