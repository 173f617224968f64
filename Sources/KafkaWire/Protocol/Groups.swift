// The classic consumer-group protocol: JoinGroup 0-5, SyncGroup 0-3,
// Heartbeat 0-3, LeaveGroup 0-2, OffsetCommit 2-7, OffsetFetch 1-5,
// DescribeGroups 0-4, ListGroups 0-2 (none of them flexible).

public struct JoinGroupRequest: Sendable, Equatable {
    public var groupID: String
    public var sessionTimeoutMilliseconds: Int32
    public var rebalanceTimeoutMilliseconds: Int32
    public var memberID: String
    public var groupInstanceID: String?
    public var protocolType: String
    public var protocols: [(name: String, metadata: [UInt8])]

    public init(groupID: String, sessionTimeoutMilliseconds: Int32, rebalanceTimeoutMilliseconds: Int32, memberID: String, protocolType: String, protocols: [(name: String, metadata: [UInt8])]) {
        self.groupID = groupID
        self.sessionTimeoutMilliseconds = sessionTimeoutMilliseconds
        self.rebalanceTimeoutMilliseconds = rebalanceTimeoutMilliseconds
        self.memberID = memberID
        self.protocolType = protocolType
        self.protocols = protocols
    }

    public static func == (lhs: JoinGroupRequest, rhs: JoinGroupRequest) -> Bool {
        lhs.groupID == rhs.groupID && lhs.memberID == rhs.memberID && lhs.protocols.map(\.name) == rhs.protocols.map(\.name)
            && lhs.protocols.map(\.metadata) == rhs.protocols.map(\.metadata) && lhs.sessionTimeoutMilliseconds == rhs.sessionTimeoutMilliseconds
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> JoinGroupRequest {
        let groupID = try reader.readString("group id")
        let session = try reader.readInt32("session timeout")
        let rebalance = version >= 1 ? try reader.readInt32("rebalance timeout") : session
        let memberID = try reader.readString("member id")
        let instance = version >= 5 ? try reader.readNullableString("group instance id") : nil
        let protocolType = try reader.readString("protocol type")
        let protocols = try reader.readArray(elementBytesMin: 6, "protocols") { (reader: inout ByteReader) throws(WireError) -> (name: String, metadata: [UInt8]) in
            (try reader.readString("protocol name"), try reader.readNullableBytes("protocol metadata") ?? [])
        } ?? []
        var request = JoinGroupRequest(groupID: groupID, sessionTimeoutMilliseconds: session, rebalanceTimeoutMilliseconds: rebalance, memberID: memberID, protocolType: protocolType, protocols: protocols)
        request.groupInstanceID = instance
        return request
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(groupID)
        writer.writeInt32(sessionTimeoutMilliseconds)
        if version >= 1 { writer.writeInt32(rebalanceTimeoutMilliseconds) }
        writer.writeString(memberID)
        if version >= 5 { writer.writeString(groupInstanceID) }
        writer.writeString(protocolType)
        writer.writeArray(protocols) { writer, entry in
            writer.writeString(entry.name)
            writer.writeNullableBytes(entry.metadata)
        }
    }
}

public struct JoinGroupResponse: Sendable, Equatable {
    public struct Member: Sendable, Equatable {
        public var memberID: String
        public var groupInstanceID: String?
        public var metadata: [UInt8]

        public init(memberID: String, groupInstanceID: String? = nil, metadata: [UInt8]) {
            self.memberID = memberID
            self.groupInstanceID = groupInstanceID
            self.metadata = metadata
        }
    }

    public var throttleTimeMilliseconds: Int32 = 0
    public var errorCode: Int16
    public var generationID: Int32
    public var protocolName: String
    public var leader: String
    public var memberID: String
    public var members: [Member]

    public init(errorCode: Int16, generationID: Int32 = -1, protocolName: String = "", leader: String = "", memberID: String, members: [Member] = []) {
        self.errorCode = errorCode
        self.generationID = generationID
        self.protocolName = protocolName
        self.leader = leader
        self.memberID = memberID
        self.members = members
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 2 { writer.writeInt32(throttleTimeMilliseconds) }
        writer.writeInt16(errorCode)
        writer.writeInt32(generationID)
        writer.writeString(protocolName)
        writer.writeString(leader)
        writer.writeString(memberID)
        writer.writeArray(members) { writer, member in
            writer.writeString(member.memberID)
            if version >= 5 { writer.writeString(member.groupInstanceID) }
            writer.writeNullableBytes(member.metadata)
        }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> JoinGroupResponse {
        let throttle = version >= 2 ? try reader.readInt32() : 0
        var response = JoinGroupResponse(
            errorCode: try reader.readInt16(), generationID: try reader.readInt32(), protocolName: try reader.readString(),
            leader: try reader.readString(), memberID: try reader.readString())
        response.members = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Member in
            let id = try reader.readString()
            let instance = version >= 5 ? try reader.readNullableString() : nil
            return Member(memberID: id, groupInstanceID: instance, metadata: try reader.readNullableBytes() ?? [])
        } ?? []
        response.throttleTimeMilliseconds = throttle
        return response
    }
}

public struct SyncGroupRequest: Sendable, Equatable {
    public var groupID: String
    public var generationID: Int32
    public var memberID: String
    public var groupInstanceID: String?
    public var assignments: [String: [UInt8]]

