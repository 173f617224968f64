import ArgumentParser
import Foundation
import KafkaNIO
import KafkaWire
import PostduifClient
import Security

/// `postduif acl add|remove|list`: a running cluster's ACLs, through the
/// Kafka API (CreateAcls, DeleteAcls, DescribeAcls, by PostduifClient's `Admin`) as a super user or a
/// principal with Alter on the cluster, so they reach etcd or the node's
/// store the way any admin client's would.
struct Acl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the ACLs of a broker started with --authorizer.",
        subcommands: [Add.self, Remove.self, List.self]
    )

    /// Where the broker is and how to sign in to it.
    struct Connection: ParsableArguments {
        @Option(help: "A broker, host:port (POSTDUIF_ACL_BROKER).")
        var broker: String = Environment.string("ACL_BROKER") ?? "127.0.0.1:9092"

        @Option(help: "SASL PLAIN user; the password comes from POSTDUIF_ACL_PASSWORD or --password-stdin (POSTDUIF_ACL_USER).")
        var user: String?

        @Flag(help: "Read the SASL password from the first line of standard input.")
        var passwordStdin = false

        @Flag(help: "Connect with TLS (an SSL or SASL_SSL listener).")
        var tls = false

        @Option(help: "PEM CAs that signed the broker's certificate (POSTDUIF_TLS_CA_FILE).")
        var tlsCaFile: String?

        @Option(help: "PEM client certificate, for listeners that ask for one.")
        var tlsCertFile: String?

        @Option(help: "PEM private key of the client certificate.")
        var tlsKeyFile: String?

        /// PostduifClient's admin calls against `--broker`.
        func admin() throws -> Admin {
            Admin(client: KafkaClient(ClientConfiguration(bootstrap: [broker], clientID: "postduif-acl", security: try security(), retries: 0)))
        }

        /// TLS and SASL as the options say.
        func security() throws -> KafkaClientSecurity {
            var security = KafkaClientSecurity()
            if tls || tlsCertFile != nil {
                do {
                    security.tls = try TLSClientFiles(caFile: tlsCaFile ?? Environment.string("TLS_CA_FILE"), certificateFile: tlsCertFile, keyFile: tlsKeyFile).clientContext()
                } catch {
                    throw OperatorError("\(error)")
                }
            }
            if let user = user ?? Environment.string("ACL_USER") {
                let password: String
                if passwordStdin {
                    password = readLine(strippingNewline: true) ?? ""
                } else if let fromEnvironment = Environment.string("ACL_PASSWORD") {
                    password = fromEnvironment
                } else {
                    throw OperatorError("--user needs a password: --password-stdin or POSTDUIF_ACL_PASSWORD")
                }
                security.sasl = SaslCredentials(user: user, password: password)
            }
            return security
        }
    }

    /// Which ACL: the resource, the principal, the operation.
    struct Selection: ParsableArguments {
        @Option(help: "User:name, or User:* for everyone.")
        var principal: String?

        @Option(help: "A topic name (with --prefixed, a prefix; * for every topic).")
        var topic: String?

        @Option(help: "A consumer group name (with --prefixed, a prefix).")
        var group: String?

        @Option(help: "A transactional id (with --prefixed, a prefix).")
        var transactionalId: String?

        @Flag(help: "The cluster itself (ACL and topic administration, ClusterAction, IdempotentWrite).")
        var cluster = false

        @Flag(help: "The name is a prefix.")
        var prefixed = false

        @Option(help: "read, write, create, delete, alter, describe, cluster-action, describe-configs, alter-configs, idempotent-write, all.")
        var operation: String?

        @Option(help: "The client address the ACL applies to; * for any.")
        var host: String?

        @Flag(help: "Deny instead of allow.")
        var deny = false

        var resource: (ResourceType, String)? {
            if let topic { return (.topic, topic) }
            if let group { return (.group, group) }
            if let transactionalId { return (.transactionalId, transactionalId) }
            if cluster { return (.cluster, ResourceType.clusterName) }
            return nil
        }

        static func operation(named name: String) throws -> AclOperation {
            let wanted = name.lowercased().replacingOccurrences(of: "-", with: "").replacingOccurrences(of: "_", with: "")
            guard let found = AclOperation.allCases.first(where: { "\($0)".lowercased() == wanted }), ![.unknown, .any].contains(found) else {
                throw OperatorError("--operation \(name) is not an operation")
            }
            return found
        }

        var filter: AclEntryFilter {
            get throws {
                AclEntryFilter(resourceType: (resource?.0 ?? .any).rawValue, resourceName: resource?.1,
                               patternType: resource == nil ? PatternType.any.rawValue : (prefixed ? PatternType.prefixed : .literal).rawValue,
                               principal: principal, host: host, operation: try operation.map(Self.operation(named:))?.rawValue ?? AclOperation.any.rawValue,
                               permission: deny ? AclPermission.deny.rawValue : AclPermission.any.rawValue)
            }
        }
    }

    static func line(_ entry: AclEntry) -> String {
        let type = ResourceType(rawValue: entry.resourceType).map { "\($0)" } ?? "\(entry.resourceType)"
        let pattern = entry.patternType == PatternType.prefixed.rawValue ? " (prefix)" : ""
        let operation = AclOperation(rawValue: entry.operation).map { "\($0)" } ?? "\(entry.operation)"
        let permission = entry.permission == AclPermission.deny.rawValue ? "deny" : "allow"
        return "\(permission)\t\(entry.principal)\t\(entry.host)\t\(operation)\t\(type)\t\(entry.resourceName)\(pattern)"
    }

    /// Runs one admin call; a refusal or an unreachable broker becomes the
    /// operator's error message.
    static func calling<Answer>(_ connection: Connection, _ call: (Admin) async throws -> Answer) async throws -> Answer {
        let admin = try connection.admin()
        do {
            let answer = try await call(admin)
            await admin.client.close()
            return answer
        } catch let error as ClientError {
            await admin.client.close()
            guard error.code != nil else { throw OperatorError("cannot reach \(connection.broker): \(error)") }
            throw OperatorError("the broker refused: \(error)")
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Allow (or with --deny, deny) a principal an operation on a resource.")
        @OptionGroup var connection: Connection
        @OptionGroup var selection: Selection

        func run() async throws {
            guard let principal = selection.principal, let (type, name) = selection.resource, let operation = selection.operation else {
                throw OperatorError("add needs --principal, --operation and one of --topic, --group, --transactional-id, --cluster")
            }
            let entry = AclEntry(resourceType: type.rawValue, resourceName: name, patternType: (selection.prefixed ? PatternType.prefixed : .literal).rawValue,
                                 principal: principal.contains(":") ? principal : "User:" + principal, host: selection.host ?? "*",
                                 operation: try Selection.operation(named: operation).rawValue,
                                 permission: selection.deny ? AclPermission.deny.rawValue : AclPermission.allow.rawValue)
            try await Acl.calling(connection) { try await $0.createAcls([entry]) }
            print("added: \(Acl.line(entry))")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove every ACL the selection matches (what is left out matches anything).")
        @OptionGroup var connection: Connection
        @OptionGroup var selection: Selection

        func run() async throws {
            guard selection.principal != nil || selection.resource != nil else {
                throw OperatorError("remove needs --principal or a resource, so that it never removes every ACL by mistake")
            }
            let filter = try selection.filter
            let deleted = try await Acl.calling(connection) { try await $0.deleteAcls(filter) }
            for entry in deleted { print("removed: \(Acl.line(entry))") }
            if deleted.isEmpty { print("no ACL matched") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the ACLs the selection matches (all by default).")
        @OptionGroup var connection: Connection
        @OptionGroup var selection: Selection

        func run() async throws {
            let filter = try selection.filter
            let acls = try await Acl.calling(connection) { try await $0.describeAcls(filter) }
            print("permission\tprincipal\thost\toperation\tresource\tname")
            for entry in acls { print(Acl.line(entry)) }
        }
    }
}
