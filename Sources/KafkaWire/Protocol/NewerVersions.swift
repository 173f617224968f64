// Versions of APIs the broker serves that Kafka defines above the broker's
// highest. A client that skips ApiVersions (or ignores its answer) and asks
// for one gets UNSUPPORTED_VERSION in that version's own schema, where the
// client reads its errors: the top-level error code where the version has
// one, else each topic, partition, group or resource it asked about; never
// a connection closed without a word. The request is read only as far as
// those names need. Almost every such version is flexible (compact strings
// and arrays, tagged fields); LeaveGroup v3 is the one that is not.

public enum NewerVersionAnswer {
    /// The highest version of each API that Kafka's message schemas define
    /// (those kafka-python 3.0.12's codecs are generated from). Above it no
    /// schema exists a client could read an answer in, so that request
    /// closes its connection as before.
    public static let kafkaHighest: [ApiKey: Int16] = [
        .produce: 13, .fetch: 18, .listOffsets: 11, .metadata: 13, .offsetCommit: 10, .offsetFetch: 10,
        .findCoordinator: 6, .joinGroup: 9, .heartbeat: 4, .leaveGroup: 5, .syncGroup: 5, .describeGroups: 6,
        .listGroups: 5, .saslAuthenticate: 2, .createTopics: 7, .deleteTopics: 6, .initProducerId: 6,
        .offsetForLeaderEpoch: 4, .alterConfigs: 2, .describeLogDirs: 5, .describeCluster: 2,
        .alterPartitionReassignments: 1,
    ]

    /// A topic as a request names it: by name, or from the version that
    /// brought topic ids into that API (KIP-516), by id.
    enum TopicKey {
        case name(String)
        case id([UInt8])
    }