    public init(groupID: String, generationID: Int32, memberID: String, assignments: [String: [UInt8]]) {
        self.groupID = groupID
        self.generationID = generationID
        self.memberID = memberID
        self.assignments = assignments
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> SyncGroupRequest {
        let groupID = try reader.readString("group id")
        let generation = try reader.readInt32("generation id")
        let memberID = try reader.readString("member id")
        let instance = version >= 3 ? try reader.readNullableString("group instance id") : nil
        var assignments: [String: [UInt8]] = [:]
        _ = try reader.readArray(elementBytesMin: 6, "assignments") { (reader: inout ByteReader) throws(WireError) -> Void in
            assignments[try reader.readString("member id")] = try reader.readNullableBytes("assignment") ?? []
        }
        var request = SyncGroupRequest(groupID: groupID, generationID: generation, memberID: memberID, assignments: assignments)
        request.groupInstanceID = instance
        return request
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(groupID)
        writer.writeInt32(generationID)
        writer.writeString(memberID)
        if version >= 3 { writer.writeString(groupInstanceID) }
        writer.writeArray(assignments.sorted { $0.key < $1.key }) { writer, entry in
            writer.writeString(entry.key)
            writer.writeNullableBytes(entry.value)
        }
    }
}

public struct SyncGroupResponse: Sendable, Equatable {
    public var throttleTimeMilliseconds: Int32 = 0
    public var errorCode: Int16
    public var assignment: [UInt8]

    public init(errorCode: Int16, assignment: [UInt8]) {
        self.errorCode = errorCode
        self.assignment = assignment
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 1 { writer.writeInt32(throttleTimeMilliseconds) }
        writer.writeInt16(errorCode)
        writer.writeNullableBytes(assignment)
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> SyncGroupResponse {
        let throttle = version >= 1 ? try reader.readInt32() : 0
        var response = SyncGroupResponse(errorCode: try reader.readInt16(), assignment: try reader.readNullableBytes() ?? [])
        response.throttleTimeMilliseconds = throttle
        return response
    }
}

public struct HeartbeatRequest: Sendable, Equatable {
    public var groupID: String
    public var generationID: Int32
    public var memberID: String

    public init(groupID: String, generationID: Int32, memberID: String) {
        self.groupID = groupID
        self.generationID = generationID
        self.memberID = memberID
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> HeartbeatRequest {
        let request = HeartbeatRequest(groupID: try reader.readString("group id"), generationID: try reader.readInt32("generation id"), memberID: try reader.readString("member id"))
        if version >= 3 { _ = try reader.readNullableString("group instance id") }
        return request
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(groupID)
        writer.writeInt32(generationID)
        writer.writeString(memberID)
        if version >= 3 { writer.writeString(nil) }
    }
}

/// Heartbeat and LeaveGroup answer with just an error code (and, from v1, a throttle time).
public struct ErrorOnlyResponse: Sendable, Equatable {
    public var errorCode: Int16

    public init(errorCode: Int16) {
        self.errorCode = errorCode
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 1 { writer.writeInt32(0) }
        writer.writeInt16(errorCode)
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> ErrorOnlyResponse {
        if version >= 1 { _ = try reader.readInt32() }
        return ErrorOnlyResponse(errorCode: try reader.readInt16())
    }
}

public struct LeaveGroupRequest: Sendable, Equatable {
    public var groupID: String
    public var memberID: String

    public init(groupID: String, memberID: String) {
        self.groupID = groupID
        self.memberID = memberID
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> LeaveGroupRequest {
        LeaveGroupRequest(groupID: try reader.readString("group id"), memberID: try reader.readString("member id"))
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(groupID)
        writer.writeString(memberID)
    }
}

public struct OffsetCommitRequest: Sendable, Equatable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var offset: Int64
        public var leaderEpoch: Int32
        public var metadata: String?

        public init(index: Int32, offset: Int64, leaderEpoch: Int32 = -1, metadata: String?) {
            self.index = index
            self.offset = offset
            self.leaderEpoch = leaderEpoch
            self.metadata = metadata
        }
    }

    public var groupID: String
    public var generationID: Int32
    public var memberID: String
    public var topics: [(name: String, partitions: [Partition])]

