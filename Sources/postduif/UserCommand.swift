import ArgumentParser
import Broker
import Cluster
import Coordination
import Foundation
import Gateway
import LogStore
import Logging
import Metrics
import Operations
import Prometheus
import ServiceLifecycle

/// `postduif user add|remove|list`: the SASL users of a node. The user file
/// holds SCRAM credentials only (salted, iterated keys), never passwords, and
/// a running node reads it at every authentication.
struct User: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage users: the broker's SASL users (PLAIN, SCRAM-SHA-256/512), or with --chat the chat gateway's accounts.",
        subcommands: [Add.self, Remove.self, List.self]
    )

    struct Location: ParsableArguments {
        @Option(help: "The data directory whose users.json is managed (POSTDUIF_DATA).")
        var data: String = Environment.string("DATA") ?? BrokerConfiguration().dataDirectory

        @Option(help: "The user file, if not users.json in the data directory (POSTDUIF_USERS_FILE).")
        var usersFile: String?

        @Flag(help: "Manage chat accounts (the gateway's Matrix users) in the broker's accounts topic instead.")
        var chat = false

        @Option(help: "With --chat: a broker of the cluster, host:port (POSTDUIF_GATEWAY_BROKER).")
        var broker: String = Environment.string("GATEWAY_BROKER") ?? GatewayConfiguration().broker

        @Option(help: "With --chat: the Matrix server name of user ids (POSTDUIF_SERVER_NAME).")
        var serverName: String = Environment.string("SERVER_NAME") ?? GatewayConfiguration().serverName

        @Option(help: "With --chat: SASL PLAIN user at a broker started with --sasl (POSTDUIF_GATEWAY_BROKER_USER; password in POSTDUIF_GATEWAY_BROKER_PASSWORD).")
        var brokerUser: String?

        var credentials: (user: String, password: String)? {
            guard let brokerUser = brokerUser ?? Environment.string("GATEWAY_BROKER_USER"), let password = Environment.string("GATEWAY_BROKER_PASSWORD") else { return nil }
            return (brokerUser, password)
        }

        var store: UserStore {
            var configuration = BrokerConfiguration()
            configuration.dataDirectory = data
            configuration.usersFile = usersFile ?? Environment.string("USERS_FILE")
            return UserStore(path: configuration.effectiveUsersFile)
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a user, or set a user's password.")
        @Argument(help: "The user name.") var name: String
        @Option(help: "The password (prefer --password-stdin: arguments show in process lists).") var password: String?
        @Flag(help: "Read the password from the first line of standard input.") var passwordStdin = false
        @OptionGroup var location: Location

        func run() async throws {
            let secret: String?
            if passwordStdin {
                secret = readLine(strippingNewline: true)
            } else {
                secret = password
            }
            guard let secret, !secret.isEmpty else { throw OperatorError("give a password with --password or --password-stdin") }
            if location.chat {
                let user = try await ChatAccounts.set(name, password: secret, broker: location.broker, serverName: location.serverName, credentials: location.credentials)
                print("chat account \(user) saved through \(location.broker)")
            } else {
                try location.store.add(user: name, password: secret)
                print("user \(name) saved in \(location.store.path)")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a user.")
        @Argument(help: "The user name.") var name: String
        @OptionGroup var location: Location

        func run() async throws {
            if location.chat {
                let user = try await ChatAccounts.remove(name, broker: location.broker, serverName: location.serverName, credentials: location.credentials)
                print("chat account \(user) removed (the name stays taken)")
            } else {
                try location.store.remove(user: name)
                print("user \(name) removed from \(location.store.path)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the users.")
        @OptionGroup var location: Location

        func run() async throws {
            let names = location.chat ? try await ChatAccounts.list(broker: location.broker, credentials: location.credentials) : try location.store.list()
            for name in names { print(name) }
        }
    }
}
