import ChatWire
import Foundation
import KafkaWire
import Testing

@testable import Fanout

/// The fan-out's membership: the membership topic, overtaken by the changes
/// member events carry in the conversation's own partition.
@Suite("Fan-out membership")
struct MembershipIndexTests {
    let room = Array("!room:gov.test".utf8)

    @Test("a join seen in the conversation counts before the membership topic shows it")
    func joinAheadOfTheTopic() {
        var state = MembershipIndex.State()
        state.apply(conversation: room, member: "@ann", membership: "join")
        state.observe(MembershipChange(member: "@ben", membership: "join"), in: room)
        #expect(Set(state.joined(room)) == ["@ann", "@ben"])
        #expect(state.conversations["@ben"] == [room])
        state.apply(conversation: room, member: "@ben", membership: "join")
        #expect(state.ahead.isEmpty)
        #expect(Set(state.joined(room)) == ["@ann", "@ben"])
    }

    @Test("an older change the topic catches up with does not undo a newer one seen ahead")
    func laggingTopicDoesNotUndo() {
        var state = MembershipIndex.State()
        state.apply(conversation: room, member: "@ben", membership: "invite")
        state.observe(MembershipChange(member: "@ben", membership: "join"), in: room)
        state.observe(MembershipChange(member: "@ben", membership: "leave"), in: room)
        #expect(state.joined(room).isEmpty)
        // The topic now shows the join, then the leave.
        state.apply(conversation: room, member: "@ben", membership: "join")
        #expect(state.joined(room).isEmpty, "the leave seen ahead still holds")
        state.apply(conversation: room, member: "@ben", membership: "leave")
        #expect(state.ahead.isEmpty)
        #expect(state.joined(room).isEmpty)
    }

    @Test("a change the topic already shows leaves nothing ahead")
    func alreadyShown() {
        var state = MembershipIndex.State()
        state.apply(conversation: room, member: "@ben", membership: "join")
        state.observe(MembershipChange(member: "@ben", membership: "join"), in: room)
        #expect(state.ahead.isEmpty)
        #expect(state.joined(room) == ["@ben"])
    }

    @Test("the header a member event carries is read back; other headers are not changes")
    func carriedHeader() throws {
        let change = MembershipChange(member: "@ben", membership: "join")
        let value = try Array(JSONEncoder().encode(change))
        #expect(MembershipIndex.carried([RecordHeader(key: Array("txn".utf8), value: [1]), RecordHeader(key: MembershipChange.headerKey, value: value)]) == change)
        #expect(MembershipIndex.carried([RecordHeader(key: Array("txn".utf8), value: value)]) == nil)
        #expect(MembershipIndex.carried([RecordHeader(key: MembershipChange.headerKey, value: Array("not json".utf8))]) == nil)
    }
}
