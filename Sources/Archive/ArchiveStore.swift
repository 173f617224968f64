import Foundation

/// A record the archive keeps: one conversation event as stored in the
/// `conversations` topic, with where it was read.
public struct ArchivedEvent: Sendable {
    public var roomID: String
    public var partition: Int32
    public var offset: Int64
    public var timestamp: Int64
    /// The stored JSON value (`type`, `sender`, `content`, `state_key`).
    public var value: [UInt8]

    public init(roomID: String, partition: Int32, offset: Int64, timestamp: Int64, value: [UInt8]) {
        self.roomID = roomID
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.value = value
    }
}

/// Which retention class each conversation's records get, and how long
/// each class is kept: the selection list (selectielijst) as a file.
///
/// `{"default": "10y", "classes": {"permanent": null, "10y": 3653}, "rooms": {"!room:server": "permanent"}}`
/// (days; null keeps for ever).
public struct SelectionList: Codable, Sendable {
    public var `default`: String
    public var classes: [String: Int?]
    public var rooms: [String: String]

    public init(default: String = "permanent", classes: [String: Int?] = ["permanent": nil], rooms: [String: String] = [:]) {
        self.default = `default`
        self.classes = classes
        self.rooms = rooms
    }

    public func retentionClass(of room: String) -> String { rooms[room] ?? self.default }
}

/// Why an archive cannot be used or does not verify.
public struct ArchiveError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// An uploaded file an archived event refers to (`mxc://server/media-id`),
/// as the chat stored it.
public struct ArchivedMedia: Sendable {
    public var bytes: Data
    public var contentType: String
    public var fileName: String?

    public init(bytes: Data, contentType: String, fileName: String?) {
        self.bytes = bytes
        self.contentType = contentType
        self.fileName = fileName
    }
}

/// The archive on disk (Docs/services.md, "The archive"): a folder per
/// conversation with its events as JSON lines per month, its membership
/// changes, the files its messages carry (`attachments/<month>/`), and a
/// manifest of every file's SHA-256; a hash chain across
/// batches (`chain.jsonl`) and the consumer's place (`state.json`).
///
/// Exactly once across crashes: a batch is appended and synced to its
/// files, then to the chain, and only then does `state.json` (written to
/// a temporary file, synced, renamed) name the files' new lengths and the
/// next offsets. On opening, every file is cut back to the length the
/// state names, so a batch half written when the process died is gone
/// and is read again from the offsets the state names.
public final class ArchiveStore {
    public let root: URL
    public let selection: SelectionList
    struct State: Codable {
        /// Next offset to read per partition.
        var offsets: [String: Int64] = [:]
        /// Each file's length once the last batch was complete.
        var lengths: [String: UInt64] = [:]
        var chainHead = String(repeating: "0", count: 64)
        var batches = 0
    }
    private(set) var state: State

    public init(root: String, selection: SelectionList) throws {
        self.root = URL(fileURLWithPath: root, isDirectory: true)
        self.selection = selection
        try FileManager.default.createDirectory(at: self.root.appendingPathComponent("rooms"), withIntermediateDirectories: true)
        let statePath = self.root.appendingPathComponent("state.json")
        if let data = FileManager.default.contents(atPath: statePath.path) {
            state = try JSONDecoder().decode(State.self, from: data)
        } else {
            state = State()
        }
        try cutBackToState()
    }

    /// Where the consumer resumes: next offset per partition.
    public var offsets: [Int32: Int64] {
        Dictionary(uniqueKeysWithValues: state.offsets.compactMap { key, value in Int32(key).map { ($0, value) } })
    }

    public var chainHead: String { state.chainHead }

