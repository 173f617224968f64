import Testing

@testable import KafkaWire

@Suite("ACL messages")
struct AclMessagesTests {
    let entry = AclEntry(resourceType: 2, resourceName: "ministry-", patternType: 4, principal: "User:alice", host: "*", operation: 3, permission: 3)
    let filter = AclEntryFilter(resourceType: 1, resourceName: nil, patternType: 1, principal: "User:alice", host: nil, operation: 1, permission: 1)

    @Test("requests and answers read back as written, classic and flexible", arguments: [Int16(0), 1, 2, 3])
    func roundTrips(version: Int16) throws {
        var sent = entry
        if version == 0 { sent.patternType = 3 }
        var writer = ByteWriter()
        CreateAclsRequest(creations: [sent, sent]).encode(&writer, version: version)
        var reader = ByteReader(writer.bytes)
        #expect(try CreateAclsRequest.decode(&reader, version: version) == CreateAclsRequest(creations: [sent, sent]))
        #expect(reader.isAtEnd)

        writer = ByteWriter()
        var asked = filter
        if version == 0 { asked.patternType = 3 }
        DescribeAclsRequest(filter: asked).encode(&writer, version: version)
        reader = ByteReader(writer.bytes)
        #expect(try DescribeAclsRequest.decode(&reader, version: version) == DescribeAclsRequest(filter: asked))

        writer = ByteWriter()
        var other = sent
        other.resourceName = "orders"
        DescribeAclsResponse(errorCode: 0, acls: [sent, other, sent]).encode(&writer, version: version)
        reader = ByteReader(writer.bytes)
        // Grouped by resource on the wire: both ACLs of "ministry-" come first.
        #expect(try DescribeAclsResponse.decode(&reader, version: version).acls == [sent, sent, other])

        writer = ByteWriter()
        DeleteAclsRequest(filters: [asked]).encode(&writer, version: version)
        reader = ByteReader(writer.bytes)
        #expect(try DeleteAclsRequest.decode(&reader, version: version) == DeleteAclsRequest(filters: [asked]))

        writer = ByteWriter()
        let deleted = DeleteAclsResponse(results: [.init(errorCode: 0, deleted: [sent]), .init(errorCode: 42, errorMessage: "bad", deleted: [])])
        deleted.encode(&writer, version: version)
        reader = ByteReader(writer.bytes)
        #expect(try DeleteAclsResponse.decode(&reader, version: version) == deleted)

        writer = ByteWriter()
        let created = CreateAclsResponse(results: [.init(errorCode: 0), .init(errorCode: 31, errorMessage: "no")])
        created.encode(&writer, version: version)
        reader = ByteReader(writer.bytes)
        #expect(try CreateAclsResponse.decode(&reader, version: version) == created)
    }

    @Test("a truncated request is a clear error")
    func truncated() {
        var writer = ByteWriter()
        CreateAclsRequest(creations: [entry]).encode(&writer, version: 1)
        var reader = ByteReader(Array(writer.bytes.dropLast(3)))
        #expect(throws: WireError.self) { try CreateAclsRequest.decode(&reader, version: 1) }
    }
}
