import Foundation
import Hummingbird
import HummingbirdCore
import KafkaWire
import NIOCore

// End-to-end encryption, the server's part: storing and handing out keys,
// relaying to-device messages, keeping encrypted key backups. Keys live in
// chat-user-data (`DeviceKeyTable`), to-device messages in chat-to-device.
extension MatrixAPI {
    func addKeyRoutes(_ routes: RouterGroup<GatewayRequestContext>) {
        routes.post("keys/upload") { request, _ in try await uploadKeys(request) }
        routes.post("keys/query") { request, _ in try await queryKeys(request) }
        routes.post("keys/claim") { request, _ in try await claimKeys(request) }
        routes.get("keys/changes") { request, _ in try keyChanges(request) }
        routes.post("keys/device_signing/upload") { request, _ in try await uploadCrossSigning(request) }
        routes.post("keys/signatures/upload") { request, _ in try await uploadSignatures(request) }
        routes.put("sendToDevice/:eventType/:txnId") { request, context in try await sendToDevice(request, context) }
        addBackupRoutes(routes)
    }

    /// Writes several chat-user-data records at once and waits until this
    /// gateway has read the last of them.
    func writeUserData(_ records: [(UserDataKey, String?)]) async throws {
        guard !records.isEmpty else { return }
        let written = try await withThrowingTaskGroup(of: (Int32, Int64).self) { group in
            for (key, json) in records {
                group.addTask { try await link.produce(topic: ChatTopics.userData, key: key.bytes, value: json.map { Array($0.utf8) }, timestamp: Self.now) }
            }
            return try await group.reduce(into: [(Int32, Int64)]()) { $0.append($1) }
        }
        if let last = written.max(by: { $0.1 < $1.1 }) {
            await state.waitApplied(topic: ChatTopics.userData, partition: last.0, offset: last.1)
        }
    }

    static func object(_ value: JSONValue?) -> [String: JSONValue]? {
        if case .object(let object)? = value { return object }
        return nil
    }

    // MARK: Upload, query, claim

