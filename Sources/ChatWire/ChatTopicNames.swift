/// The topics Postduif's chat lives in, named once for the broker's
/// fan-out, the gateway and the log store.
public enum ChatTopicNames {
    /// Room events keyed by conversation id, with the conversation index.
    public static let conversations = "conversations"
    /// Membership changes keyed by conversation id and member, `{"member", "membership"}`.
    public static let members = "conversation-members"
    /// Rooms' current state, keyed by room, event type and state key.
    public static let state = "chat-state"
    /// Accounts (password hashes), keyed by user id (what an operator set
    /// or removed) or by user id, "r" and an id (a registration).
    public static let accounts = "chat-accounts"
    /// Access tokens by their SHA-256.
    public static let sessions = "chat-sessions"
    /// Read markers per user and room.
    public static let readMarkers = "chat-read-markers"
    /// Each user's own records: account data, push rules, filters, profile,
    /// device names (Gateway/UserDataTable.swift).
    public static let userData = "chat-user-data"
    /// Messages to devices (end-to-end encryption's key sharing), keyed by
    /// user and device id; kept for `retention.ms`, not compacted.
    public static let toDevice = "chat-to-device"
    /// Redacted events by event id: the redaction event that removed
    /// their content, which gateways serve in its place.
    public static let redactions = "chat-redactions"
    /// Events that relate to another (edits, thread replies, references)
    /// by their own event id: the client event, with the relation in its
    /// headers, which gateways fold into the aggregations they bundle in
    /// `unsigned.m.relations`.
    public static let relations = "chat-relations"
    /// Room aliases and the public room list; the first claim of an alias
    /// wins, so not compacted.
    public static let directory = "chat-directory"
    /// Uploaded files in chunks, keyed by media id.
    public static let media = "chat-media"
    /// Each uploaded file's record: where its chunks lie, who uploaded it.
    public static let mediaIndex = "chat-media-index"

    /// Who is typing where, relayed between gateways: keyed by room, kept
    /// a minute, read by each gateway from its end.
    public static let typing = "chat-typing"

    /// Every chat topic: with the authorizer on, the gateway's principal
    /// alone may use them unless an operator grants more (Docs/security.md).
    public static let all = [conversations, members, state, accounts, sessions, readMarkers, userData, toDevice, redactions, relations, directory, media, mediaIndex, typing]

    /// The topics whose records are state by key (the newest per key is all
    /// that matters): compacted from their creation. `accounts` and
    /// `members` are compacted too, but by the gateway, once their records
    /// of an older layout are rewritten (a registration race's winner and
    /// removals under the user id; memberships under room and member, not
    /// room alone), so a broker upgraded first never compacts them early.
    /// Not `toDevice`, keyed by device, where every message counts.
    public static let compacted: Set<String> = [state, sessions, readMarkers, userData, redactions, relations, mediaIndex]
}
