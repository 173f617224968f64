import Foundation
import KafkaWire
import LogStore
import Logging
import Security

// CreateAcls, DescribeAcls, DeleteAcls: the ACLs live in etcd in a cluster
// (every broker's watch applies a change) and in the store on a single
// node. Creating and deleting needs Alter on the cluster, describing
// Describe; with the authorizer off they answer SECURITY_DISABLED, as
// Kafka's brokers without an authorizer do.
extension Broker {
    static let aclsRecord = "acls"

    static func loadAcls(_ store: LogStore, logger: Logger) -> [AclBinding] {
        guard let stored = try? store.brokerRecord(aclsRecord) else { return [] }
        do {
            return try JSONDecoder().decode([AclBinding].self, from: Data(stored))
        } catch {
            // Refusing to start would lock operators out; denying all (no
            // ACLs) is the safe reading of a record that cannot be read.
            logger.error("the stored ACLs cannot be read; none apply", metadata: ["error": "\(error)"])
            return []
        }
    }

    /// Applies `change` to the ACLs where they live.
    func changeAcls<Outcome: Sendable>(_ change: @Sendable (inout [AclBinding]) -> Outcome) async throws -> Outcome {
        if let cluster { return try await cluster.changeAcls(change) }
        // One change at a time: read, change, store, then publish.
        return try aclWrites.withLock { _ throws -> Outcome in
            var changed = currentAcls
            let outcome = change(&changed)
            try store.setBrokerRecord(Self.aclsRecord, Array(try JSONEncoder().encode(changed)))
            aclState.replace(changed)
            return outcome
        }
    }

    static func binding(_ entry: AclEntry) -> AclBinding? {
        guard let type = ResourceType(rawValue: entry.resourceType), let pattern = PatternType(rawValue: entry.patternType),
              let operation = AclOperation(rawValue: entry.operation), let permission = AclPermission(rawValue: entry.permission)
        else { return nil }
        return AclBinding(resourceType: type, resourceName: entry.resourceName, patternType: pattern, principal: entry.principal,
                          host: entry.host, operation: operation, permission: permission)
    }

    static func entry(_ binding: AclBinding) -> AclEntry {
        AclEntry(resourceType: binding.resourceType.rawValue, resourceName: binding.resourceName, patternType: binding.patternType.rawValue,
                 principal: binding.principal, host: binding.host, operation: binding.operation.rawValue, permission: binding.permission.rawValue)
    }

    static func filter(_ entry: AclEntryFilter) -> AclFilter? {
        guard let type = ResourceType(rawValue: entry.resourceType), let pattern = PatternType(rawValue: entry.patternType),
              let operation = AclOperation(rawValue: entry.operation), let permission = AclPermission(rawValue: entry.permission)
        else { return nil }
        return AclFilter(resourceType: type, resourceName: entry.resourceName, patternType: pattern, principal: entry.principal,
                         host: entry.host, operation: operation, permission: permission)
    }

    /// Adds the bindings that are missing (the gateway's on the chat
    /// topics, at start); retried by the caller while etcd is away.
    public func ensureAcls(_ bindings: [AclBinding]) async throws {
        let added = try await changeAcls { acls -> [AclBinding] in
            let missing = bindings.filter { !acls.contains($0) }
            acls += missing
            return missing
        }
        if !added.isEmpty { logger.notice("ACLs added at start", metadata: ["acls": "\(added.map(\.description))"]) }
    }

    func createAcls(_ request: CreateAclsRequest, _ session: ClientSession) async -> CreateAclsResponse {
        func all(_ code: ErrorCode, _ message: String) -> CreateAclsResponse {
            CreateAclsResponse(results: request.creations.map { _ in .init(errorCode: code.rawValue, errorMessage: message) })
        }
        guard configuration.authorizerEnabled else { return all(.securityDisabled, "the broker runs without --authorizer") }
        guard permitsCluster(session, .alter) else { return all(.clusterAuthorizationFailed, "Alter on the cluster is needed to change ACLs") }
        var results: [CreateAclsResponse.Result] = []
        var valid: [AclBinding] = []
        for entry in request.creations {
            guard let binding = Self.binding(entry) else {
                results.append(.init(errorCode: ErrorCode.invalidRequest.rawValue, errorMessage: "unknown resource type, pattern, operation or permission"))
                continue
            }
            if let why = binding.invalidity {
                results.append(.init(errorCode: ErrorCode.invalidRequest.rawValue, errorMessage: why))
                continue
            }
            valid.append(binding)
            results.append(.init(errorCode: 0))
        }
        let adding = valid
        do {
            try await changeAcls { acls in
                for binding in adding where !acls.contains(binding) { acls.append(binding) }
            }
            logger.notice("ACLs created", metadata: ["principal": "\(session.principal)", "acls": "\(adding.map(\.description))"])
        } catch {
            return all(.unknownServerError, "the ACLs could not be stored: \(error)")
        }
        return CreateAclsResponse(results: results)
    }

    func describeAcls(_ request: DescribeAclsRequest, _ session: ClientSession) -> DescribeAclsResponse {
        guard configuration.authorizerEnabled else {
            return DescribeAclsResponse(errorCode: ErrorCode.securityDisabled.rawValue, errorMessage: "the broker runs without --authorizer", acls: [])
        }
        guard permitsCluster(session, .describe) else {
            return DescribeAclsResponse(errorCode: ErrorCode.clusterAuthorizationFailed.rawValue, errorMessage: "Describe on the cluster is needed", acls: [])
        }
        guard let filter = Self.filter(request.filter) else {
            return DescribeAclsResponse(errorCode: ErrorCode.invalidRequest.rawValue, errorMessage: "unknown filter values", acls: [])
        }
        return DescribeAclsResponse(errorCode: 0, acls: currentAcls.filter(filter.matches).map(Self.entry))
    }

    func deleteAcls(_ request: DeleteAclsRequest, _ session: ClientSession) async -> DeleteAclsResponse {
        func all(_ code: ErrorCode, _ message: String) -> DeleteAclsResponse {
            DeleteAclsResponse(results: request.filters.map { _ in .init(errorCode: code.rawValue, errorMessage: message, deleted: []) })
        }
        guard configuration.authorizerEnabled else { return all(.securityDisabled, "the broker runs without --authorizer") }
        guard permitsCluster(session, .alter) else { return all(.clusterAuthorizationFailed, "Alter on the cluster is needed to change ACLs") }
        let filters = request.filters.map(Self.filter)
        do {
            let deleted = try await changeAcls { acls -> [[AclBinding]] in
                let matched = filters.map { filter in filter.map { acls.filter($0.matches) } ?? [] }
                let gone = Set(matched.joined())
                acls.removeAll { gone.contains($0) }
                return matched
            }
            logger.notice("ACLs deleted", metadata: ["principal": "\(session.principal)", "acls": "\(deleted.joined().map(\.description))"])
            return DeleteAclsResponse(results: zip(filters, deleted).map { filter, matched in
                filter == nil
                    ? .init(errorCode: ErrorCode.invalidRequest.rawValue, errorMessage: "unknown filter values", deleted: [])
                    : .init(errorCode: 0, deleted: matched.map(Self.entry))
            })
        } catch {
            return all(.unknownServerError, "the ACLs could not be stored: \(error)")
        }
    }
}