    /// The answer's body for `api` at `version`, above the broker's range
    /// and at most `kafkaHighest`; nil when no schema exists for it, or for
    /// a Produce with acks=0, whose client reads no answer (its connection
    /// closes, which is how Kafka tells such a producer of an error).
    /// `message` goes into the error-message fields the schema has.
    public static func body(_ api: ApiKey, version v: Int16, message: String, request reader: inout ByteReader) throws(WireError) -> [UInt8]? {
        guard let highest = kafkaHighest[api], v <= highest else { return nil }
        let c = v >= api.firstFlexibleVersion
        try reader.tagged(c)  // the request header's tagged fields
        let refused = ErrorCode.unsupportedVersion.rawValue
        var w = ByteWriter(capacity: 64)
        switch api {
        case .produce:
            _ = try reader.readNullableString(compact: c, "transactional id")
            let acks = try reader.readInt16("acks")
            _ = try reader.readInt32("timeout")
            let topics = try reader.partitionsByTopic(compact: c, byID: v >= 13, partitionBytesMin: 5) { (r: inout ByteReader) throws(WireError) in
                try r.skipNullableBytes(compact: c, "records")
            }
            guard acks != 0 else { return nil }
            w.partitionsByTopic(topics, compact: c) { w, index in
                w.writeInt32(index)
                w.writeInt16(refused)
                w.writeInt64(-1)  // base offset
                w.writeInt64(-1)  // log append time
                w.writeInt64(-1)  // log start offset
                w.writeArrayCount(0, compact: c)  // record errors
                w.writeString(message, compact: c)
            }
            w.writeInt32(0)  // throttle time
        case .fetch:
            w.writeInt32(0)  // throttle time
            w.writeInt16(refused)
            w.writeInt32(0)  // session id
            w.writeArrayCount(0, compact: c)
        case .listOffsets:
            _ = try reader.readInt32("replica id")
            _ = try reader.readInt8("isolation level")
            let topics = try reader.partitionsByTopic(compact: c, partitionBytesMin: 16) { (r: inout ByteReader) throws(WireError) in
                _ = try r.readInt32("current leader epoch")
                _ = try r.readInt64("timestamp")
            }
            w.writeInt32(0)
            w.partitionsByTopic(topics, compact: c) { w, index in
                w.writeInt32(index)
                w.writeInt16(refused)
                w.writeInt64(-1)  // timestamp
                w.writeInt64(-1)  // offset
                w.writeInt32(-1)  // leader epoch
            }
        case .metadata:
            let topics = try reader.readArray(compact: c, "topics") { (r: inout ByteReader) throws(WireError) -> (id: [UInt8], name: String?) in
                let id = v >= 10 ? try r.readBytes(16, "topic id") : [UInt8](repeating: 0, count: 16)
                let name = try r.readNullableString(compact: c, "topic")
                try r.tagged(c)
                return (id, name)
            } ?? []
            w.writeInt32(0)
            w.writeArrayCount(0, compact: c)  // brokers
            w.writeString(nil, compact: c)  // cluster id
            w.writeInt32(-1)  // controller
            w.writeArray(topics, compact: c) { w, topic in
                w.writeInt16(refused)
                // Null only where the schema lets a topic asked for by id be nameless.
                w.writeString(topic.name ?? (v >= 12 ? nil : ""), compact: c)
                if v >= 10 { w.writeBytes(topic.id) }
                w.writeBool(false)  // internal
                w.writeArrayCount(0, compact: c)  // partitions
                w.writeInt32(Int32.min)  // authorized operations: not asked
                w.tagged(c)
            }
            if v <= 10 { w.writeInt32(Int32.min) }  // cluster authorized operations
            if v >= 13 { w.writeInt16(refused) }
        case .offsetCommit:
            _ = try reader.readString(compact: c, "group id")
            _ = try reader.readInt32("generation")
            _ = try reader.readString(compact: c, "member id")
            _ = try reader.readNullableString(compact: c, "group instance id")
            let topics = try reader.partitionsByTopic(compact: c, byID: v >= 10, partitionBytesMin: 17) { (r: inout ByteReader) throws(WireError) in
                _ = try r.readInt64("offset")
                _ = try r.readInt32("leader epoch")
                _ = try r.readNullableString(compact: c, "metadata")
            }
            w.writeInt32(0)
            w.partitionsByTopic(topics, compact: c) { w, index in
                w.writeInt32(index)
                w.writeInt16(refused)
            }
        case .offsetFetch where v < 8:
            w.writeInt32(0)
            w.writeArrayCount(0, compact: c)  // topics
            w.writeInt16(refused)
        case .offsetFetch:
            let groups = try reader.readArray(compact: c, "groups") { (r: inout ByteReader) throws(WireError) -> String in
                let group = try r.readString(compact: c, "group id")
                if v >= 9 {
                    _ = try r.readNullableString(compact: c, "member id")
                    _ = try r.readInt32("member epoch")
                }
                _ = try r.readArray(compact: c, "topics") { (r: inout ByteReader) throws(WireError) in
                    _ = try r.topicKey(byID: v >= 10, compact: c)
                    _ = try r.readArray(compact: c, elementBytesMin: 4, "partitions") { (r: inout ByteReader) throws(WireError) in _ = try r.readInt32("partition") }
                    try r.tagged(c)
                }
                try r.tagged(c)
                return group
            } ?? []
            w.writeInt32(0)
            w.writeArray(groups, compact: c) { w, group in
                w.writeString(group, compact: c)
                w.writeArrayCount(0, compact: c)  // topics
                w.writeInt16(refused)
                w.tagged(c)
            }
        case .findCoordinator where v < 4:
            w.writeInt32(0)
            w.writeInt16(refused)
            w.writeString(message, compact: c)
            w.writeInt32(-1)  // node
            w.writeString("", compact: c)  // host
            w.writeInt32(-1)  // port
        case .findCoordinator:
            _ = try reader.readInt8("key type")
            let keys = try reader.readArray(compact: c, "coordinator keys") { (r: inout ByteReader) throws(WireError) -> String in
                try r.readString(compact: c, "key")
            } ?? []
            w.writeInt32(0)
            w.writeArray(keys, compact: c) { w, key in
                w.writeString(key, compact: c)
                w.writeInt32(-1)  // node
                w.writeString("", compact: c)  // host
                w.writeInt32(-1)  // port
                w.writeInt16(refused)
                w.writeString(message, compact: c)
                w.tagged(c)
            }
        case .joinGroup:
            w.writeInt32(0)
            w.writeInt16(refused)
            w.writeInt32(-1)  // generation
            if v >= 7 { w.writeString(nil, compact: c) }  // protocol type
            w.writeString(v >= 7 ? nil : "", compact: c)  // protocol name
            w.writeString("", compact: c)  // leader
            if v >= 9 { w.writeBool(false) }  // skip assignment
            w.writeString("", compact: c)  // member id
            w.writeArrayCount(0, compact: c)  // members
        case .heartbeat, .listGroups:
            w.writeInt32(0)
            w.writeInt16(refused)
            if api == .listGroups { w.writeArrayCount(0, compact: c) }
        case .leaveGroup:
            w.writeInt32(0)
            w.writeInt16(refused)
            w.writeArrayCount(0, compact: c)  // members
        case .syncGroup:
            w.writeInt32(0)
            w.writeInt16(refused)
            if v >= 5 {
                w.writeString(nil, compact: c)  // protocol type
                w.writeString(nil, compact: c)  // protocol name
            }
            w.writeNullableBytes([], compact: c)  // assignment
        case .describeGroups:
            let groups = try reader.readArray(compact: c, "groups") { (r: inout ByteReader) throws(WireError) -> String in
                try r.readString(compact: c, "group id")
            } ?? []
            w.writeInt32(0)
            w.writeArray(groups, compact: c) { w, group in
                w.writeInt16(refused)
                if v >= 6 { w.writeString(message, compact: c) }
                w.writeString(group, compact: c)
                w.writeString("", compact: c)  // state
                w.writeString("", compact: c)  // protocol type
                w.writeString("", compact: c)  // protocol data
                w.writeArrayCount(0, compact: c)  // members
                w.writeInt32(Int32.min)  // authorized operations
                w.tagged(c)
            }
        case .saslAuthenticate:
            w.writeInt16(refused)
            w.writeString(message, compact: c)
            w.writeNullableBytes([], compact: c)  // auth bytes
            w.writeInt64(0)  // session lifetime
        case .createTopics:
            let names = try reader.readArray(compact: c, "topics") { (r: inout ByteReader) throws(WireError) -> String in
                let name = try r.readString(compact: c, "topic")
                _ = try r.readInt32("partitions")
                _ = try r.readInt16("replication factor")
                _ = try r.readArray(compact: c, "assignments") { (r: inout ByteReader) throws(WireError) in
                    _ = try r.readInt32("partition")
                    _ = try r.readArray(compact: c, elementBytesMin: 4, "brokers") { (r: inout ByteReader) throws(WireError) in _ = try r.readInt32("broker") }
                    try r.tagged(c)
                }
                _ = try r.readArray(compact: c, "configs") { (r: inout ByteReader) throws(WireError) in
                    _ = try r.readString(compact: c, "config")
                    _ = try r.readNullableString(compact: c, "value")
                    try r.tagged(c)
                }
                try r.tagged(c)
                return name
            } ?? []
            w.writeInt32(0)
            w.writeArray(names, compact: c) { w, name in
                w.writeString(name, compact: c)
                if v >= 7 { w.writeBytes([UInt8](repeating: 0, count: 16)) }  // topic id
                w.writeInt16(refused)
                w.writeString(message, compact: c)
                w.writeInt32(-1)  // partitions
                w.writeInt16(-1)  // replication factor
                w.writeArrayCount(nil, compact: c)  // configs
                w.tagged(c)
            }
        case .deleteTopics:
            let topics: [(name: String?, id: [UInt8])]
            if v >= 6 {
                topics = try reader.readArray(compact: c, "topics") { (r: inout ByteReader) throws(WireError) -> (name: String?, id: [UInt8]) in
                    let name = try r.readNullableString(compact: c, "topic")
                    let id = try r.readBytes(16, "topic id")
                    try r.tagged(c)
                    return (name, id)
                } ?? []
            } else {
                topics = try reader.readArray(compact: c, "topic names") { (r: inout ByteReader) throws(WireError) -> (name: String?, id: [UInt8]) in
                    (try r.readString(compact: c, "topic"), [])
                } ?? []
            }
            w.writeInt32(0)
            w.writeArray(topics, compact: c) { w, topic in
                w.writeString(topic.name ?? (v >= 6 ? nil : ""), compact: c)
                if v >= 6 { w.writeBytes(topic.id) }
                w.writeInt16(refused)
                if v >= 5 { w.writeString(message, compact: c) }
                w.tagged(c)
            }
        case .initProducerId:
            w.writeInt32(0)
            w.writeInt16(refused)
            w.writeInt64(-1)  // producer id
            w.writeInt16(-1)  // epoch
            if v >= 6 {
                w.writeInt64(-1)  // ongoing transaction's producer id
                w.writeInt16(-1)  // and epoch
            }
        case .offsetForLeaderEpoch:
            _ = try reader.readInt32("replica id")
            let topics = try reader.partitionsByTopic(compact: c, partitionBytesMin: 12) { (r: inout ByteReader) throws(WireError) in
                _ = try r.readInt32("current leader epoch")
                _ = try r.readInt32("leader epoch")
            }
            w.writeInt32(0)
            w.partitionsByTopic(topics, compact: c) { w, index in
                w.writeInt16(refused)
                w.writeInt32(index)
                w.writeInt32(-1)  // leader epoch
                w.writeInt64(-1)  // end offset
            }
        case .alterConfigs:
            let resources = try reader.readArray(compact: c, "resources") { (r: inout ByteReader) throws(WireError) -> (Int8, String) in
                let type = try r.readInt8("resource type")
                let name = try r.readString(compact: c, "resource name")
                _ = try r.readArray(compact: c, "configs") { (r: inout ByteReader) throws(WireError) in
                    _ = try r.readString(compact: c, "config")
                    _ = try r.readNullableString(compact: c, "value")
                    try r.tagged(c)
                }
                try r.tagged(c)
                return (type, name)
            } ?? []
            w.writeInt32(0)
            w.writeArray(resources, compact: c) { w, resource in
                w.writeInt16(refused)
                w.writeString(message, compact: c)
                w.writeInt8(resource.0)
                w.writeString(resource.1, compact: c)
                w.tagged(c)
            }
        case .describeLogDirs:
            w.writeInt32(0)
            w.writeInt16(refused)
            w.writeArrayCount(0, compact: c)  // results
        case .describeCluster:
            w.writeInt32(0)
            w.writeInt16(refused)
            w.writeString(message, compact: c)
            w.writeInt8(1)  // endpoint type: brokers
            w.writeString("", compact: c)  // cluster id
            w.writeInt32(-1)  // controller
            w.writeArrayCount(0, compact: c)  // brokers
            w.writeInt32(Int32.min)  // authorized operations
        case .alterPartitionReassignments:
            w.writeInt32(0)
            w.writeBool(true)  // replication factor change allowed
            w.writeInt16(refused)
            w.writeString(message, compact: c)
            w.writeArrayCount(0, compact: c)  // responses
        default:
            return nil
        }
        w.tagged(c)
        return w.bytes
    }
}

