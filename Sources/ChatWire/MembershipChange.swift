/// A record of the `conversation-members` topic, keyed by conversation id
/// and member (NUL between; in the partition of the conversation id alone,
/// where its messages are): `{"member": "@alice:gov.example", "membership":
/// "join"}`. One key per member, so compaction keeps each member's latest
/// membership; records of before (keyed by the conversation id alone) read
/// the same. The gateway
/// writes one before each member event; the broker's fan-out routes a
/// conversation's messages by them. The member event in `conversations`
/// carries the same change in the header `membership`, so the fan-out
/// applies it in the conversation's own order (see MembershipIndex).
public struct MembershipChange: Codable, Sendable, Equatable {
    /// The header of a member event in `conversations` holding this change.
    public static let headerKey: [UInt8] = Array("membership".utf8)

    public var member: String
    /// `join`, `invite`, `leave` or `ban`: the fan-out delivers to `join`.
    public var membership: String

    /// A record's key: the conversation id, NUL, the member.
    public static func key(room: String, member: String) -> [UInt8] {
        Array(room.utf8) + [0] + Array(member.utf8)
    }

    /// The conversation a record's key names (the whole key in the layout of before).
    public static func conversation(ofKey key: [UInt8]) -> [UInt8] {
        guard let separator = key.firstIndex(of: 0) else { return key }
        return Array(key[..<separator])
    }

    public init(member: String, membership: String) {
        self.member = member
        self.membership = membership
    }
}
