/// A room's `m.room.power_levels`, with the specification's defaults for
/// what it leaves out (and, before the room has one, its creator at 100).
struct PowerLevels: Sendable, Equatable {
    var users: [String: Int64] = [:]
    var usersDefault: Int64 = 0
    var events: [String: Int64] = [:]
    var eventsDefault: Int64 = 0
    var stateDefault: Int64 = 50
    var invite: Int64 = 0
    var kick: Int64 = 50
    var ban: Int64 = 50
    var redact: Int64 = 50
    /// Levels a sender needs for notifications of a kind (`room`: `@room`).
    var notifications: [String: Int64] = [:]

    /// No power levels event yet: the creator may do anything.
    static func beforeAny(creator: String?) -> PowerLevels {
        var levels = PowerLevels()
        if let creator { levels.users[creator] = 100 }
        levels.stateDefault = 0
        return levels
    }

    init() {}

    init(content: JSONValue) {
        func int(_ value: JSONValue?) -> Int64? {
            switch value {
            case .int(let number)?: number
            case .string(let text)?: Int64(text)
            case .double(let number)?: Int64(exactly: number.rounded(.towardZero))
            default: nil
            }
        }
        if case .object(let users)? = content["users"] { self.users = users.compactMapValues(int) }
        if case .object(let events)? = content["events"] { self.events = events.compactMapValues(int) }
        if case .object(let notifications)? = content["notifications"] { self.notifications = notifications.compactMapValues(int) }
        usersDefault = int(content["users_default"]) ?? usersDefault
        eventsDefault = int(content["events_default"]) ?? eventsDefault
        stateDefault = int(content["state_default"]) ?? stateDefault
        invite = int(content["invite"]) ?? invite
        kick = int(content["kick"]) ?? kick
        ban = int(content["ban"]) ?? ban
        redact = int(content["redact"]) ?? redact
    }

    func level(of user: String) -> Int64 { users[user] ?? usersDefault }

    /// The level needed to send an event of `type` (a state event or not).
    func required(_ type: String, state: Bool) -> Int64 {
        events[type] ?? (state ? stateDefault : eventsDefault)
    }

    /// Why `user` may not replace these levels with `new`, or nil when they
    /// may: every level that changes, before and after, must be at most the
    /// user's own, and other users at or above it cannot be changed.
    func refusal(of new: PowerLevels, by user: String) -> String? {
        let own = level(of: user)
        let scalars: [(String, Int64, Int64)] = [
            ("users_default", usersDefault, new.usersDefault), ("events_default", eventsDefault, new.eventsDefault), ("state_default", stateDefault, new.stateDefault),
            ("invite", invite, new.invite), ("kick", kick, new.kick), ("ban", ban, new.ban), ("redact", redact, new.redact),
        ]
        for (name, old, changed) in scalars where old != changed && max(old, changed) > own {
            return "\(name) cannot be changed beyond your own level \(own)"
        }
        for type in Set(events.keys).union(new.events.keys) {
            let old = events[type]
            let changed = new.events[type]
            if old != changed, max(old ?? .min, changed ?? .min) > own { return "the level of \(type) cannot be changed beyond your own level \(own)" }
        }
        for member in Set(users.keys).union(new.users.keys) {
            let old = users[member]
            let changed = new.users[member]
            guard old != changed else { continue }
            if max(old ?? .min, changed ?? .min) > own { return "\(member)'s level cannot be set beyond your own level \(own)" }
            if member != user, (old ?? usersDefault) >= own { return "\(member) is at or above your level" }
        }
        return nil
    }
}
