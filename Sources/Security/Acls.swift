/// Kafka's ACL model, by Kafka's numbers on the wire (KIP-140, KIP-290):
/// who (principal, host) may or may not (permission) do what (operation)
/// to which resources (type, and a name read literally or as a prefix).

public enum ResourceType: Int8, Sendable, Codable, CaseIterable {
    case unknown = 0
    case any = 1
    case topic = 2
    case group = 3
    case cluster = 4
    case transactionalId = 5
    case delegationToken = 6
    case user = 7

    /// The one name a cluster resource has.
    public static let clusterName = "kafka-cluster"
}

public enum PatternType: Int8, Sendable, Codable, CaseIterable {
    case unknown = 0
    /// A filter's: any pattern type.
    case any = 1
    /// A filter's: every binding that applies to the name (literal, `*`, prefixes).
    case match = 2
    case literal = 3
    case prefixed = 4
}

public enum AclOperation: Int8, Sendable, Codable, CaseIterable {
    case unknown = 0
    case any = 1
    case all = 2
    case read = 3
    case write = 4
    case create = 5
    case delete = 6
    case alter = 7
    case describe = 8
    case clusterAction = 9
    case describeConfigs = 10
    case alterConfigs = 11
    case idempotentWrite = 12

    /// Allowing one of these allows `self` too (Kafka's implied operations:
    /// Describe by Read, Write, Delete and Alter; DescribeConfigs by AlterConfigs).
    var impliedBy: [AclOperation] {
        switch self {
        case .describe: [.read, .write, .delete, .alter]
        case .describeConfigs: [.alterConfigs]
        default: []
        }
    }
}

public enum AclPermission: Int8, Sendable, Codable, CaseIterable {
    case unknown = 0
    case any = 1
    case deny = 2
    case allow = 3
}

/// One ACL.
public struct AclBinding: Sendable, Hashable, Codable, CustomStringConvertible {
    public var resourceType: ResourceType
    public var resourceName: String
    public var patternType: PatternType
    /// `User:alice`, or `User:*` for every principal.
    public var principal: String
    /// An address, or `*` for every host.
    public var host: String
    public var operation: AclOperation
    public var permission: AclPermission

    public init(resourceType: ResourceType, resourceName: String, patternType: PatternType = .literal, principal: String, host: String = "*",
                operation: AclOperation, permission: AclPermission = .allow) {
        self.resourceType = resourceType
        self.resourceName = resourceName
        self.patternType = patternType
        self.principal = principal
        self.host = host
        self.operation = operation
        self.permission = permission
    }

    /// Why a binding cannot be stored (Kafka refuses the same), nil if it can.
    public var invalidity: String? {
        if [.unknown, .any].contains(resourceType) { return "resource type \(resourceType) cannot be stored" }
        if ![.literal, .prefixed].contains(patternType) { return "pattern type must be literal or prefixed" }
        if [.unknown, .any].contains(operation) { return "operation \(operation) cannot be stored" }
        if ![.allow, .deny].contains(permission) { return "permission must be allow or deny" }
        if resourceName.isEmpty { return "resource name is empty" }
        if !principal.contains(":") { return "principal \(principal) is not Type:name" }
        if resourceType == .cluster && resourceName != ResourceType.clusterName { return "the cluster resource is named \(ResourceType.clusterName)" }
        return nil
    }

    /// Whether the binding's resource pattern covers `name`.
    func covers(_ name: String) -> Bool {
        switch patternType {
        case .literal: resourceName == "*" || resourceName == name
        case .prefixed: name.hasPrefix(resourceName)
        default: false
        }
    }

    public var description: String {
        "\(permission) \(principal) from \(host) to \(operation) \(resourceType) \(patternType == .prefixed ? "prefixed " : "")\(resourceName)"
    }
}

/// A filter over bindings, as DescribeAcls and DeleteAcls send it: `any`
/// and nil match everything; pattern `match` finds every binding that
/// applies to the named resource.
public struct AclFilter: Sendable, Hashable {
    public var resourceType: ResourceType
    public var resourceName: String?
    public var patternType: PatternType
    public var principal: String?
    public var host: String?
    public var operation: AclOperation
    public var permission: AclPermission

    public init(resourceType: ResourceType = .any, resourceName: String? = nil, patternType: PatternType = .any, principal: String? = nil,
                host: String? = nil, operation: AclOperation = .any, permission: AclPermission = .any) {
        self.resourceType = resourceType
        self.resourceName = resourceName
        self.patternType = patternType
        self.principal = principal
        self.host = host
        self.operation = operation
        self.permission = permission
    }

    public func matches(_ binding: AclBinding) -> Bool {
        guard resourceType == .any || resourceType == binding.resourceType,
              principal == nil || principal == binding.principal,
              host == nil || host == binding.host,
              operation == .any || operation == binding.operation,
              permission == .any || permission == binding.permission
        else { return false }
        switch patternType {
        case .any: return resourceName == nil || resourceName == binding.resourceName
        case .match: return resourceName.map { binding.covers($0) } ?? true
        default: return patternType == binding.patternType && (resourceName == nil || resourceName == binding.resourceName)
        }
    }
}

/// Decides requests by the ACLs, as Kafka's StandardAuthorizer does: super
/// users may do anything; otherwise a matching deny refuses, else a
/// matching allow (of the operation, `All`, or one implying it) permits,
/// else the request is refused (no ACL, no access).
public struct Authorizer: Sendable {
    public var bindings: [AclBinding]
    public var superUsers: Set<String>

    public init(bindings: [AclBinding], superUsers: Set<String> = []) {
        self.bindings = bindings
        self.superUsers = superUsers
    }

    public func authorize(_ principal: Principal, host: String, _ operation: AclOperation, _ type: ResourceType, _ name: String) -> Bool {
        if superUsers.contains(principal.description) { return true }
        let who = principal.description
        let wildcard = "\(principal.type):*"
        var allowed = false
        for binding in bindings where binding.resourceType == type && binding.covers(name)
            && (binding.principal == who || binding.principal == wildcard) && (binding.host == "*" || binding.host == host)
        {
            switch binding.permission {
            case .deny:
                // A deny of All, or of the operation itself, refuses (a
                // deny of Read does not refuse Describe, as in Kafka).
                if binding.operation == operation || binding.operation == .all { return false }
            case .allow:
                if binding.operation == operation || binding.operation == .all || operation.impliedBy.contains(binding.operation) { allowed = true }
            default:
                continue
            }
        }
        return allowed
    }

    /// Whether the principal may do `operation` on some resource of the
    /// type (Kafka's authorizeByResourceType, which lets an idempotent
    /// producer with Write on any topic in).
    public func authorizeAny(_ principal: Principal, host: String, _ operation: AclOperation, _ type: ResourceType) -> Bool {
        if superUsers.contains(principal.description) { return true }
        let who = [principal.description, "\(principal.type):*"]
        let applying = bindings.filter { $0.resourceType == type && who.contains($0.principal) && ($0.host == "*" || $0.host == host) }
        return applying.contains { binding in
            binding.permission == .allow && (binding.operation == operation || binding.operation == .all)
                && !applying.contains { $0.permission == .deny && ($0.operation == operation || $0.operation == .all) && $0.patternType == .literal && $0.resourceName == "*" }
        }
    }
}
