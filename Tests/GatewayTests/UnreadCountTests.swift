import ChatWire
import Core
import Logging
import Testing

@testable import Gateway

/// Push rules run against events: the specification's defaults, and a
/// user's own rules.
@Suite struct PushEvaluatorTests {
    let user = "@minister:gov.example"
    let evaluator = PushEvaluator(PushRules.defaults(for: "@minister:gov.example"))

    func facts(members: Int = 2, name: String? = "Mina", levels: PowerLevels = PowerLevels()) -> PushEvaluator.Facts {
        PushEvaluator.Facts(userID: user, displayName: name.map(PushEvaluator.scalars), joinedMembers: members, levels: levels)
    }

    func message(_ body: String, type: String = "m.room.message", msgtype: String = "m.text", sender: String = "@clerk:gov.example", extra: [String: JSONValue] = [:],
                 room: String = "!r:gov.example") -> PushEvaluator.Event {
        var content: [String: JSONValue] = ["msgtype": .string(msgtype), "body": .string(body)]
        content.merge(extra) { $1 }
        return PushEvaluator.Event(type: type, sender: sender, stateKey: nil, roomID: room, content: .object(content))
    }

    @Test func theDefaultRulesNotifyMessagesAndHighlightMentions() {
        let notify = PushEvaluator.Outcome(notify: true, highlight: false)
        let highlight = PushEvaluator.Outcome(notify: true, highlight: true)
        #expect(evaluator.outcome(message("good morning"), facts()) == notify)
        #expect(evaluator.outcome(message("good morning"), facts(members: 12)) == notify)
        // The user's name as a word, in any case; not inside another word.
        #expect(evaluator.outcome(message("Minister, the draft"), facts()) == highlight)
        #expect(evaluator.outcome(message("for the ministers"), facts()) == notify)
        #expect(evaluator.outcome(message("ask mina about it"), facts()) == highlight)
        #expect(evaluator.outcome(message("ask Minako"), facts()) == notify)
        #expect(evaluator.outcome(message("x", extra: ["m.mentions": ["user_ids": [.string(user)]]]), facts()) == highlight)
        #expect(evaluator.outcome(message("a notice", msgtype: "m.notice"), facts()) == .silent)
        #expect(evaluator.outcome(message("ciphertext", type: "m.room.encrypted"), facts()) == notify)
        let reaction = PushEvaluator.Event(type: "m.reaction", sender: "@clerk:gov.example", stateKey: nil, roomID: "!r:gov.example", content: ["m.relates_to": ["rel_type": "m.annotation"]])
        #expect(evaluator.outcome(reaction, facts()) == .silent)
        #expect(evaluator.outcome(message("* fixed", extra: ["m.relates_to": ["rel_type": "m.replace"]]), facts()) == .silent)
        let join = PushEvaluator.Event(type: "m.room.member", sender: "@clerk:gov.example", stateKey: "@clerk:gov.example", roomID: "!r:gov.example", content: ["membership": "join"])
        #expect(evaluator.outcome(join, facts()) == .silent)
        let invite = PushEvaluator.Event(type: "m.room.member", sender: "@clerk:gov.example", stateKey: user, roomID: "!r:gov.example", content: ["membership": "invite"])
        #expect(evaluator.outcome(invite, facts()) == notify)
    }

