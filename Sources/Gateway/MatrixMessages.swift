// The shapes of what the gateway reads and writes as JSON: request bodies,
// answers, and the records of its own topics. Fields are optional where a
// missing one gets a Matrix error of its own (M_MISSING_PARAM), not M_BAD_JSON.
//
// `/sync` bodies and `/messages` pages are not here: they are assembled as
// text from events serialised once when they arrive (see MatrixAPI+Sync),
// because re-encoding every event for every member was most of a sync's cost.

// MARK: Requests

struct RegisterRequest: Decodable {
    var username: String?
    var password: String?
    var deviceID: String?

    enum CodingKeys: String, CodingKey {
        case username
        case password
        case deviceID = "device_id"
    }
}

struct LoginRequest: Decodable {
    struct Identifier: Decodable {
        var type: String?
        var user: String?
    }

    var type: String?
    var identifier: Identifier?
    /// The user before `identifier` existed (older clients send this).
    var user: String?
    var password: String?
    var deviceID: String?

    enum CodingKeys: String, CodingKey {
        case type
        case identifier
        case user
        case password
        case deviceID = "device_id"
    }
}

struct CreateRoomRequest: Decodable {
    var roomVersion: String?
    var invite: [String]?
    var creationContent: [String: JSONValue]?
    var preset: String?
    var visibility: String?
    var name: String?
    var topic: String?
    var powerLevelContentOverride: [String: JSONValue]?
    /// State events to set after the preset's (`m.room.encryption`, typically).
    var initialState: [InitialStateEvent]?
    var roomAliasName: String?

    struct InitialStateEvent: Decodable {
        var type: String
        var stateKey: String?
        var content: JSONValue

        enum CodingKeys: String, CodingKey {
            case type
            case stateKey = "state_key"
            case content
        }
    }

    enum CodingKeys: String, CodingKey {
        case initialState = "initial_state"
        case roomAliasName = "room_alias_name"
        case roomVersion = "room_version"
        case invite
        case creationContent = "creation_content"
        case preset
        case visibility
        case name
        case topic
        case powerLevelContentOverride = "power_level_content_override"
    }
}

struct InviteRequest: Decodable {
    var userID: String?

    enum CodingKeys: String, CodingKey {
        case userID = "user_id"
    }
}

struct ReadMarkersRequest: Decodable {
    var fullyRead: String?
    var read: String?

    enum CodingKeys: String, CodingKey {
        case fullyRead = "m.fully_read"
        case read = "m.read"
    }
}

// MARK: Answers

struct ErrorAnswer: Encodable {
    var errcode: String
    var error: String
    var retryAfterMs: Int64? = nil
    var currentVersion: String? = nil

    enum CodingKeys: String, CodingKey {
        case errcode, error
        case retryAfterMs = "retry_after_ms"
        case currentVersion = "current_version"
    }
}

struct VersionsAnswer: Encodable {
    var versions: [String]
    var unstableFeatures: [String: Bool]

    enum CodingKeys: String, CodingKey {
        case versions
        case unstableFeatures = "unstable_features"
    }
}

struct LoginFlowsAnswer: Encodable {
    struct Flow: Encodable {
        var type: String
    }

    var flows: [Flow]
}

struct LoginAnswer: Encodable {
    var userID: String
    var deviceID: String
    var accessToken: String
    var homeServer: String

    enum CodingKeys: String, CodingKey {
        case userID = "user_id"
        case deviceID = "device_id"
        case accessToken = "access_token"
        case homeServer = "home_server"
    }
}

struct WhoAmIAnswer: Encodable {
    var userID: String
    var deviceID: String

    enum CodingKeys: String, CodingKey {
        case userID = "user_id"
        case deviceID = "device_id"
    }
}

struct RoomIDAnswer: Encodable {
    var roomID: String

    enum CodingKeys: String, CodingKey {
        case roomID = "room_id"
    }
}

struct JoinedRoomsAnswer: Encodable {
    var joinedRooms: [String]

    enum CodingKeys: String, CodingKey {
        case joinedRooms = "joined_rooms"
    }
}

