/// A record of the `conversation-members` topic, keyed by conversation id:
/// `{"member": "@alice:gov.example", "membership": "join"}`. The gateway
/// writes one before each member event; the broker's fan-out routes a
/// conversation's messages by them.
public struct MembershipChange: Codable, Sendable, Equatable {
    public var member: String
    /// `join`, `invite`, `leave` or `ban`: the fan-out delivers to `join`.
    public var membership: String

    public init(member: String, membership: String) {
        self.member = member
        self.membership = membership
    }
}