    /// What lets the gateway evaluate such an event once for a whole room:
    /// events naming no member get one outcome from every member's default
    /// rules, whoever the member and whatever their display name.
    @Test func eventsNamingNoMemberGetOneOutcomeFromEveryMembersDefaultRules() {
        let members = ["@minister:gov.example", "@clerk:gov.example", "@mina:gov.example", "@AAAA:gov.example"]
        let encrypted: JSONValue = ["algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA mina minister clerk @room", "sender_key": "mina", "session_id": "s", "device_id": "D"]
        let alike = [
            PushEvaluator.Event(type: "m.room.encrypted", sender: "@clerk:gov.example", stateKey: nil, roomID: "!r:gov.example", content: encrypted),
            PushEvaluator.Event(type: "m.reaction", sender: "@clerk:gov.example", stateKey: nil, roomID: "!r:gov.example", content: ["m.relates_to": ["rel_type": "m.annotation", "key": "mina"]]),
            PushEvaluator.Event(type: "m.call.invite", sender: "@clerk:gov.example", stateKey: nil, roomID: "!r:gov.example", content: ["call_id": "minister"]),
            PushEvaluator.Event(type: "m.room.encrypted", sender: "@mina:gov.example", stateKey: nil, roomID: "!r:gov.example", content: nil),
        ]
        for event in alike {
            #expect(event.decidedAlikeByDefaultRules)
            for size in [2, 3, 12, 100] {
                var levels = PowerLevels()
                levels.users["@clerk:gov.example"] = 100
                let outcomes = Set(members.flatMap { member in
                    ["Mina", "Minister", "clerk", nil].map { name in
                        let facts = PushEvaluator.Facts(userID: member, displayName: name.map(PushEvaluator.scalars), joinedMembers: size, levels: levels)
                        let outcome = PushEvaluator(PushRules.defaults(for: member)).outcome(event, facts)
                        return "\(outcome.notify) \(outcome.highlight)"
                    }
                })
                #expect(outcomes.count == 1, "\(event.type) in a room of \(size): \(outcomes)")
            }
        }
        // A body, mentions or a state key may name a member: evaluated per member.
        #expect(!message("hello").decidedAlikeByDefaultRules)
        let mentions = PushEvaluator.Event(type: "m.room.encrypted", sender: "@clerk:gov.example", stateKey: nil, roomID: "!r:gov.example",
                                           content: ["m.mentions": ["user_ids": [.string(user)]]])
        #expect(!mentions.decidedAlikeByDefaultRules)
        let invite = PushEvaluator.Event(type: "m.room.member", sender: "@clerk:gov.example", stateKey: user, roomID: "!r:gov.example", content: ["membership": "invite"])
        #expect(!invite.decidedAlikeByDefaultRules)
    }

    @Test func anAtRoomHighlightsOnlyFromASenderWithTheLevelForIt() {
        var levels = PowerLevels()
        levels.users["@chair:gov.example"] = 50
        #expect(evaluator.outcome(message("@room meeting at 3", sender: "@chair:gov.example"), facts(members: 12, levels: levels)).highlight)
        #expect(!evaluator.outcome(message("@room meeting at 3"), facts(members: 12, levels: levels)).highlight)
        levels.notifications["room"] = 100
        #expect(!evaluator.outcome(message("@room meeting at 3", sender: "@chair:gov.example"), facts(members: 12, levels: levels)).highlight)
    }

    @Test func aUsersOwnRulesDecideAndAnUnknownConditionNeverMatches() throws {
        var rules = PushRules.defaults(for: user)
        // A muted room, a sender always highlighted, the master switch.
        rules.rules["room"] = [["rule_id": "!muted:gov.example", "enabled": true, "actions": []]]
        rules.rules["sender"] = [["rule_id": "@pm:gov.example", "enabled": true, "actions": ["notify", ["set_tweak": "highlight"]]]]
        rules.rules["override"]!.insert(["rule_id": "future", "enabled": true, "conditions": [["kind": "some_future_kind"]], "actions": []], at: 0)
        let own = PushEvaluator(rules)
        let muted = message("hello", room: "!muted:gov.example")
        #expect(own.outcome(muted, facts()) == .silent)
        #expect(own.outcome(message("hello", sender: "@pm:gov.example"), facts()).highlight)
        #expect(own.outcome(message("hello"), facts()).notify, "a rule of a kind unknown here matched")
        let master = try #require(rules.index(kind: "override", id: ".m.rule.master"))
        rules.rules["override"]![master] = ["rule_id": ".m.rule.master", "default": true, "enabled": true, "conditions": [], "actions": []]
        #expect(PushEvaluator(rules).outcome(message("Minister!", sender: "@pm:gov.example"), facts()) == .silent)
    }

