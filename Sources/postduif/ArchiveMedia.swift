import Archive
import ChatWire
import Foundation
import PostduifClient

/// The chat's uploaded files as the archive reads them: `chat-media-index`
/// (compacted: media id to content type, size, SHA-256 and the place of
/// each chunk) followed into memory from its start, and a file's chunks
/// read from `chat-media` where the index puts them. A file whose chunks
/// are gone (the chat's retention) or do not add up to the index's
/// SHA-256 is not read: the archive marks it missing.
actor ArchiveMedia {
    private struct Entry: Decodable {
        var contentType: String
        var fileName: String?
        var sha256: String
        var chunks: [[Int64]]

        enum CodingKeys: String, CodingKey {
            case contentType = "content_type"
            case fileName = "file_name"
            case sha256
            case chunks
        }
    }

    private let client: KafkaClient
    private let index: GroupConsumer
    private let chunks: GroupConsumer
    private var entries: [String: Entry] = [:]
    private var following = false

    /// `group`: the group the two readers name (they never join it or commit).
    init(client: KafkaClient, group: String, clock: @escaping @Sendable () -> Int64) {
        self.client = client
        var settings = GroupConsumer.Configuration(group: group)
        settings.offsetReset = .earliest
        index = GroupConsumer(client: client, configuration: settings, clock: clock)
        chunks = GroupConsumer(client: client, configuration: settings, clock: clock)
    }

    /// The files among `ids` that could be read, by media id.
    func files(_ ids: [String]) async throws -> [String: ArchivedMedia] {
        guard !ids.isEmpty else { return [:] }
        try await catchUp()
        var found: [String: ArchivedMedia] = [:]
        for id in Set(ids) {
            guard let entry = entries[id], let bytes = try await read(entry), ArchiveStore.sha256(bytes) == entry.sha256 else { continue }
            found[id] = ArchivedMedia(bytes: bytes, contentType: entry.contentType, fileName: entry.fileName)
        }
        return found
    }

    /// Reads the index up to its end (an event is archived after its file
    /// was uploaded, so its entry is there by then).
    private func catchUp() async throws {
        if !following {
            let count = try await client.partitionCount(ChatTopicNames.mediaIndex)
            try await index.assign(Dictionary(uniqueKeysWithValues: (0..<count).map { (TopicPartition(ChatTopicNames.mediaIndex, $0), nil as Int64?) }))
            following = true
        }
        while true {
            let records = try await index.poll(maxWaitMilliseconds: 0)
            guard !records.isEmpty else { return }
            for record in records {
                guard let key = record.key, let id = String(validating: key, as: UTF8.self) else { continue }
                entries[id] = record.value.flatMap { try? JSONDecoder().decode(Entry.self, from: Data($0)) }
            }
        }
    }

    /// A file's bytes, its chunks in order; nil when one cannot be read.
    private func read(_ entry: Entry) async throws -> Data? {
        var bytes = Data()
        for chunk in entry.chunks {
            guard chunk.count == 2, let partition = Int32(exactly: chunk[0]) else { return nil }
            let place = TopicPartition(ChatTopicNames.media, partition)
            try await chunks.assign([place: chunk[1]])
            var value: [UInt8]? = nil
            // A few fetches at most: the record is there, or retention took it
            // (the position then moves past it, or stays with nothing to read).
            for _ in 0..<5 where value == nil {
                let records = try await chunks.poll(maxWaitMilliseconds: 200)
                if let record = records.first(where: { $0.offset == chunk[1] }) {
                    value = record.value
                } else if records.contains(where: { $0.offset > chunk[1] }) {
                    break
                }
            }
            guard let value else { return nil }
            bytes.append(contentsOf: value)
        }
        return bytes
    }
}
