// DescribeGroups 0-4 and ListGroups 0-2 (none of them flexible).

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
