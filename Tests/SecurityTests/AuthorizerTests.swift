import Security
import Testing

@Suite("Authorization by ACLs")
struct AuthorizerTests {
    let alice = Principal(name: "alice")
    let bob = Principal(name: "bob")

    func allow(_ operation: AclOperation, _ name: String, type: ResourceType = .topic, pattern: PatternType = .literal, principal: String = "User:alice", host: String = "*") -> AclBinding {
        AclBinding(resourceType: type, resourceName: name, patternType: pattern, principal: principal, host: host, operation: operation, permission: .allow)
    }

    @Test("no ACL, no access; super users may do anything")
    func defaults() {
        let authorizer = Authorizer(bindings: [], superUsers: ["User:admin"])
        #expect(!authorizer.authorize(alice, host: "10.0.0.1", .read, .topic, "t"))
        #expect(authorizer.authorize(Principal(name: "admin"), host: "10.0.0.1", .delete, .topic, "t"))
    }

    @Test("literal, wildcard and prefixed names; principals and hosts must match")
    func patterns() {
        let authorizer = Authorizer(bindings: [
            allow(.read, "orders"), allow(.write, "ministry-", pattern: .prefixed), allow(.read, "*", principal: "User:bob", host: "10.0.0.2"),
        ])
        #expect(authorizer.authorize(alice, host: "h", .read, .topic, "orders"))
        #expect(!authorizer.authorize(alice, host: "h", .read, .topic, "orders-2"))
        #expect(authorizer.authorize(alice, host: "h", .write, .topic, "ministry-bz"))
        #expect(!authorizer.authorize(alice, host: "h", .write, .topic, "min"))
        #expect(authorizer.authorize(bob, host: "10.0.0.2", .read, .topic, "anything"))
        #expect(!authorizer.authorize(bob, host: "10.0.0.3", .read, .topic, "anything"))
        #expect(!authorizer.authorize(alice, host: "h", .read, .group, "orders"), "a topic's ACL says nothing of a group of that name")
    }

    @Test("Describe is implied by Read, Write, Delete and Alter; DescribeConfigs by AlterConfigs; All covers everything")
    func implied() {
        let authorizer = Authorizer(bindings: [allow(.write, "w"), allow(.alterConfigs, "c"), allow(.all, "a")])
        #expect(authorizer.authorize(alice, host: "h", .describe, .topic, "w"))
        #expect(!authorizer.authorize(alice, host: "h", .read, .topic, "w"))
        #expect(authorizer.authorize(alice, host: "h", .describeConfigs, .topic, "c"))
        #expect(authorizer.authorize(alice, host: "h", .delete, .topic, "a"))
    }

    @Test("a deny wins over any allow; User:* applies to everyone")
    func denies() {
        let authorizer = Authorizer(bindings: [
            allow(.all, "ministry-", pattern: .prefixed),
            AclBinding(resourceType: .topic, resourceName: "ministry-secret", principal: "User:*", operation: .read, permission: .deny),
        ])
        #expect(!authorizer.authorize(alice, host: "h", .read, .topic, "ministry-secret"))
        #expect(authorizer.authorize(alice, host: "h", .write, .topic, "ministry-secret"), "the deny is of Read only")
        #expect(authorizer.authorize(alice, host: "h", .read, .topic, "ministry-open"))
    }

    @Test("an idempotent producer: IdempotentWrite on the cluster, or Write on some topic")
    func byResourceType() {
        let writer = Authorizer(bindings: [allow(.write, "orders")])
        #expect(writer.authorizeAny(alice, host: "h", .write, .topic))
        #expect(!writer.authorizeAny(bob, host: "h", .write, .topic))
        let denied = Authorizer(bindings: [allow(.write, "orders"), AclBinding(resourceType: .topic, resourceName: "*", principal: "User:alice", operation: .write, permission: .deny)])
        #expect(!denied.authorizeAny(alice, host: "h", .write, .topic))
    }

    @Test("filters: any, exact pattern and match")
    func filters() {
        let prefixed = allow(.write, "ministry-", pattern: .prefixed)
        let literal = allow(.read, "ministry-bz")
        let wildcard = allow(.describe, "*")
        #expect(AclFilter().matches(prefixed))
        #expect(AclFilter(resourceName: "ministry-bz", patternType: .match).matches(prefixed))
        #expect(AclFilter(resourceName: "ministry-bz", patternType: .match).matches(literal))
        #expect(AclFilter(resourceName: "ministry-bz", patternType: .match).matches(wildcard))
        #expect(!AclFilter(resourceName: "ministry-bz", patternType: .literal).matches(prefixed))
        #expect(AclFilter(resourceType: .topic, principal: "User:alice", operation: .read).matches(literal))
        #expect(!AclFilter(permission: .deny).matches(literal))
    }

    @Test("bindings Kafka would refuse to store are refused")
    func invalid() {
        #expect(allow(.read, "t").invalidity == nil)
        #expect(AclBinding(resourceType: .any, resourceName: "t", principal: "User:a", operation: .read).invalidity != nil)
        #expect(AclBinding(resourceType: .topic, resourceName: "t", patternType: .match, principal: "User:a", operation: .read).invalidity != nil)
        #expect(AclBinding(resourceType: .topic, resourceName: "t", principal: "alice", operation: .read).invalidity != nil)
        #expect(AclBinding(resourceType: .cluster, resourceName: "other", principal: "User:a", operation: .alter).invalidity != nil)
    }
}
