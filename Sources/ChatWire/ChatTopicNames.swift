/// The topics Postduif's chat lives in, named once for the broker's
/// fan-out, the gateway and the log store.
public enum ChatTopicNames {
    /// Room events keyed by conversation id, with the conversation index.
    public static let conversations = "conversations"
    /// Membership changes keyed by conversation id, `{"member", "membership"}`.
    public static let members = "conversation-members"
}
