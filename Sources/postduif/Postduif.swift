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

@main
struct Postduif: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postduif",
        abstract: "A replicated append-only log for government chat that speaks the Kafka protocol.",
        subcommands: [Serve.self, GatewayCommand.self, User.self, Acl.self, ClusterCommand.self, Inspect.self, Backup.self, Restore.self, ArchiveCommand.self, ThumbnailCommand.self]
    )
}
