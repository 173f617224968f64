import ChatWire
import Testing

@testable import Gateway

/// The fold of chat-relations: what a target's aggregation keeps.
@Suite struct RelationsTableTests {
    static func relating(_ id: String, _ sender: String, at timestamp: Int64) -> RelationsTable.Relating {
        .init(eventID: id, sender: sender, type: "m.room.message", timestamp: timestamp, json: "{\"event_id\":\"\(id)\"}")
    }

    @Test func aRecordReadTwiceCountsOnceAndTheNewestIsByTimeThenID() {
        let table = RelationsTable()
        #expect(table.aggregation(of: "$root", in: "!r:x") == nil)
        table.add(roomID: "!r:x", target: "$root", relType: "m.thread", Self.relating("$b", "@bob:x", at: 20))
        table.add(roomID: "!r:x", target: "$root", relType: "m.thread", Self.relating("$a", "@carol:x", at: 20))
        table.add(roomID: "!r:x", target: "$root", relType: "m.thread", Self.relating("$b", "@bob:x", at: 20))
        table.add(roomID: "!r:x", target: "$root", relType: "m.thread", Self.relating("$c", "@bob:x", at: 10))
        let thread = table.aggregation(of: "$root", in: "!r:x")
        #expect(thread?.threadEvents.count == 3)
        #expect(thread?.threadNewest?.eventID == "$b", "same time: the greater event id is newer")
        #expect(thread?.threadParticipants == ["@bob:x", "@carol:x"])
    }

    @Test func editsAndReferencesAreKeptOnceAndAnnotationsNotAtAll() {
        let table = RelationsTable()
        table.add(roomID: "!r:x", target: "$root", relType: "m.annotation", Self.relating("$r", "@bob:x", at: 1))
        #expect(table.aggregation(of: "$root", in: "!r:x") == nil, "reactions are left to /relations")
        table.add(roomID: "!r:x", target: "$root", relType: "m.replace", Self.relating("$e1", "@a:x", at: 5))
        table.add(roomID: "!r:x", target: "$root", relType: "m.replace", Self.relating("$e1", "@a:x", at: 5))
        table.add(roomID: "!r:x", target: "$root", relType: "m.reference", Self.relating("$ref", "@a:x", at: 6))
        table.add(roomID: "!r:x", target: "$root", relType: "m.reference", Self.relating("$ref", "@a:x", at: 6))
        let aggregation = table.aggregation(of: "$root", in: "!r:x")
        #expect(aggregation?.edits.map(\.eventID) == ["$e1"])
        #expect(aggregation?.references == ["$ref"])
        #expect(aggregation?.threadNewest == nil)
    }

    @Test func aRelationFromAnotherRoomIsNotBundled() {
        let table = RelationsTable()
        table.add(roomID: "!elsewhere:x", target: "$root", relType: "m.thread", Self.relating("$t", "@mallory:x", at: 1))
        #expect(table.aggregation(of: "$root", in: "!r:x") == nil)
        #expect(table.aggregation(of: "$root", in: "!elsewhere:x")?.threadEvents == ["$t"])
    }
}