struct JoinedMembersAnswer: Encodable {
    /// A member's profile: no profiles are kept yet, so both are null
    /// (present, as the specification's example shows them).
    struct Profile: Encodable {
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encodeNil(forKey: .displayName)
            try container.encodeNil(forKey: .avatarURL)
        }

        enum CodingKeys: String, CodingKey {
            case displayName = "display_name"
            case avatarURL = "avatar_url"
        }
    }

    var joined: [String: Profile]
}

/// A sync's `m.receipt` event: per event id, who read up to it and when.
struct ReceiptEvent: Encodable {
    struct Read: Encodable {
        var ts: Int64
    }

    struct Receipts: Encodable {
        var read: [String: Read]

        enum CodingKeys: String, CodingKey {
            case read = "m.read"
        }
    }

    var type = "m.receipt"
    var content: [String: Receipts]
}

/// A sync's `m.fully_read` account-data event.
struct FullyReadEvent: Encodable {
    struct Content: Encodable {
        var eventID: String

        enum CodingKeys: String, CodingKey {
            case eventID = "event_id"
        }
    }

    var type = "m.fully_read"
    var content: Content
}

/// A state event as an invited user sees it before joining.
struct StrippedStateEvent: Encodable {
    var type: String
    var stateKey: String
    var sender: String
    var content: JSONValue

    enum CodingKeys: String, CodingKey {
        case type
        case stateKey = "state_key"
        case sender
        case content
    }
}

// MARK: Records of the chat topics

/// `chat-accounts`, keyed by user id.
struct AccountRecord: Codable {
    var passwordHash: String
    var createdMs: Int64?
    /// "operator" for `postduif user add|remove --chat`, "kept" for the
    /// gateway's repair of a record of the old layout: it says what the
    /// account is, whatever was there; a registration (no `set_by`)
    /// counts only for a new name.
    var setBy: String?
    /// The account was removed; its name stays taken.
    var removed: Bool?

    enum CodingKeys: String, CodingKey {
        case passwordHash = "password_hash"
        case createdMs = "created_ts"
        case setBy = "set_by"
        case removed
    }

    /// A registration's key: the user id, "r" and an id of its own, so
    /// that racing registrations each keep their record and the first wins.
    static func registrationKey(_ user: String) -> [UInt8] {
        Array((user + "\u{0}r\u{0}" + Secrets.opaque(12)).utf8)
    }
}

/// `chat-sessions`, keyed by the SHA-256 of the access token.
struct SessionRecord: Codable {
    var userID: String
    var deviceID: String
    var createdMs: Int64?

    enum CodingKeys: String, CodingKey {
        case userID = "user_id"
        case deviceID = "device_id"
        case createdMs = "created_ts"
    }
}

/// A room event as stored: in `conversations` (type, sender, content and
/// a state key for state events) and, with its id, room and time, in `chat-state`.
struct StoredEvent: Codable {
    var type: String
    var sender: String
    var content: JSONValue
    var stateKey: String?
    var eventID: String?
    var roomID: String?
    var originServerMs: Int64?

    enum CodingKeys: String, CodingKey {
        case type
        case sender
        case content
        case stateKey = "state_key"
        case eventID = "event_id"
        case roomID = "room_id"
        case originServerMs = "origin_server_ts"
    }
}

/// What the gateway reads of every delivered event: enough to index it
/// (only a membership's content is looked into).
struct StoredEventHead {
    var type: String
    var sender: String
    var stateKey: String?
    /// For `m.room.member`: the membership it sets.
    var membership: String?
    /// The event's content, as the same parse found it: a delivery hands
    /// it to the unread counts, which would otherwise parse the event again.
    var content: JSONValue?

    /// The head of a stored event's JSON; nil when it is not an object
    /// with a string type and sender. Parsed with `JSONParser`: this runs
    /// for every delivered event (JSONDecoder was 1.3% of the process's
    /// CPU in twenty rooms of 2).
    init?(parsing stored: [UInt8]) {
        guard case .object(let event)? = JSONValue(parsing: stored),
              let type = event["type"]?.string, let sender = event["sender"]?.string else { return nil }
        self.type = type
        self.sender = sender
        stateKey = event["state_key"]?.string
        content = event["content"]
        membership = type == "m.room.member" ? content?["membership"]?.string : nil
    }
}

