import Foundation

/// A user's push rules: the specification's server-default rule set until
/// the user changes something, then the whole set as account data
/// (`m.push_rules`, which syncs show as clients expect).
struct PushRules: Equatable {
    static let kinds = ["override", "content", "room", "sender", "underride"]
    static let accountDataType = "m.push_rules"

    /// Rules by kind, in priority order.
    var rules: [String: [JSONValue]]

    /// The specification's default rules for `userID` (client-server API,
    /// "Predefined rules"), in its order.
    static func defaults(for userID: String) -> PushRules {
        let localpart = MatrixAPI.localpart(of: userID)
        let notifySound: JSONValue = ["notify", ["set_tweak": "sound", "value": "default"], ["set_tweak": "highlight"]]
        let notifyQuiet: JSONValue = ["notify", ["set_tweak": "highlight", "value": false]]
        let notifyDefaultSound: JSONValue = ["notify", ["set_tweak": "sound", "value": "default"], ["set_tweak": "highlight", "value": false]]
        func match(_ key: String, _ pattern: String) -> JSONValue { ["kind": "event_match", "key": .string(key), "pattern": .string(pattern)] }
        func rule(_ id: String, _ conditions: [JSONValue], _ actions: JSONValue, enabled: Bool = true) -> JSONValue {
            ["rule_id": .string(id), "default": true, "enabled": .bool(enabled), "conditions": .array(conditions), "actions": actions]
        }
        let override: [JSONValue] = [
            rule(".m.rule.master", [], [], enabled: false),
            rule(".m.rule.suppress_notices", [match("content.msgtype", "m.notice")], []),
            rule(".m.rule.invite_for_me", [match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", userID)], notifyDefaultSound),
            rule(".m.rule.member_event", [match("type", "m.room.member")], []),
            rule(".m.rule.is_user_mention", [["kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": .string(userID)]], notifySound),
            rule(".m.rule.contains_display_name", [["kind": "contains_display_name"]], notifySound),
            rule(".m.rule.is_room_mention", [["kind": "event_property_is", "key": "content.m\\.mentions.room", "value": true], ["kind": "sender_notification_permission", "key": "room"]],
                 ["notify", ["set_tweak": "highlight"]]),
            rule(".m.rule.roomnotif", [["kind": "sender_notification_permission", "key": "room"], match("content.body", "@room")], ["notify", ["set_tweak": "highlight"]]),
            rule(".m.rule.tombstone", [match("type", "m.room.tombstone"), match("state_key", "")], ["notify", ["set_tweak": "highlight"]]),
            rule(".m.rule.reaction", [match("type", "m.reaction")], []),
            rule(".m.rule.room.server_acl", [match("type", "m.room.server_acl"), match("state_key", "")], []),
            rule(".m.rule.suppress_edits", [["kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"]], []),
        ]
        let content: [JSONValue] = [
            ["rule_id": ".m.rule.contains_user_name", "default": true, "enabled": true, "pattern": .string(localpart), "actions": notifySound],
        ]
        let underride: [JSONValue] = [
            rule(".m.rule.call", [match("type", "m.call.invite")], ["notify", ["set_tweak": "sound", "value": "ring"], ["set_tweak": "highlight", "value": false]]),
            rule(".m.rule.encrypted_room_one_to_one", [["kind": "room_member_count", "is": "2"], match("type", "m.room.encrypted")], notifyDefaultSound),
            rule(".m.rule.room_one_to_one", [["kind": "room_member_count", "is": "2"], match("type", "m.room.message")], notifyDefaultSound),
            rule(".m.rule.message", [match("type", "m.room.message")], notifyQuiet),
            rule(".m.rule.encrypted", [match("type", "m.room.encrypted")], notifyQuiet),
        ]
        return PushRules(rules: ["override": override, "content": content, "room": [], "sender": [], "underride": underride])
    }

    /// From stored account data (`{"global": {kind: [rule]}}`).
    init?(accountData json: String) {
        guard let object = JSONValue(parsing: json.utf8)?.members, case .object(let global)? = object["global"] else { return nil }
        var rules: [String: [JSONValue]] = [:]
        for kind in Self.kinds {
            if case .array(let list)? = global[kind] { rules[kind] = list } else { rules[kind] = [] }
        }
        self.rules = rules
    }

    init(rules: [String: [JSONValue]]) {
        self.rules = rules
    }

    /// The rule set as `GET /pushrules/global/` answers it.
    var ruleset: JSONValue { .object(rules.mapValues { .array($0) }) }

    /// The account data's content.
    var accountData: JSONValue { ["global": ruleset] }

    func index(kind: String, id: String) -> Int? {
        rules[kind]?.firstIndex { $0["rule_id"]?.string == id }
    }

    func rule(kind: String, id: String) -> JSONValue? {
        index(kind: kind, id: id).map { rules[kind]![$0] }
    }

    /// Adds or replaces a user rule: new rules go before the kind's other
    /// user rules (or `before`/`after` the named one), ahead of the defaults.
    mutating func put(kind: String, id: String, rule: JSONValue, before: String?, after: String?) throws {
        guard !id.hasPrefix(".") else { throw MatrixError(.badRequest, "M_INVALID_PARAM", "rule ids starting with a dot are the server's") }
        var list = rules[kind] ?? []
        if let existing = list.firstIndex(where: { $0["rule_id"]?.string == id }) {
            list.remove(at: existing)
        }
        var position = list.firstIndex { $0["default"]?.bool != true } ?? list.firstIndex { $0["default"]?.bool == true } ?? list.count
        // Master stays first of the overrides.
        if kind == "override", list.first?["rule_id"]?.string == ".m.rule.master" { position = max(position, 1) }
        if let anchor = before ?? after {
            guard let found = list.firstIndex(where: { $0["rule_id"]?.string == anchor }), list[found]["default"]?.bool != true else {
                throw MatrixError(.badRequest, "M_UNKNOWN", "no user rule \(anchor) to place the rule by")
            }
            position = before != nil ? found : found + 1
        }
        list.insert(rule, at: min(position, list.count))
        rules[kind] = list
    }

    /// Removes a user rule.
    mutating func delete(kind: String, id: String) throws {
        guard let index = index(kind: kind, id: id) else { throw MatrixError(.notFound, "M_NOT_FOUND", "no push rule \(id)") }
        guard rules[kind]![index]["default"]?.bool != true else { throw MatrixError(.badRequest, "M_INVALID_PARAM", "a server-default rule cannot be deleted") }
        rules[kind]!.remove(at: index)
    }

    /// Sets one attribute (`enabled` or `actions`) of a rule.
    mutating func set(kind: String, id: String, attribute: String, value: JSONValue) throws {
        guard let index = index(kind: kind, id: id), case .object(var rule) = rules[kind]![index] else {
            throw MatrixError(.notFound, "M_NOT_FOUND", "no push rule \(id)")
        }
        rule[attribute] = value
        rules[kind]![index] = .object(rule)
    }
}