extension ByteReader {
    /// Skips a flexible version's tagged fields; nothing in a classic one.
    fileprivate mutating func tagged(_ flexible: Bool) throws(WireError) {
        if flexible { try skipTaggedFields() }
    }

    fileprivate mutating func topicKey(byID: Bool, compact: Bool) throws(WireError) -> NewerVersionAnswer.TopicKey {
        byID ? .id(try readBytes(16, "topic id")) : .name(try readString(compact: compact, "topic"))
    }

    /// `topics[name (or id), partitions[index, …, tagged], tagged]`: each
    /// topic with its partitions' indexes, the rest of each partition read
    /// by `rest`.
    fileprivate mutating func partitionsByTopic(compact: Bool, byID: Bool = false, partitionBytesMin: Int,
                                                _ rest: (inout ByteReader) throws(WireError) -> Void) throws(WireError) -> [(NewerVersionAnswer.TopicKey, [Int32])] {
        try readArray(compact: compact, "topics") { (r: inout ByteReader) throws(WireError) -> (NewerVersionAnswer.TopicKey, [Int32]) in
            let key = try r.topicKey(byID: byID, compact: compact)
            let partitions = try r.readArray(compact: compact, elementBytesMin: partitionBytesMin, "partitions") { (r: inout ByteReader) throws(WireError) -> Int32 in
                let index = try r.readInt32("partition")
                try rest(&r)
                try r.tagged(compact)
                return index
            } ?? []
            try r.tagged(compact)
            return (key, partitions)
        } ?? []
    }