    public init(groupID: String, generationID: Int32, memberID: String, topics: [(name: String, partitions: [Partition])]) {
        self.groupID = groupID
        self.generationID = generationID
        self.memberID = memberID
        self.topics = topics
    }

    public static func == (lhs: OffsetCommitRequest, rhs: OffsetCommitRequest) -> Bool {
        lhs.groupID == rhs.groupID && lhs.generationID == rhs.generationID && lhs.memberID == rhs.memberID
            && lhs.topics.map(\.name) == rhs.topics.map(\.name) && lhs.topics.map(\.partitions) == rhs.topics.map(\.partitions)
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> OffsetCommitRequest {
        let groupID = try reader.readString("group id")
        let generation = try reader.readInt32("generation id")
        let memberID = try reader.readString("member id")
        if version >= 7 { _ = try reader.readNullableString("group instance id") }
        if version >= 2 && version <= 4 { _ = try reader.readInt64("retention time") }
        let topics = try reader.readArray(elementBytesMin: 6, "topics") { (reader: inout ByteReader) throws(WireError) -> (name: String, partitions: [Partition]) in
            let name = try reader.readString("topic")
            let partitions = try reader.readArray(elementBytesMin: 14, "partitions") { (reader: inout ByteReader) throws(WireError) -> Partition in
                let index = try reader.readInt32("partition")
                let offset = try reader.readInt64("offset")
                let epoch = version >= 6 ? try reader.readInt32("leader epoch") : -1
                return Partition(index: index, offset: offset, leaderEpoch: epoch, metadata: try reader.readNullableString("metadata"))
            } ?? []
            return (name, partitions)
        } ?? []
        return OffsetCommitRequest(groupID: groupID, generationID: generation, memberID: memberID, topics: topics)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(groupID)
        writer.writeInt32(generationID)
        writer.writeString(memberID)
        if version >= 7 { writer.writeString(nil) }
        if version >= 2 && version <= 4 { writer.writeInt64(-1) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                writer.writeInt64(partition.offset)
                if version >= 6 { writer.writeInt32(partition.leaderEpoch) }
                writer.writeString(partition.metadata)
            }
        }
    }
}

/// OffsetCommit's answer: an error code per partition.
public struct OffsetCommitResponse: Sendable, Equatable {
    public var topics: [(name: String, partitions: [(index: Int32, errorCode: Int16)])]

    public init(topics: [(name: String, partitions: [(index: Int32, errorCode: Int16)])]) {
        self.topics = topics
    }

    public static func == (lhs: OffsetCommitResponse, rhs: OffsetCommitResponse) -> Bool {
        lhs.topics.map(\.name) == rhs.topics.map(\.name)
            && lhs.topics.map { $0.partitions.map(\.index) } == rhs.topics.map { $0.partitions.map(\.index) }
            && lhs.topics.map { $0.partitions.map(\.errorCode) } == rhs.topics.map { $0.partitions.map(\.errorCode) }
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 3 { writer.writeInt32(0) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                writer.writeInt16(partition.errorCode)
            }
        }
    }
}

public struct OffsetFetchRequest: Sendable, Equatable {
    public var groupID: String
    /// Nil asks for every committed partition of the group (v2+).
    public var topics: [(name: String, partitions: [Int32])]?

    public init(groupID: String, topics: [(name: String, partitions: [Int32])]?) {
        self.groupID = groupID
        self.topics = topics
    }

    public static func == (lhs: OffsetFetchRequest, rhs: OffsetFetchRequest) -> Bool {
        lhs.groupID == rhs.groupID && lhs.topics?.map(\.name) == rhs.topics?.map(\.name) && lhs.topics?.map(\.partitions) == rhs.topics?.map(\.partitions)
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> OffsetFetchRequest {
        let groupID = try reader.readString("group id")
        let topics = try reader.readArray(elementBytesMin: 6, "topics") { (reader: inout ByteReader) throws(WireError) -> (name: String, partitions: [Int32]) in
            let name = try reader.readString("topic")
            let partitions = try reader.readArray(elementBytesMin: 4, "partitions") { (reader: inout ByteReader) throws(WireError) -> Int32 in try reader.readInt32() } ?? []
            return (name, partitions)
        }
        return OffsetFetchRequest(groupID: groupID, topics: topics)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeString(groupID)
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { $0.writeInt32($1) }
        }
    }
}

public struct OffsetFetchResponse: Sendable {
    public struct Partition: Sendable, Equatable {
        public var index: Int32
        public var offset: Int64
        public var leaderEpoch: Int32
        public var metadata: String?
        public var errorCode: Int16

        public init(index: Int32, offset: Int64, leaderEpoch: Int32, metadata: String?, errorCode: Int16) {
            self.index = index
            self.offset = offset
            self.leaderEpoch = leaderEpoch
            self.metadata = metadata
            self.errorCode = errorCode
        }
    }