    @Test func globsMatchWholeValuesOrWordsAndStayLinear() {
        func matches(_ pattern: String, _ text: String, words: Bool = false) -> Bool {
            PushEvaluator.globMatches(PushEvaluator.scalars(pattern), in: PushEvaluator.scalars(text), words: words)
        }
        #expect(matches("m.room.*", "m.room.message"))
        #expect(!matches("m.room.*", "xm.room.message"))
        #expect(matches("m?n", "MAN"))
        #expect(!matches("m?n", "moon"))
        #expect(matches("min*ter", "deputy minister here", words: true))
        #expect(!matches("min*ter", "administer", words: true))
        #expect(matches("@room", "hey @room!", words: true))
        #expect(!matches("@room", "a@room", words: true))
        #expect(PushEvaluator.path("content.m\\.mentions.user_ids") == ["content", "m.mentions", "user_ids"])
        // A long body with a pattern of many stars ends promptly.
        let body = String(repeating: "a", count: 60_000)
        #expect(!matches("*a*a*a*a*a*b", body, words: true))
    }
}

/// Unread counts in `/sync` answers, from events put in the gateway's
/// tables by hand.
@Suite struct UnreadCountTests {
    let state = ChatState(serverName: "gov.example", timelinePartitions: 2)
    let api: MatrixAPI
    let roomID = "!r:gov.example"
    let minister = "@minister:gov.example"
    let clerk = "@clerk:gov.example"
    let aide = "@aide:gov.example"
    var partition: Int32 { state.partition(ofRoom: roomID) }

    init() {
        api = MatrixAPI(state: state, link: BrokerLink(bootstrap: "127.0.0.1:1", logger: Logger(label: "test")),
                        configuration: GatewayConfiguration(), logger: Logger(label: "test"))
        state.cache.cover([roomID], from: [partition: 0])
    }

    /// An event at the next offset of the room's partition, into the timeline
    /// (and, for state, into the directory).
    func write(_ type: String, _ sender: String, stateKey: String? = nil, content: String) {
        let offset = state.cache.position.timeline[Int(partition)]
        let key = stateKey.map { ",\"state_key\":\(JSONText.string($0))" } ?? ""
        let stored = "{\"type\":\"\(type)\",\"sender\":\"\(sender)\"\(key),\"content\":\(content)}"
        let event = ChatState.clientEvent(roomID: roomID, partition: partition, offset: offset, timestamp: 1, stored: Array(stored.utf8))!
        #expect(state.cache.append(event))
        state.cache.advance(partition: partition, to: offset + 1)
        if let stateKey {
            let stateOffset = state.cache.position.state
            state.directory.apply(event, stateKey: stateKey, offset: stateOffset)
            state.cache.advance(state: stateOffset + 1)
        }
    }

    func join(_ user: String) { write("m.room.member", user, stateKey: user, content: "{\"membership\":\"join\"}") }
    func say(_ sender: String, _ body: String) { write("m.room.message", sender, content: "{\"msgtype\":\"m.text\",\"body\":\(JSONText.string(body))}") }

    func sync(_ user: String, since: SyncPosition? = nil) throws -> (body: String, shared: String?) {
        let query = MatrixAPI.SyncQuery(session: Session(userID: user, deviceID: "D"), since: since, fullState: false, deadline: api.clock.now)
        guard case .answer(let body, let shared) = try api.syncStep(query, now: api.clock.now) else {
            Issue.record("no answer")
            return ("", nil)
        }
        return (body, shared)
    }

    func counts(_ body: String) -> String? {
        guard let range = body.range(of: "\"unread_notifications\":") else { return nil }
        return String(body[range.upperBound...].prefix { $0 != "}" }) + "}"
    }

