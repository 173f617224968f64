/// A user's push rules made ready to run against events: what the unread
/// counts of `/sync` come from (client-server API, "Push Rules"). Built
/// once per version of the user's rules, not per event.
struct PushEvaluator: Sendable {
    enum Condition: Sendable {
        /// A glob (`*`, `?`, case-insensitive) against a string property:
        /// the whole value, or, for `content.body`, any run of it that
        /// begins and ends at word boundaries.
        case eventMatch(key: [String], pattern: [Unicode.Scalar], words: Bool)
        case containsDisplayName
        case memberCount(comparison: String, count: Int)
        case senderPermission(String)
        case propertyIs(key: [String], value: JSONValue)
        case propertyContains(key: [String], value: JSONValue)
        /// A condition this server does not know never matches (the
        /// specification's rule), so its rule never applies.
        case never
    }

    struct Rule: Sendable {
        var conditions: [Condition]
        var notify: Bool
        var highlight: Bool
    }

    /// What a rule decides for one event.
    struct Outcome: Equatable, Sendable {
        var notify: Bool
        var highlight: Bool
        static let silent = Outcome(notify: false, highlight: false)
    }

    /// An event as the rules see it.
    struct Event {
        let type: String
        let sender: String
        let stateKey: String?
        let roomID: String
        /// The event's `content`, parsed once for every member.
        let content: JSONValue?
        /// `content.body` lowercased, made once for every member and rule.
        let body: [Unicode.Scalar]?
        /// The other string properties rules match most, lowercased once.
        let lowered: [[String]: [Unicode.Scalar]]

        init(type: String, sender: String, stateKey: String?, roomID: String, content: JSONValue?, body: [Unicode.Scalar]? = nil) {
            self.type = type
            self.sender = sender
            self.stateKey = stateKey
            self.roomID = roomID
            self.content = content
            if let body {
                self.body = body
            } else if case .string(let text)? = content?["body"] {
                self.body = PushEvaluator.scalars(text)
            } else {
                self.body = nil
            }
            var lowered: [[String]: [Unicode.Scalar]] = [:]
            lowered[["type"]] = PushEvaluator.scalars(type)
            lowered[["sender"]] = PushEvaluator.scalars(sender)
            lowered[["room_id"]] = PushEvaluator.scalars(roomID)
            if let stateKey { lowered[["state_key"]] = PushEvaluator.scalars(stateKey) }
            for key in ["msgtype", "membership"] {
                if case .string(let text)? = content?[key] { lowered[["content", key]] = PushEvaluator.scalars(text) }
            }
            self.lowered = lowered
        }

        /// Whether the default rules decide alike for every member of a
        /// room of a given size: nothing of the event names a member (no
        /// `body` for a display name or user name to appear in, no
        /// `m.mentions`, no `state_key` for an invite), and the rules'
        /// other conditions read the event and the room alone. An
        /// encrypted message is such an event: its mentions and body are
        /// in its ciphertext.
        var decidedAlikeByDefaultRules: Bool {
            body == nil && stateKey == nil && content?["m.mentions"] == nil
        }
    }

    /// What the rules need to know about the room and the user.
    struct Facts {
        var userID: String
        /// The user's display name in the room, lowercased.
        var displayName: [Unicode.Scalar]?
        var joinedMembers: Int
        var levels: PowerLevels
    }

    /// Enabled rules in evaluation order: override, content, room, sender, underride.
    let rules: [Rule]

    init(_ pushRules: PushRules) {
        var rules: [Rule] = []
        for kind in PushRules.kinds {
            for rule in pushRules.rules[kind] ?? [] where rule["enabled"]?.bool ?? true {
                let conditions: [Condition]
                switch kind {
                case "content":
                    guard let pattern = rule["pattern"]?.string else { continue }
                    conditions = [.eventMatch(key: ["content", "body"], pattern: Self.scalars(pattern), words: true)]
                case "room":
                    guard let id = rule["rule_id"]?.string else { continue }
                    conditions = [.eventMatch(key: ["room_id"], pattern: Self.scalars(id), words: false)]
                case "sender":
                    guard let id = rule["rule_id"]?.string else { continue }
                    conditions = [.eventMatch(key: ["sender"], pattern: Self.scalars(id), words: false)]
                default:
                    guard case .array(let list)? = rule["conditions"] else { continue }
                    conditions = list.map(Self.condition)
                }
                var outcome = Outcome.silent
                if case .array(let actions)? = rule["actions"] {
                    for action in actions {
                        if action.string == "notify" { outcome.notify = true }
                        if action["set_tweak"]?.string == "highlight" { outcome.highlight = action["value"]?.bool ?? true }
                    }
                }
                rules.append(Rule(conditions: conditions, notify: outcome.notify, highlight: outcome.highlight))
            }
        }
        self.rules = rules
    }

    /// The first rule whose conditions all hold decides; none: no notification.
    func outcome(_ event: Event, _ facts: Facts) -> Outcome {
        for rule in rules where rule.conditions.allSatisfy({ Self.holds($0, event, facts) }) {
            return Outcome(notify: rule.notify, highlight: rule.notify && rule.highlight)
        }
        return .silent
    }