    public var topics: [(name: String, partitions: [Partition])]
    public var errorCode: Int16

    public init(topics: [(name: String, partitions: [Partition])], errorCode: Int16 = 0) {
        self.topics = topics
        self.errorCode = errorCode
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 3 { writer.writeInt32(0) }
        writer.writeArray(topics) { writer, topic in
            writer.writeString(topic.name)
            writer.writeArray(topic.partitions) { writer, partition in
                writer.writeInt32(partition.index)
                writer.writeInt64(partition.offset)
                if version >= 5 { writer.writeInt32(partition.leaderEpoch) }
                writer.writeString(partition.metadata)
                writer.writeInt16(partition.errorCode)
            }
        }
        if version >= 2 { writer.writeInt16(errorCode) }
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> OffsetFetchResponse {
        if version >= 3 { _ = try reader.readInt32() }
        let topics = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> (name: String, partitions: [Partition]) in
            let name = try reader.readString()
            let partitions = try reader.readArray { (reader: inout ByteReader) throws(WireError) -> Partition in
                let index = try reader.readInt32()
                let offset = try reader.readInt64()
                let epoch = version >= 5 ? try reader.readInt32() : -1
                return Partition(index: index, offset: offset, leaderEpoch: epoch, metadata: try reader.readNullableString(), errorCode: try reader.readInt16())
            } ?? []
            return (name, partitions)
        } ?? []
        let error = version >= 2 ? try reader.readInt16() : 0
        return OffsetFetchResponse(topics: topics, errorCode: error)
    }
}

public struct DescribeGroupsRequest: Sendable, Equatable {
    public var groups: [String]

    public init(groups: [String]) {
        self.groups = groups
    }

    public static func decode(_ reader: inout ByteReader, version: Int16) throws(WireError) -> DescribeGroupsRequest {
        let groups = try reader.readArray(elementBytesMin: 2, "groups") { (reader: inout ByteReader) throws(WireError) -> String in try reader.readString() } ?? []
        if version >= 3 { _ = try reader.readBool() }
        return DescribeGroupsRequest(groups: groups)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        writer.writeArray(groups) { $0.writeString($1) }
        if version >= 3 { writer.writeBool(false) }
    }
}

public struct DescribeGroupsResponse: Sendable, Equatable {
    public struct Member: Sendable, Equatable {
        public var memberID: String
        public var clientID: String
        public var clientHost: String
        public var metadata: [UInt8]
        public var assignment: [UInt8]

        public init(memberID: String, clientID: String, clientHost: String, metadata: [UInt8], assignment: [UInt8]) {
            self.memberID = memberID
            self.clientID = clientID
            self.clientHost = clientHost
            self.metadata = metadata
            self.assignment = assignment
        }
    }

    public struct Group: Sendable, Equatable {
        public var errorCode: Int16
        public var groupID: String
        public var state: String
        public var protocolType: String
        public var protocolName: String
        public var members: [Member]

        public init(errorCode: Int16, groupID: String, state: String, protocolType: String, protocolName: String, members: [Member]) {
            self.errorCode = errorCode
            self.groupID = groupID
            self.state = state
            self.protocolType = protocolType
            self.protocolName = protocolName
            self.members = members
        }
    }

    public var groups: [Group]

    public init(groups: [Group]) {
        self.groups = groups
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 1 { writer.writeInt32(0) }
        writer.writeArray(groups) { writer, group in
            writer.writeInt16(group.errorCode)
            writer.writeString(group.groupID)
            writer.writeString(group.state)
            writer.writeString(group.protocolType)
            writer.writeString(group.protocolName)
            writer.writeArray(group.members) { writer, member in
                writer.writeString(member.memberID)
                if version >= 4 { writer.writeString(nil) }
                writer.writeString(member.clientID)
                writer.writeString(member.clientHost)
                writer.writeNullableBytes(member.metadata)
                writer.writeNullableBytes(member.assignment)
            }
            if version >= 3 { writer.writeInt32(Int32.min) }
        }
    }
}

public struct ListGroupsResponse: Sendable, Equatable {
    public var errorCode: Int16
    public var groups: [(groupID: String, protocolType: String)]

    public init(errorCode: Int16, groups: [(groupID: String, protocolType: String)]) {
        self.errorCode = errorCode
        self.groups = groups
    }

    public static func == (lhs: ListGroupsResponse, rhs: ListGroupsResponse) -> Bool {
        lhs.errorCode == rhs.errorCode && lhs.groups.map(\.groupID) == rhs.groups.map(\.groupID)
    }

    public func encode(_ writer: inout ByteWriter, version: Int16) {
        if version >= 1 { writer.writeInt32(0) }
        writer.writeInt16(errorCode)
        writer.writeArray(groups) { writer, group in
            writer.writeString(group.groupID)
            writer.writeString(group.protocolType)
        }
    }
}