    /// Files a crash left longer than the state says are cut back; files
    /// the state does not know (made by an unfinished batch) are removed.
    private func cutBackToState() throws {
        for relative in try allFiles() where relative.hasPrefix("rooms/") && !relative.hasSuffix("manifest.json") {
            let path = root.appendingPathComponent(relative).path
            guard let length = state.lengths[relative] else {
                try FileManager.default.removeItem(atPath: path)
                continue
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try handle.truncate(atOffset: length)
            try handle.synchronize()
            try handle.close()
        }
        let chain = root.appendingPathComponent("chain.jsonl").path
        if FileManager.default.fileExists(atPath: chain) {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: chain))
            try handle.truncate(atOffset: state.lengths["chain.jsonl"] ?? 0)
            try handle.close()
        }
        for room in Set(state.lengths.keys.compactMap(Self.roomFolder)) { try writeManifest(room) }
    }

    func allFiles() throws -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: root.path) else { return [] }
        return walker.compactMap { $0 as? String }.filter { !$0.hasSuffix(".tmp") && !isDirectory($0) }.sorted()
    }

    private func isDirectory(_ relative: String) -> Bool {
        var directory: ObjCBool = false
        return FileManager.default.fileExists(atPath: root.appendingPathComponent(relative).path, isDirectory: &directory) && directory.boolValue
    }

    /// A room id as a folder name: letters, digits, `.`, `_` and `-` stay,
    /// the rest is percent-encoded.
    public static func folderName(_ roomID: String) -> String {
        var name = ""
        for byte in roomID.utf8 {
            let char = Character(UnicodeScalar(byte))
            if char.isASCII && (char.isLetter || char.isNumber || char == "." || char == "_" || char == "-") {
                name.append(char)
            } else {
                name += String(format: "%%%02X", byte)
            }
        }
        return name
    }

    static func roomFolder(_ relative: String) -> String? {
        let parts = relative.split(separator: "/")
        return parts.count >= 3 && parts[0] == "rooms" ? String(parts[1]) : nil
    }

    /// `YYYY-MM` of a time in milliseconds since 1970, UTC.
    public static func month(_ milliseconds: Int64) -> String {
        // Days to civil date (Howard Hinnant's algorithm).
        let days = Int64((Double(milliseconds) / 86_400_000).rounded(.down))
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return String(format: "%04lld-%02lld", year, month)
    }

    /// The first millisecond after month `YYYY-MM`.
    static func monthEnd(_ month: String) -> Int64? {
        let parts = month.split(separator: "-").compactMap { Int64($0) }
        guard parts.count == 2 else { return nil }
        var (year, next) = (parts[0], parts[1] + 1)
        if next == 13 { (year, next) = (year + 1, 1) }
        // Days from civil (the inverse of `month`).
        let y = next <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (next > 2 ? next - 3 : next + 9) + 2) / 5
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return (era * 146_097 + dayOfEra - 719_468) * 86_400_000
    }

    /// The SHA-256 of `data`, in hex, as the manifests and the chain give it.
    public static func sha256(_ data: Data) -> String { Digest.hex(data) }

    /// The media ids (`mxc://server/id`'s `id`) an event's content refers
    /// to: a file, image, audio or video, an encrypted file, a thumbnail.
    public static func mediaIDs(in value: [UInt8]) -> [String] {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(value))) as? [String: Any] else { return [] }
        return mediaIDs(in: object)
    }

    /// `mediaIDs(in:)` of an event already read.
    static func mediaIDs(in object: [String: Any]) -> [String] {
        guard let content = object["content"] as? [String: Any] else { return [] }
        let info = content["info"] as? [String: Any]
        let urls = [content["url"], (content["file"] as? [String: Any])?["url"], info?["thumbnail_url"], (info?["thumbnail_file"] as? [String: Any])?["url"]]
        var ids: [String] = []
        for case let url as String in urls where url.hasPrefix("mxc://") {
            let rest = url.dropFirst("mxc://".count)
            guard let slash = rest.firstIndex(of: "/") else { continue }
            let id = String(rest[rest.index(after: slash)...])
            if !id.isEmpty && !ids.contains(id) { ids.append(id) }
        }
        return ids
    }

    /// Appends a batch of events (in offset order per partition), then
    /// records it in the chain and the state. `next` is the next offset
    /// per partition once the batch is in. `media` holds the files the
    /// events refer to (by media id) that could be read; each is kept
    /// once per conversation and month, beside the events, and named in
    /// the event's `postduif.attachments` (`missing` when it could not be
    /// read: removed by the chat's retention, say).
    public func append(_ events: [ArchivedEvent], media: [String: ArchivedMedia] = [:], next: [Int32: Int64]) throws {
        var appended: [String: Data] = [:]
        for event in events {
            guard var object = (try? JSONSerialization.jsonObject(with: Data(event.value))) as? [String: Any] else { continue }
            let folder = "rooms/" + Self.folderName(event.roomID)
            let month = Self.month(event.timestamp)
            object["event_id"] = "$\(event.partition)_\(event.offset)"
            object["room_id"] = event.roomID
            object["origin_server_ts"] = event.timestamp
            var meta: [String: Any] = ["partition": event.partition, "offset": event.offset, "retention_class": selection.retentionClass(of: event.roomID)]
            var attachments: [String: Any] = [:]
            for id in Self.mediaIDs(in: object) {
                guard let file = media[id] else {
                    attachments[id] = ["missing": true]
                    continue
                }
                let relative = "\(folder)/attachments/\(month)/\(Self.folderName(id))"
                if state.lengths[relative] == nil && appended[relative] == nil { appended[relative] = file.bytes }
                var described: [String: Any] = ["file": String(relative.dropFirst(folder.count + 1)), "sha256": Digest.hex(file.bytes),
                                                "length": file.bytes.count, "content_type": file.contentType]
                if let name = file.fileName { described["file_name"] = name }
                attachments[id] = described
            }
            if !attachments.isEmpty { meta["attachments"] = attachments }
            object["postduif"] = meta
            var line = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            line.append(0x0A)
            appended[folder + "/messages-" + month + ".jsonl", default: Data()].append(line)
            if object["type"] as? String == "m.room.member" {
                appended[folder + "/membership.jsonl", default: Data()].append(line)
            }
        }
        var chunks: [String: [String: Any]] = [:]
        for (relative, data) in appended.sorted(by: { $0.key < $1.key }) {
            let url = root.appendingPathComponent(relative)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Self.ensureFile(url.path)
            let start = state.lengths[relative] ?? 0
            let handle = try FileHandle(forWritingTo: url)
            try handle.truncate(atOffset: start)
            try handle.seekToEnd()
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
            chunks[relative] = ["from": start, "length": data.count, "sha256": Digest.hex(data)]
        }
        var newLengths = state.lengths
        for (relative, chunk) in chunks { newLengths[relative] = (chunk["from"] as! UInt64) + UInt64(chunk["length"] as! Int) }
        let offsets = Dictionary(uniqueKeysWithValues: next.map { (String($0.key), $0.value) })
        try appendChain(["batch": state.batches + 1, "chunks": chunks, "offsets": offsets], lengths: &newLengths)
        state.lengths = newLengths
        state.offsets.merge(offsets) { _, new in new }
        state.batches += 1
        try saveState()
        for room in Set(chunks.keys.compactMap(Self.roomFolder)) { try writeManifest(room) }
    }

    /// Links an entry to the chain: its hash covers the previous hash and
    /// the entry's canonical JSON.
    private func appendChain(_ entry: [String: Any], lengths: inout [String: UInt64]) throws {
        let body = try JSONSerialization.data(withJSONObject: entry, options: [.sortedKeys, .withoutEscapingSlashes])
        let hash = Digest.hex(Data(state.chainHead.utf8) + body)
        var line = try JSONSerialization.data(withJSONObject: ["previous": state.chainHead, "entry": entry, "hash": hash], options: [.sortedKeys, .withoutEscapingSlashes])
        line.append(0x0A)
        let url = root.appendingPathComponent("chain.jsonl")
        try Self.ensureFile(url.path)
        let handle = try FileHandle(forWritingTo: url)
        try handle.truncate(atOffset: state.lengths["chain.jsonl"] ?? 0)
        try handle.seekToEnd()
        try handle.write(contentsOf: line)
        try handle.synchronize()
        try handle.close()
        lengths["chain.jsonl"] = (state.lengths["chain.jsonl"] ?? 0) + UInt64(line.count)
        state.chainHead = hash
    }

    private func saveState() throws {
        let data = try JSONEncoder().encode(state)
        let temporary = root.appendingPathComponent("state.json.tmp")
        try Self.write(data, to: temporary.path)
        let handle = try FileHandle(forWritingTo: temporary)
        try handle.synchronize()
        try handle.close()
        try Self.rename(temporary.path, to: root.appendingPathComponent("state.json").path)
    }

    /// A conversation's manifest: its room id, retention class and every
    /// file's length and SHA-256.
    private func writeManifest(_ folder: String) throws {
        let directory = root.appendingPathComponent("rooms").appendingPathComponent(folder)
        guard FileManager.default.fileExists(atPath: directory.path) else { return }
        var files: [String: Any] = [:]
        let prefix = "rooms/\(folder)/"
        for (relative, length) in state.lengths where relative.hasPrefix(prefix) {
            let name = String(relative.dropFirst(prefix.count))
            files[name] = ["length": length, "sha256": Digest.file(directory.appendingPathComponent(name).path) ?? ""]
        }
        let room = folder.removingPercentEncoding ?? folder
        let manifest: [String: Any] = ["room_id": room, "retention_class": selection.retentionClass(of: room), "files": files]
        let data = try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        let temporary = directory.appendingPathComponent("manifest.json.tmp")
        try Self.write(data, to: temporary.path)
        try Self.rename(temporary.path, to: directory.appendingPathComponent("manifest.json").path)
    }

    /// rename(2): the new file replaces the old in one step.
    static func rename(_ from: String, to: String) throws {
        guard Foundation.rename(from, to) == 0 else { throw ArchiveError("cannot rename \(from) to \(to): errno \(errno)") }
    }

    static func ensureFile(_ path: String) throws {
        if !FileManager.default.fileExists(atPath: path) { try write(Data(), to: path) }
    }

    static func write(_ data: Data, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: data) else { throw ArchiveError("cannot write \(path)") }
    }

    // MARK: Verifying, exporting, destroying

    /// Every problem found: a file whose bytes differ from what the chain
    /// recorded when they were written, a manifest that disagrees, a
    /// broken link. Empty: the archive is intact.
    public func verify() -> [String] {
        var problems: [String] = []
        let chainPath = root.appendingPathComponent("chain.jsonl").path
        let lines = (FileManager.default.contents(atPath: chainPath) ?? Data()).split(separator: 0x0A)
        var previous = String(repeating: "0", count: 64)
        // Files destroyed under the retention rules are checked no more.
        var destroyed: Set<String> = []
        for line in lines {
            if let link = (try? JSONSerialization.jsonObject(with: line)) as? [String: Any], let gone = (link["entry"] as? [String: Any])?["destroyed"] as? [String: Any] {
                destroyed.formUnion(gone.keys)
            }
        }
        for (number, line) in lines.enumerated() {
            guard let link = (try? JSONSerialization.jsonObject(with: line)) as? [String: Any], let entry = link["entry"] as? [String: Any],
                  let hash = link["hash"] as? String, let linked = link["previous"] as? String,
                  let body = try? JSONSerialization.data(withJSONObject: entry, options: [.sortedKeys, .withoutEscapingSlashes]) else {
                problems.append("chain entry \(number + 1) is not readable")
                break
            }
            if linked != previous { problems.append("chain entry \(number + 1) does not link to the one before") }
            if Digest.hex(Data(previous.utf8) + body) != hash { problems.append("chain entry \(number + 1) does not match its hash") }
            previous = hash
            for (relative, value) in (entry["chunks"] as? [String: [String: Any]]) ?? [:] where !destroyed.contains(relative) {
                guard let from = (value["from"] as? NSNumber)?.uint64Value, let length = (value["length"] as? NSNumber)?.uint64Value,
                      let sha = value["sha256"] as? String else { continue }
                if Digest.file(root.appendingPathComponent(relative).path, from: from, length: length) != sha {
                    problems.append("\(relative): bytes \(from)..<\(from + length) differ from what batch \(entry["batch"] ?? "?") wrote")
                }
            }
        }
        if previous != state.chainHead { problems.append("the chain ends at \(previous), the state names \(state.chainHead)") }
        // Manifests against the files.
        let rooms = root.appendingPathComponent("rooms")
        for folder in ((try? FileManager.default.contentsOfDirectory(atPath: rooms.path)) ?? []).sorted() {
            let directory = rooms.appendingPathComponent(folder)
            guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent("manifest.json").path),
                  let manifest = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any], let files = manifest["files"] as? [String: [String: Any]] else {
                problems.append("rooms/\(folder): no readable manifest")
                continue
            }
            for (name, expected) in files where Digest.file(directory.appendingPathComponent(name).path) != expected["sha256"] as? String {
                problems.append("rooms/\(folder)/\(name): its SHA-256 is not the manifest's")
            }
        }
        return problems
    }

    /// A conversation's events in order, as archived (one JSON object per line).
    public func export(roomID: String) throws -> Data {
        let directory = root.appendingPathComponent("rooms").appendingPathComponent(Self.folderName(roomID))
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { throw ArchiveError("no conversation \(roomID) in the archive") }
        var lines: [(offset: Int64, line: Data)] = []
        for name in names.sorted() where name.hasPrefix("messages-") {
            let data = FileManager.default.contents(atPath: directory.appendingPathComponent(name).path) ?? Data()
            for line in data.split(separator: 0x0A) {
                let object = (try? JSONSerialization.jsonObject(with: line)) as? [String: Any]
                let offset = ((object?["postduif"] as? [String: Any])?["offset"] as? NSNumber)?.int64Value ?? 0
                lines.append((offset, Data(line)))
            }
        }
        var out = Data()
        for entry in lines.sorted(by: { $0.offset < $1.offset }) {
            out.append(entry.line)
            out.append(0x0A)
        }
        return out
    }

    /// The month a file of a conversation holds: `messages-<month>.jsonl`,
    /// or an attachment under `attachments/<month>/`; nil for the rest
    /// (membership.jsonl is kept as long as the conversation).
    static func monthOfFile(_ relative: String) -> String? {
        let parts = relative.split(separator: "/").map(String.init)
        guard parts.count >= 3 else { return nil }
        if parts.count == 3, parts[2].hasPrefix("messages-"), parts[2].hasSuffix(".jsonl") {
            return String(parts[2].dropFirst("messages-".count).dropLast(".jsonl".count))
        }
        if parts.count == 5, parts[2] == "attachments" { return parts[3] }
        return nil
    }

    /// Removes the month files whose retention class has run out by
    /// `now` (milliseconds), logging each in `destruction-log.jsonl` and
    /// the chain. Returns what was destroyed.
    public func destroyExpired(now: Int64) throws -> [String] {
        var gone: [String: Any] = [:]
        var log = Data()
        var lengths = state.lengths
        for relative in state.lengths.keys.sorted() where relative.hasPrefix("rooms/") {
            guard let folder = Self.roomFolder(relative), let month = Self.monthOfFile(relative) else { continue }
            let room = folder.removingPercentEncoding ?? folder
            let retentionClass = selection.retentionClass(of: room)
            guard let days = selection.classes[retentionClass] ?? nil, let end = Self.monthEnd(month),
                  end + Int64(days) * 86_400_000 <= now else { continue }
            let path = root.appendingPathComponent(relative).path
            let record: [String: Any] = ["file": relative, "room_id": room, "retention_class": retentionClass, "kept_days": days,
                                         "sha256": Digest.file(path) ?? "", "length": state.lengths[relative] ?? 0, "destroyed_at": now]
            log.append(try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys, .withoutEscapingSlashes]))
            log.append(0x0A)
            gone[relative] = record
            try FileManager.default.removeItem(atPath: path)
            lengths.removeValue(forKey: relative)
        }
        guard !gone.isEmpty else { return [] }
        let logURL = root.appendingPathComponent("destruction-log.jsonl")
        try Self.ensureFile(logURL.path)
        let handle = try FileHandle(forWritingTo: logURL)
        try handle.seekToEnd()
        try handle.write(contentsOf: log)
        try handle.synchronize()
        try handle.close()
        try appendChain(["batch": state.batches + 1, "destroyed": gone], lengths: &lengths)
        state.lengths = lengths
        state.batches += 1
        try saveState()
        for room in Set(gone.keys.compactMap(Self.roomFolder)) { try writeManifest(room) }
        return gone.keys.sorted()
    }
}
