/// A record of the `conversation-members` topic, keyed by conversation id:
/// `{"member": "@alice:gov.example", "membership": "join"}`. The gateway
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

    public init(member: String, membership: String) {
        self.member = member
        self.membership = membership
    }
}
