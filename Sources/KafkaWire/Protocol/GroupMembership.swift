// The classic consumer-group protocol, membership: JoinGroup 0-5, SyncGroup
// 0-3, Heartbeat 0-3, LeaveGroup 0-2 (none of them flexible).

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