    func uploadKeys(_ request: Request) async throws -> Response {
        let session = try authenticate(request)
        let body = try await body([String: JSONValue].self, request, limit: Self.keyBodyBytesMax)
        var records: [(UserDataKey, String?)] = []
        if let deviceKeys = Self.object(body["device_keys"]) {
            guard deviceKeys["user_id"]?.string == session.userID, deviceKeys["device_id"]?.string == session.deviceID else {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "device_keys are for this session's own user and device only")
            }
            guard Self.object(deviceKeys["keys"]) != nil, deviceKeys["algorithms"] != nil else {
                throw MatrixError(.badRequest, "M_BAD_JSON", "device_keys need algorithms and keys")
            }
            let json = MatrixJSON.encode(JSONValue.object(deviceKeys))
            if state.keys.deviceKeys(of: session.userID)[session.deviceID].flatMap({ JSONValue(parsing: $0.utf8) }) != .object(deviceKeys) {
                records.append((.deviceKeys(user: session.userID, device: session.deviceID), json))
            }
        }
        let oneTimeKeys = Self.object(body["one_time_keys"]) ?? [:]
        guard oneTimeKeys.count <= Self.oneTimeKeysPerUploadMax else {
            throw MatrixError(.badRequest, "M_INVALID_PARAM", "at most \(Self.oneTimeKeysPerUploadMax) one-time keys per upload")
        }
        for (id, key) in oneTimeKeys.sorted(by: { $0.key < $1.key }) {
            guard id.contains(":") else { throw MatrixError(.badRequest, "M_INVALID_PARAM", "a one-time key id is algorithm:id, not \(id)") }
            let json = MatrixJSON.encode(key)
            if let existing = state.keys.hasOneTimeKey(user: session.userID, device: session.deviceID, id: id) {
                // The same key again is fine; another key under the same id is not.
                guard JSONValue(parsing: existing.utf8) == key else {
                    throw MatrixError(.badRequest, "M_INVALID_PARAM", "one-time key \(id) was already uploaded with another value")
                }
                continue
            }
            records.append((.oneTimeKey(user: session.userID, device: session.deviceID, id: id), json))
        }
        for (id, key) in Self.object(body["fallback_keys"] ?? body["org.matrix.msc2732.fallback_keys"]) ?? [:] {
            let algorithm = String(id.prefix { $0 != ":" })
            guard id.contains(":") else { throw MatrixError(.badRequest, "M_INVALID_PARAM", "a fallback key id is algorithm:id, not \(id)") }
            if let stored = state.keys.fallbackKey(user: session.userID, device: session.deviceID, algorithm: algorithm).flatMap(FallbackKey.init), stored.id == id, stored.key == key {
                continue
            }
            records.append((.fallbackKey(user: session.userID, device: session.deviceID, algorithm: algorithm), MatrixJSON.encode(FallbackKey(id: id, key: key, used: false))))
        }
        try await writeUserData(records)
        let counts = state.keys.oneTimeKeyCounts(user: session.userID, device: session.deviceID)
        return Self.ok(["one_time_key_counts": .object(counts.mapValues { .int(Int64($0)) })] as JSONValue)
    }

    static let oneTimeKeysPerUploadMax = 1_000

    /// A device's keys as `keys/query` answers them: with its display name
    /// in `unsigned`.
    func queriedDeviceKeys(user: String, device: String, json: String) -> JSONValue? {
        guard case .object(var keys)? = JSONValue(parsing: json.utf8) else { return nil }
        if let name = state.userData.deviceName(user: user, id: device).flatMap({ JSONValue(parsing: $0.utf8)?.members })?["display_name"] {
            var unsigned = Self.object(keys["unsigned"]) ?? [:]
            unsigned["device_display_name"] = name
            keys["unsigned"] = .object(unsigned)
        }
        return .object(keys)
    }

    func queryKeys(_ request: Request) async throws -> Response {
        let session = try authenticate(request)
        let body = try await body([String: JSONValue].self, request, limit: Self.keyBodyBytesMax)
        guard let wanted = Self.object(body["device_keys"]) else { throw MatrixError(.badRequest, "M_BAD_JSON", "device_keys is required") }
        var deviceKeys: [String: JSONValue] = [:]
        var master: [String: JSONValue] = [:]
        var selfSigning: [String: JSONValue] = [:]
        var userSigning: [String: JSONValue] = [:]
        for (user, devices) in wanted {
            let only: Set<String>? = if case .array(let list) = devices, !list.isEmpty { Set(list.compactMap(\.string)) } else { nil }
            var found: [String: JSONValue] = [:]
            for (device, json) in state.keys.deviceKeys(of: user) where only?.contains(device) ?? true {
                found[device] = queriedDeviceKeys(user: user, device: device, json: json)
            }
            deviceKeys[user] = .object(found)
            let crossSigning = state.keys.crossSigning(of: user).compactMapValues { JSONValue(parsing: $0.utf8) }
            master[user] = crossSigning["master"]
            selfSigning[user] = crossSigning["self_signing"]
            // A user's signing key is theirs alone to see.
            if user == session.userID { userSigning[user] = crossSigning["user_signing"] }
        }
        return Self.ok(["device_keys": .object(deviceKeys), "failures": [:], "master_keys": .object(master), "self_signing_keys": .object(selfSigning),
                        "user_signing_keys": .object(userSigning)] as JSONValue)
    }

    func claimKeys(_ request: Request) async throws -> Response {
        _ = try authenticate(request)
        let body = try await body([String: JSONValue].self, request, limit: Self.keyBodyBytesMax)
        guard let wanted = Self.object(body["one_time_keys"]) else { throw MatrixError(.badRequest, "M_BAD_JSON", "one_time_keys is required") }
        // Every device's claim at once: a client about to share a room key
        // claims one for each device in the room it has no session with,
        // and a claim waits for its write to come back from the log (in
        // turn, 50 ms for a room of a hundred). Each device is named once,
        // and two claims of one key are settled by the log either way.
        let found = try await withThrowingTaskGroup(of: (String, String, (id: String, key: JSONValue)?).self) { group in
            for (user, devices) in wanted {
                for (device, algorithm) in Self.object(devices) ?? [:] {
                    guard let algorithm = algorithm.string else { continue }
                    group.addTask { (user, device, try await claimKey(user: user, device: device, algorithm: algorithm)) }
                }
            }
            return try await group.reduce(into: [(String, String, (id: String, key: JSONValue)?)]()) { $0.append($1) }
        }
        var claimed: [String: [String: JSONValue]] = [:]
        for case (let user, let device, let key?) in found {
            claimed[user, default: [:]][device] = [key.id: key.key]
        }
        return Self.ok(["one_time_keys": .object(claimed.mapValues { .object($0) }), "failures": [:]] as JSONValue)
    }

    /// Claims one of the device's one-time keys (the first null written
    /// over a key wins it: another gateway may claim at the same moment),
    /// or hands out its fallback key when none is left.
    func claimKey(user: String, device: String, algorithm: String) async throws -> (id: String, key: JSONValue)? {
        var lost: Set<String> = []
        for _ in 0..<8 {
            guard let (id, json) = state.keys.oneTimeKey(user: user, device: device, algorithm: algorithm, skipping: lost) else { break }
            let key = UserDataKey.oneTimeKey(user: user, device: device, id: id)
            let (partition, offset) = try await link.produce(topic: ChatTopics.userData, key: key.bytes, value: nil, timestamp: Self.now)
            await state.waitApplied(topic: ChatTopics.userData, partition: partition, offset: offset)
            if state.keys.claimedAt(user: user, device: device, id: id) == offset, let value = JSONValue(parsing: json.utf8) {
                return (id, value)
            }
            lost.insert(id)
        }
        guard let stored = state.keys.fallbackKey(user: user, device: device, algorithm: algorithm).flatMap(FallbackKey.init) else { return nil }
        if !stored.used {
            var used = stored
            used.used = true
            try await writeUserData(.fallbackKey(user: user, device: device, algorithm: algorithm), MatrixJSON.encode(used))
        }
        return (stored.id, stored.key)
    }

    /// `keys/changes`: users sharing a room with the caller whose devices
    /// changed between two sync tokens, and those who stopped sharing every
    /// room with the caller since the first.
    func keyChanges(_ request: Request) throws -> Response {
        let session = try authenticate(request)
        let query = request.uri.queryParameters
        let partitions = Int(state.timelinePartitions)
        guard let from = query.get("from").flatMap({ SyncPosition(token: String($0), partitions: partitions) }),
              let to = query.get("to").flatMap({ SyncPosition(token: String($0), partitions: partitions) }) else {
            throw MatrixError(.badRequest, "M_INVALID_PARAM", "from and to must be sync tokens")
        }
        let changed = state.keys.keysChanged(since: from.userData, before: to.userData)
        let users = changed.intersection(state.sharingRooms(with: session.userID)).sorted()
        let left = deviceListsLeft(session, since: from, position: to)
        return Self.ok(["changed": .array(users.map { .string($0) }), "left": .array(left.map { .string($0) })] as JSONValue)
    }

    // MARK: Cross-signing

    func uploadCrossSigning(_ request: Request) async throws -> Response {
        let session = try authenticate(request)
        let buffer = try await collectBody(request, limit: Self.keyBodyBytesMax)
        let body = try MatrixJSON.decodeBody([String: JSONValue].self, from: buffer)
        // Replacing cross-signing keys asks for the password again; the
        // first upload does not (as Synapse and MSC3967).
        if state.keys.crossSigning(of: session.userID)["master"] != nil {
            let auth = try MatrixJSON.decodeBody(UserInteractiveRequest.self, from: buffer).auth
            guard let auth else { return Self.json(.unauthorized, Self.passwordStage(error: nil)) }
            guard try checkPassword(auth, session) else { return Self.json(.unauthorized, Self.passwordStage(error: "invalid password")) }
        }
        var records: [(UserDataKey, String?)] = []
        for (field, usage) in [("master_key", "master"), ("self_signing_key", "self_signing"), ("user_signing_key", "user_signing")] {
            guard let key = Self.object(body[field]) else { continue }
            guard key["user_id"]?.string == session.userID else {
                throw MatrixError(.badRequest, "M_INVALID_PARAM", "\(field) is for this session's own user only")
            }
            records.append((.crossSigning(user: session.userID, usage: usage), MatrixJSON.encode(JSONValue.object(key))))
        }
        try await writeUserData(records)
        return Self.ok("{}")
    }

    /// Signatures of the caller's devices and cross-signing keys (or of
    /// another user's master key, by the caller's user-signing key) are
    /// merged into the signed keys.
    func uploadSignatures(_ request: Request) async throws -> Response {
        let session = try authenticate(request)
        let body = try await body([String: JSONValue].self, request, limit: Self.keyBodyBytesMax)
        var records: [(UserDataKey, String?)] = []
        var failures: [String: JSONValue] = [:]
        for (user, signed) in body {
            for (keyID, object) in Self.object(signed) ?? [:] {
                guard let signatures = Self.object(Self.object(object)?["signatures"]?[session.userID]) else { continue }
                func merged(_ json: String) -> String? {
                    guard case .object(var stored)? = JSONValue(parsing: json.utf8) else { return nil }
                    var all = Self.object(stored["signatures"]) ?? [:]
                    var mine = Self.object(all[session.userID]) ?? [:]
                    mine.merge(signatures) { $1 }
                    all[session.userID] = .object(mine)
                    stored["signatures"] = .object(all)
                    return MatrixJSON.encode(JSONValue.object(stored))
                }
                if user == session.userID, let json = state.keys.deviceKeys(of: user)[keyID], let updated = merged(json) {
                    records.append((.deviceKeys(user: user, device: keyID), updated))
                } else if let (usage, json) = state.keys.crossSigning(of: user).first(where: { $0.value.contains("\"ed25519:\(keyID)\"") }),
                          user == session.userID || usage == "master", let updated = merged(json) {
                    records.append((.crossSigning(user: user, usage: usage), updated))
                } else {
                    failures[user, default: [:]] = .object((Self.object(failures[user]) ?? [:]).merging([keyID: ["errcode": "M_NOT_FOUND", "error": "no such key"]]) { $1 })
                }
            }
        }
        try await writeUserData(records)
        return Self.ok(["failures": .object(failures)] as JSONValue)
    }

    func checkPassword(_ auth: LoginRequest, _ session: Session) throws -> Bool {
        let name = auth.identifier?.user ?? auth.user ?? session.userID
        guard auth.type == "m.login.password", userID(from: name) == session.userID, let password = auth.password,
              let hash = state.credentials.account(session.userID)?.hash else { return false }
        return Secrets.verifyPassword(password, against: hash)
    }

    // MARK: To-device

    /// `sendToDevice`: one chat-to-device record per target device, each
    /// with its transaction (`txn` header). A retry of a send whose answer
    /// was lost, even across a gateway restart (the tail of chat-to-device
    /// remembers each record's transaction and device), writes only what
    /// the first attempt did not.
    func sendToDevice(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let session = try authenticate(request)
        let eventType = parameter(context, "eventType")
        let transaction = "to-device|\(session.userID)|\(session.deviceID)|\(parameter(context, "txnId"))"
        if state.transactions.eventID(for: transaction) != nil { return Self.ok("{}") }
        let header = RecordHeader(key: Array("txn".utf8), value: Array(transaction.utf8))
        let body = try await body([String: JSONValue].self, request, limit: Self.keyBodyBytesMax)
        guard let messages = Self.object(body["messages"]) else { throw MatrixError(.badRequest, "M_BAD_JSON", "messages is required") }
        var records: [(key: String, event: String)] = []
        for (user, devices) in messages where state.credentials.account(user)?.hash != nil {
            for (device, content) in Self.object(devices) ?? [:] {
                let targets = device == "*" ? Set(state.credentials.devices(of: user)).union(state.keys.deviceKeys(of: user).keys).sorted() : [device]
                let event = MatrixJSON.encode(["type": .string(eventType), "sender": .string(session.userID), "content": content] as JSONValue)
                for target in targets {
                    let key = user + "\u{0}" + target
                    if state.transactions.eventID(for: ChatState.toDeviceDelivery(transaction, key: key)) != nil { continue }
                    records.append((key, event))
                }
            }
        }
        // All at once: each goes to a device of its own, so their order does
        // not matter, and the broker link puts them into as few Produce
        // requests as its limits allow. In turn, a room key shared with a
        // hundred devices waited for a hundred acknowledgements (80 ms with
        // fsync durability). A retry after a failure skips those applied.
        let written = try await withThrowingTaskGroup(of: (Int32, Int64).self) { group in
            for record in records {
                group.addTask {
                    try await link.produce(topic: ChatTopics.toDevice, key: Array(record.key.utf8), value: Array(record.event.utf8), headers: [header], timestamp: Self.now)
                }
            }
            return try await group.reduce(into: [Int32: Int64]()) { last, written in last[written.0] = max(last[written.0] ?? written.1, written.1) }
        }
        state.transactions.remember(transaction, eventID: "")
        // Applied in every partition written, so the recipients' next syncs have them.
        for (partition, offset) in written {
            await state.waitApplied(topic: ChatTopics.toDevice, partition: partition, offset: offset)
        }
        return Self.ok("{}")
    }
}
