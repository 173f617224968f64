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
        let deviceListChanged = keys.apply(key, json: json, offset: record.offset)
        // The position first, then the wake: the woken sync finds it.
        cache.advance(userData: record.offset + 1)
        if deviceListChanged {
            // Everyone who shares a room with the user is told (`device_lists`).
            wake(users: sharingRooms(with: key.user))
        } else if shown {
            wake(users: [key.user])
        }
    }

    /// `user` and the members of every room they are in.
    func sharingRooms(with user: String) -> Set<String> {
        var users: Set<String> = [user]
        for roomID in directory.roomIDs(of: user) where directory.membership(of: user, in: roomID) == "join" {
            users.formUnion(directory.members(of: roomID, in: ["join"]))
        }
        return users
    }

    /// A to-device send's delivery to one device (`key`: `user\0device`),
    /// as the transaction memory knows it.
    static func toDeviceDelivery(_ transaction: String, key: String) -> String {
        transaction + "\u{0}" + key
    }

    /// A chat-to-device record (key `user\0device`): queued for the device,
    /// which is woken.
    func applyToDevice(_ record: StoredRecord) {
        // Which send wrote it, for that send's retries (`MatrixAPI.sendToDevice`).
        if let transaction = Self.transaction(record.headers), let key = String(validating: record.key, as: UTF8.self) {
            transactions.remember(Self.toDeviceDelivery(transaction, key: key), eventID: "")
        }
        let parts = record.key.split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false)
        if parts.count == 2, let value = record.value, let json = String(validating: value, as: UTF8.self) {
            let user = String(decoding: parts[0], as: UTF8.self)
            toDevice.append(user: user, device: String(decoding: parts[1], as: UTF8.self), offset: record.offset, json: json)
            cache.advance(toDevice: record.offset + 1)
            wake(users: [user])
        } else {
            cache.advance(toDevice: record.offset + 1)
        }
    }

    /// A chat-typing record (key: the room; value `{"user", "typing",
    /// "timeout"}`), from this gateway or another: the typing holds for its
    /// timeout from now, on this gateway's clock.
    func applyTyping(_ record: StoredRecord, now: Int64) {
        guard let room = String(validating: record.key, as: UTF8.self), let value = record.value,
              let typing = MatrixJSON.decodeRecord(TypingRecord.self, from: value) else { return }
        setTyping(room: room, user: typing.user, typing: typing.typing, until: now + min(max(typing.timeout, 0), 30_000))
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

// The redactions tail.
extension ChatState {
    /// A chat-redactions record (key: the redacted event's id; value: the
    /// redaction event): from now on the event is served pruned, the
    /// cached copy too, and shared answers made before are dropped.
    func applyRedaction(_ record: StoredRecord) {
        guard let eventID = String(validating: record.key, as: UTF8.self), let value = record.value, let redaction = String(validating: value, as: UTF8.self),
              let roomID = MatrixJSON.decodeRecord(StoredEvent.self, from: value)?.roomID else { return }
        redactions.set(eventID, redaction: redaction)
        let parts = eventID.dropFirst().split(separator: "_")
        if parts.count == 2, let offset = Int64(parts[1]), let cached = cache.event(roomID: roomID, offset: offset),
           let pruned = MatrixAPI.pruned(cached.json, redactedBecause: redaction) {
            cache.replace(roomID: roomID, offset: offset, json: pruned)
            shared.removeAll()
        }
        wake(users: Set(directory.members(of: roomID, in: ["join"])))
    }
}