    /// A delivered event's content comes from the delivery's own parse:
    /// the first count takes it rather than parse the event again, and the
    /// counts are what they are for an event that came any other way.
    @Test func aDeliveredEventIsParsedOnceForItsCounts() throws {
        write("m.room.create", minister, stateKey: "", content: "{}")
        join(minister)
        join(clerk)
        let since = state.cache.position
        let offset = state.cache.position.timeline[Int(partition)]
        let stored = "{\"type\":\"m.room.message\",\"sender\":\"\(clerk)\",\"content\":{\"msgtype\":\"m.text\",\"body\":\"Minister, the draft is ready\"}}"
        let delivery = GatewayPollResponse.Delivery(partition: partition, offset: offset, sequence: 1, timestamp: 1, key: Array(roomID.utf8),
                                                    value: Array(stored.utf8), headers: [])
        #expect(state.applyDelivery(delivery).contains(minister))
        state.cache.advance(partition: partition, to: offset + 1)
        #expect(state.unread.keptContentCount == 1)
        #expect(counts(try sync(minister, since: since).body) == "{\"notification_count\":1,\"highlight_count\":1}")
        #expect(state.unread.keptContentCount == 0)
        #expect(counts(try sync(clerk, since: since).body) == "{\"notification_count\":0,\"highlight_count\":0}")
    }

    @Test func countsAreWhatTheRulesNotifySinceTheReadPoint() throws {
        write("m.room.create", minister, stateKey: "", content: "{}")
        join(minister)
        join(clerk)
        // Syncs from here see the messages as a timeline delta (a first
        // sync would need the broker's history).
        let since = state.cache.position
        say(clerk, "good morning")
        say(clerk, "Minister, the draft is ready")
        write("m.room.message", clerk, content: "{\"msgtype\":\"m.notice\",\"body\":\"bot\"}")
        // The clerk's join and the notice do not notify; the mention highlights.
        #expect(counts(try sync(minister, since: since).body) == "{\"notification_count\":2,\"highlight_count\":1}")
        // Their own messages are read.
        #expect(counts(try sync(clerk, since: since).body) == "{\"notification_count\":0,\"highlight_count\":0}")
        // A receipt on the first message leaves the mention.
        state.markers.set(user: minister, roomID: roomID, markers: ["m.read": "$\(partition)_3"], offset: 0, timestamp: 1)
        state.cache.advance(markers: 1)
        #expect(counts(try sync(minister, since: since).body) == "{\"notification_count\":1,\"highlight_count\":1}")
        say(clerk, "and one more")
        #expect(counts(try sync(minister, since: since).body) == "{\"notification_count\":2,\"highlight_count\":1}")
        // Sending reads everything before.
        say(minister, "thanks")
        #expect(counts(try sync(minister, since: since).body) == "{\"notification_count\":0,\"highlight_count\":0}")
        #expect(counts(try sync(clerk, since: since).body) == "{\"notification_count\":1,\"highlight_count\":0}")
    }

    @Test func membersSharingAnAnswerEachGetTheirOwnCounts() throws {
        write("m.room.create", clerk, stateKey: "", content: "{}")
        join(clerk)
        join(minister)
        join(aide)
        say(clerk, "first")
        say(clerk, "second")
        // The aide has read the first message; the minister nothing.
        state.markers.set(user: aide, roomID: roomID, markers: ["m.read": "$\(partition)_4"], offset: 0, timestamp: 1)
        state.cache.advance(markers: 1)
        let before = state.cache.position
        say(clerk, "third")
        let ministers = try sync(minister, since: before)
        let aides = try sync(aide, since: before)
        #expect(ministers.shared != nil && aides.shared != nil, "the answers were not shared")
        #expect(ministers.shared != aides.shared, "two different bodies under one key")
        #expect(counts(ministers.body) == "{\"notification_count\":3,\"highlight_count\":0}")
        #expect(counts(aides.body) == "{\"notification_count\":2,\"highlight_count\":0}")
        // Apart from the counts, the very same body.
        #expect(ministers.body.replacingOccurrences(of: counts(ministers.body)!, with: counts(aides.body)!) == aides.body)
    }
}
