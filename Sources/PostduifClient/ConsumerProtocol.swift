import KafkaWire

/// The "consumer" protocol's metadata inside JoinGroup and SyncGroup, as
/// every Kafka client writes it, so a group may mix this library's
/// members with librdkafka's or the Java client's.
enum ConsumerProtocol {
    /// What a member subscribes to. Versions above 0 add owned partitions,
    /// a generation and a rack after these fields; they are read past.
    static func subscription(topics: [String]) -> [UInt8] {
        var writer = ByteWriter(capacity: 64)
        writer.writeInt16(0)
        writer.writeArray(topics.sorted()) { $0.writeString($1) }
        writer.writeNullableBytes(nil)
        return writer.bytes
    }

    static func topics(ofSubscription bytes: [UInt8]) -> [String] {
        var reader = ByteReader(bytes)
        guard (try? reader.readInt16()) != nil else { return [] }
        return (try? reader.readArray { (reader: inout ByteReader) throws(WireError) -> String in try reader.readString() }) ?? []
    }

    static func assignment(_ partitions: [TopicPartition]) -> [UInt8] {
        var writer = ByteWriter(capacity: 64)
        writer.writeInt16(0)
        let byTopic = Dictionary(grouping: partitions, by: \.topic).sorted { $0.key < $1.key }
        writer.writeArray(byTopic) { writer, entry in
            writer.writeString(entry.key)
            writer.writeArray(entry.value.map(\.partition).sorted()) { $0.writeInt32($1) }
        }
        writer.writeNullableBytes(nil)
        return writer.bytes
    }

    static func partitions(ofAssignment bytes: [UInt8]) -> [TopicPartition] {
        guard !bytes.isEmpty else { return [] }
        var reader = ByteReader(bytes)
        guard (try? reader.readInt16()) != nil else { return [] }
        let topics = (try? reader.readArray { (reader: inout ByteReader) throws(WireError) -> [TopicPartition] in
            let topic = try reader.readString()
            let partitions = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() } ?? []
            return partitions.map { TopicPartition(topic, $0) }
        }) ?? []
        return topics.flatMap { $0 }
    }

    /// Kafka's range assignor: per topic, its members in id order take
    /// consecutive ranges, the first ones one more when it does not divide.
    static func range(members: [String: [String]], partitionCounts: [String: Int32]) -> [String: [TopicPartition]] {
        var assigned: [String: [TopicPartition]] = Dictionary(uniqueKeysWithValues: members.keys.map { ($0, []) })
        for (topic, count) in partitionCounts {
            let subscribers = members.filter { $0.value.contains(topic) }.keys.sorted()
            guard !subscribers.isEmpty else { continue }
            let each = Int(count) / subscribers.count
            let extra = Int(count) % subscribers.count
            var next = 0
            for (position, member) in subscribers.enumerated() {
                let take = each + (position < extra ? 1 : 0)
                assigned[member, default: []] += (next..<next + take).map { TopicPartition(topic, Int32($0)) }
                next += take
            }
        }
        return assigned
    }

    /// Kafka's round-robin assignor: every partition of every subscribed
    /// topic in order, dealt to the members that subscribe to its topic.
    static func roundRobin(members: [String: [String]], partitionCounts: [String: Int32]) -> [String: [TopicPartition]] {
        var assigned: [String: [TopicPartition]] = Dictionary(uniqueKeysWithValues: members.keys.map { ($0, []) })
        let order = members.keys.sorted()
        var turn = 0
        for topic in partitionCounts.keys.sorted() {
            for partition in 0..<(partitionCounts[topic] ?? 0) {
                for _ in 0..<order.count {
                    let member = order[turn % order.count]
                    turn += 1
                    if members[member]?.contains(topic) == true {
                        assigned[member, default: []].append(TopicPartition(topic, partition))
                        break
                    }
                }
            }
        }
        return assigned
    }
}