    static func condition(_ value: JSONValue) -> Condition {
        switch value["kind"]?.string {
        case "event_match":
            guard let key = value["key"]?.string, let pattern = value["pattern"]?.string else { return .never }
            return .eventMatch(key: path(key), pattern: scalars(pattern), words: key == "content.body")
        case "contains_display_name":
            return .containsDisplayName
        case "room_member_count":
            guard let spec = value["is"]?.string else { return .never }
            let comparison = String(spec.prefix { "<>=".contains($0) })
            guard let count = Int(spec.dropFirst(comparison.count)), ["", "==", "<", ">", "<=", ">="].contains(comparison) else { return .never }
            return .memberCount(comparison: comparison, count: count)
        case "sender_notification_permission":
            return value["key"]?.string.map(Condition.senderPermission) ?? .never
        case "event_property_is":
            guard let key = value["key"]?.string, let expected = value["value"] else { return .never }
            return .propertyIs(key: path(key), value: expected)
        case "event_property_contains":
            guard let key = value["key"]?.string, let expected = value["value"] else { return .never }
            return .propertyContains(key: path(key), value: expected)
        default:
            return .never
        }
    }

    static func holds(_ condition: Condition, _ event: Event, _ facts: Facts) -> Bool {
        switch condition {
        case .eventMatch(let key, let pattern, let words):
            if key == ["content", "body"] {
                guard let body = event.body else { return false }
                return globMatches(pattern, in: body, words: words)
            }
            if let text = event.lowered[key] { return globMatches(pattern, in: text, words: words) }
            guard case .string(let text)? = property(key, of: event) else { return false }
            return globMatches(pattern, in: scalars(text), words: words)
        case .containsDisplayName:
            guard let name = facts.displayName, !name.isEmpty, let body = event.body else { return false }
            return globMatches(name, in: body, words: true, literal: true)
        case .memberCount(let comparison, let count):
            let members = facts.joinedMembers
            switch comparison {
            case "<": return members < count
            case ">": return members > count
            case "<=": return members <= count
            case ">=": return members >= count
            default: return members == count
            }
        case .senderPermission(let key):
            return facts.levels.level(of: event.sender) >= facts.levels.notifications[key, default: 50]
        case .propertyIs(let key, let value):
            return property(key, of: event) == value
        case .propertyContains(let key, let value):
            guard case .array(let list)? = property(key, of: event) else { return false }
            return list.contains(value)
        case .never:
            return false
        }
    }

    /// A dotted property of the event (`content.m\.mentions.user_ids`).
    static func property(_ key: [String], of event: Event) -> JSONValue? {
        guard let first = key.first else { return nil }
        var value: JSONValue?
        switch first {
        case "type": value = .string(event.type)
        case "sender": value = .string(event.sender)
        case "room_id": value = .string(event.roomID)
        case "state_key": value = event.stateKey.map(JSONValue.string)
        case "content": value = event.content
        default: return nil
        }
        for part in key.dropFirst() {
            value = value?[part]
        }
        return value
    }

    /// A key split at its dots; `\.` is a dot inside a part, `\\` a backslash.
    static func path(_ key: String) -> [String] {
        var parts: [String] = []
        var part = ""
        var escaped = false
        for character in key {
            if escaped {
                part.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == "." {
                parts.append(part)
                part = ""
            } else {
                part.append(character)
            }
        }
        parts.append(part)
        return parts
    }

    static func scalars(_ text: String) -> [Unicode.Scalar] { Array(text.lowercased().unicodeScalars) }

    /// A pattern without wildcards: equal to the whole text, or found in it
    /// with word boundaries on both sides.
    static func literalMatches(_ pattern: [Unicode.Scalar], in text: [Unicode.Scalar], words: Bool) -> Bool {
        guard words else { return pattern == text }
        guard let first = pattern.first, pattern.count <= text.count else { return pattern.isEmpty }
        var start = 0
        while start + pattern.count <= text.count {
            if text[start] == first, start == 0 || !isWord(text[start - 1]) {
                let end = start + pattern.count
                if end == text.count || !isWord(text[end]), text[start..<end].elementsEqual(pattern) { return true }
            }
            start += 1
        }
        return false
    }

    static func isWord(_ scalar: Unicode.Scalar) -> Bool {
        // ASCII without the Unicode tables: most bodies are mostly ASCII.
        if scalar.isASCII {
            let value = scalar.value
            return value == 0x5F || (value >= 0x30 && value <= 0x39) || (value >= 0x61 && value <= 0x7A) || (value >= 0x41 && value <= 0x5A)
        }
        return scalar.properties.isAlphabetic || scalar.properties.numericType != nil
    }

    /// Whether a lowercased glob matches `text`: whole, or with `words` any
    /// run of it with a non-word character (or an end) on either side. One
    /// pass over the text with the set of pattern positions reached, so a
    /// long body costs its length times the pattern's, never more.
    static func globMatches(_ pattern: [Unicode.Scalar], in text: [Unicode.Scalar], words: Bool, literal: Bool = false) -> Bool {
        let count = pattern.count
        if literal || !pattern.contains(where: { $0 == "*" || $0 == "?" }) {
            return literalMatches(pattern, in: text, words: words)
        }
        var active = [Bool](repeating: false, count: count + 1)
        var next = active
        func enter(_ state: Int, _ set: inout [Bool]) {
            var position = state
            set[position] = true
            while !literal, position < count, pattern[position] == "*" {
                position += 1
                set[position] = true
            }
        }
        for index in 0...text.count {
            if index == 0 || (words && !isWord(text[index - 1])) { enter(0, &active) }
            if active[count], index == text.count || (words && !isWord(text[index])) { return true }
            guard index < text.count else { break }
            let scalar = text[index]
            for position in 0..<count where active[position] {
                let wanted = pattern[position]
                if !literal, wanted == "*" {
                    enter(position, &next)
                } else if (!literal && wanted == "?") || wanted == scalar {
                    enter(position + 1, &next)
                }
            }
            swap(&active, &next)
            for position in next.indices { next[position] = false }
        }
        return false
    }
}
