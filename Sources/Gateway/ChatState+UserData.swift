import Foundation
import KafkaNIO

// The user-data tail and typing.
extension ChatState {
    /// A chat-user-data record: into the user's table; a change their
    /// syncs show (account data) wakes them.
    func applyUserData(_ record: StoredRecord) {
        guard let key = UserDataKey(record.key) else {
            cache.advance(userData: record.offset + 1)
            return
        }
        let json = record.value.flatMap { String(validating: $0, as: UTF8.self) }
        let shown = userData.apply(key, json: json, offset: record.offset)
        // The position first, then the wake: the woken sync finds it.
        cache.advance(userData: record.offset + 1)
        if shown { wake(users: [key.user]) }
    }

    /// `user` starts or stops typing in `room` (until `expiry`, in
    /// milliseconds of the gateway's clock); the room's members are woken.
    func setTyping(room: String, user: String, typing: Bool, until expiry: Int64) {
        guard let serial = self.typing.set(room: room, user: user, typing: typing, until: expiry) else { return }
        cache.advance(typing: serial)
        wake(users: Set(directory.members(of: room, in: ["join"])))
    }

    /// Ends typing that expired by `now` and wakes the rooms' members.
    func expireTyping(now: Int64) {
        let rooms = typing.expire(now: now)
        guard !rooms.isEmpty else { return }
        cache.advance(typing: typing.serial)
        wake(users: Set(rooms.flatMap { directory.members(of: $0, in: ["join"]) }))
    }
}