    /// Passes over a nullable byte field (a Produce's records) without copying it.
    fileprivate mutating func skipNullableBytes(compact: Bool, _ what: StaticString) throws(WireError) {
        if let length = try readLength(compact: compact, wide: true, what) { _ = try skip(length, what) }
    }
}

extension ByteWriter {
    /// An empty tagged-field section in a flexible version; nothing in a classic one.
    fileprivate mutating func tagged(_ flexible: Bool) {
        if flexible { writeEmptyTaggedFields() }
    }

    /// The answer's `topics[name (or id), partitions[…, tagged], tagged]`,
    /// each partition's fields written by `partition`.
    fileprivate mutating func partitionsByTopic(_ topics: [(NewerVersionAnswer.TopicKey, [Int32])], compact: Bool,
                                                _ partition: (inout ByteWriter, Int32) -> Void) {
        writeArray(topics, compact: compact) { w, topic in
            w.write(topic.0, compact: compact)
            w.writeArray(topic.1, compact: compact) { w, index in
                partition(&w, index)
                w.tagged(compact)
            }
            w.tagged(compact)
        }
    }

    fileprivate mutating func write(_ key: NewerVersionAnswer.TopicKey, compact: Bool) {
        switch key {
        case .name(let name): writeString(name, compact: compact)
        case .id(let id): writeBytes(id)
        }
    }
}
