import ChatWire
import Foundation
import Hummingbird
import HummingbirdCore
import KafkaNIO
import KafkaWire
import Logging
import Metrics
import NIOSSL
import Security
import Synchronization

/// The gateway's settings; the defaults here are the one source of truth
/// (Docs/operations.md lists the flags).
public struct GatewayConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8008
    /// A broker of the cluster (any; the gateway finds each partition's leader).
    public var broker = "127.0.0.1:9092"
    /// The Matrix server name: user ids are @name:server, room ids !id:server.
    public var serverName = "localhost"
    /// Partitions of `conversations` when the gateway creates it.
    public var conversationPartitions: Int32 = 4
    /// The largest request body accepted (Matrix's m.room.message events are
    /// limited to 64 KiB too).
    public var bodyBytesMax = 65_536
    /// The address clients reach the gateway at, for
    /// `/.well-known/matrix/client` (`https://chat.gov.example`); nil
    /// answers with the address the request came to.
    public var publicBaseURL: String? = nil
    /// The largest file a client may upload (`m.upload.size`).
    public var mediaBytesMax = 50 << 20
    /// The longest a `/sync` may wait, whatever the client asks.
    public var syncWaitMax: Duration = .seconds(60)
    /// scrypt's cost for new passwords, as log2 of N (15: 32 MiB and tens of
    /// milliseconds per hash). Lower only for load tests that register
    /// thousands of users; existing hashes keep the cost they were made with.
    public var passwordHashLogN = 15
    /// Whether anyone may register (`POST /register`); closed, accounts come
    /// only from `postduif user add --chat`.
    public var openRegistration = true
    /// Registrations per client address per minute; 0 for no limit (load
    /// tests that register thousands of users from one machine).
    public var registrationsPerMinute = 60
    /// SASL PLAIN user and password for a broker started with `--sasl`.
    public var brokerUser: String? = nil
    public var brokerPassword: String? = nil
    /// TLS to brokers whose listener asks for it (a cluster's inter-broker
    /// listener, for the gateway inside a broker).
    public var brokerTLS: NIOSSLContext? = nil
    /// HTTPS for Matrix clients: the certificate, replaced on reload; nil
    /// serves plain HTTP (behind a proxy that ends TLS, or on loopback).
    public var tls: ReloadableTLSContext? = nil
    /// The broker of this process, when the gateway runs inside it
    /// (`postduif serve --with-gateway`): requests to it skip the socket.
    public var localBroker: (any KafkaLocalBroker)? = nil
    /// The same broker's one-record appends, for sends taken on the event loop.
    public var directAppends: (any DirectAppendPort)? = nil
    /// The same broker's committed batches, for files read without a Fetch.
    public var directReads: (any DirectReadPort)? = nil
    /// The same broker's fan-out, which hands this gateway its deliveries
    /// without a GatewayPoll's answer in between (ADR 0037).
    public var localFanOut: (any LocalFanOutPort)? = nil
    /// Makes image thumbnails (`postduif`: in a child process); nil serves
    /// every image as its own thumbnail.
    public var thumbnails: (any ThumbnailMaker)? = nil

    var brokerCredentials: (user: String, password: String)? {
        guard let brokerUser, let brokerPassword else { return nil }
        return (brokerUser, brokerPassword)
    }

    public init() {}
}

/// `postduif gateway`: the chat gateway, a thin consumer of the broker
/// speaking the Matrix client-server API.
public final class ChatGateway: Sendable {
    let configuration: GatewayConfiguration
    let link: BrokerLink
    let logger: Logger
    /// This gateway's name at the brokers' fan-out, new at every start.
    let gatewayID = "gateway-" + Secrets.opaque(12)
    private let serving = Mutex(false)
    let deliveriesReceived = Counter(label: "postduif_gateway_deliveries_total")
    let cacheRestarts = Counter(label: "postduif_gateway_cache_restarts_total")
    let localUsersGauge = Gauge(label: "postduif_gateway_local_users")

    /// True once the topics are read and Matrix clients are served (`/ready`).
    public var isReady: Bool { serving.withLock { $0 } }

    public init(configuration: GatewayConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        link = BrokerLink(bootstrap: configuration.broker, logger: logger, credentials: configuration.brokerCredentials, tls: configuration.brokerTLS, local: configuration.localBroker)
    }

    /// Makes the chat topics, reads them up to now, then serves until
    /// cancelled. `onListening` gets the bound port.
    ///
    /// `stopsOnSignals`: whether the HTTP server stops by itself on SIGTERM
    /// and SIGINT, as a gateway of its own does. A gateway inside the
    /// broker's process passes false: the node's ServiceGroup owns the
    /// signals and stops the gateway, and a server that ended by itself on
    /// the same SIGTERM could end first, which the group then counts as a
    /// service failing (an unclean exit, seen under load).
    public func run(stopsOnSignals: Bool = true, onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        try await link.ensureTopic(ChatTopics.conversations, partitions: configuration.conversationPartitions,
                                   configs: [("postduif.conversation.index", "true")])
        // Co-partitioned with the rooms: a room's members sit in the partition of its messages.
        try await link.ensureTopic(ChatTopics.members, partitions: try await link.partitionCount(ChatTopics.conversations))
        // To-device messages wait at most 30 days for a device that stays
        // away (and every gateway reads the topic whole at start).
        try await link.ensureTopic(ChatTopics.toDevice, partitions: 1, configs: [("retention.ms", String(30 * 24 * 3_600_000))])
        for topic in [ChatTopics.state, ChatTopics.accounts, ChatTopics.sessions, ChatTopics.readMarkers, ChatTopics.userData, ChatTopics.toDevice, ChatTopics.redactions, ChatTopics.relations, ChatTopics.directory, ChatTopics.mediaIndex] {
            try await link.ensureTopic(topic, partitions: 1)
        }
        // Typing is a hint relayed between gateways: kept a minute, in
        // segments of a minute, so retention drops it soon.
        try await link.ensureTopic(ChatTopics.typing, partitions: 1, configs: [("retention.ms", "60000"), ("segment.ms", "60000")])
        let timelinePartitions = try await link.partitionCount(ChatTopics.conversations)
        // Files are keyed by their id: all of one file's chunks in one partition.
        try await link.ensureTopic(ChatTopics.media, partitions: timelinePartitions)
        let state = ChatState(serverName: configuration.serverName, timelinePartitions: timelinePartitions, registrationsPerMinute: configuration.registrationsPerMinute)
        let api = MatrixAPI(state: state, link: link, configuration: configuration, logger: logger)
        if let local = configuration.localFanOut {
            local.handOver(to: gatewayID) { [self] handOver in received(handOver, state: state) }
        }
        defer { configuration.localFanOut?.stopHandingOver(to: gatewayID) }

        try await withThrowingTaskGroup(of: Void.self) { group in
            // State, accounts and sessions are read whole; room events come from
            // the broker's fan-out from now on (older ones from its conversation
            // index, on demand).
            var catchUp: [(topic: String, partition: Int32, end: Int64)] = []
            for (topic, apply) in [(ChatTopics.state, state.applyState), (ChatTopics.accounts, state.credentials.applyAccount), (ChatTopics.sessions, state.credentials.applySession),
                                   (ChatTopics.readMarkers, state.applyReadMarkers), (ChatTopics.userData, state.applyUserData),
                                   (ChatTopics.toDevice, state.applyToDevice), (ChatTopics.redactions, state.applyRedaction), (ChatTopics.relations, state.applyRelation),
                                   (ChatTopics.directory, state.aliases.apply), (ChatTopics.mediaIndex, state.media.apply)] as [(String, @Sendable (StoredRecord) -> Void)] {
                let end = try await tailStart(topic: topic, partition: 0, earliest: false)
                catchUp.append((topic, 0, end))
                group.addTask { await self.tail(topic: topic, partition: 0, state: state, from: nil) { record, _ in apply(record) } }
            }
            // Typing from now on: what was typed before this gateway started is stale.
            let typingEnd = try await tailStart(topic: ChatTopics.typing, partition: 0, earliest: false)
            group.addTask { [clock = api.clock] in
                await self.tail(topic: ChatTopics.typing, partition: 0, state: state, from: typingEnd) { record, _ in state.applyTyping(record, now: clock.now.milliseconds) }
            }
            for partition in 0..<timelinePartitions {
                let end = try await tailStart(topic: ChatTopics.conversations, partition: partition, earliest: false)
                state.cache.start(partition: partition, at: end)
            }
            group.addTask { await self.deliveries(state: state) }
            // Typing that was not renewed ends, and the rooms see it end.
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(500))
                    state.expireTyping(now: api.clock.now.milliseconds)
                }
            }
            for (topic, partition, end) in catchUp where end > 0 {
                await state.waitApplied(topic: topic, partition: partition, offset: end - 1, timeout: .seconds(120))
            }
            await compactAccounts(state)
            await compactMembers(state)
            let router = api.router()
            let app = Application(
                router: router,
                server: HTTPServerBuilder { [tls = configuration.tls] responder in MatrixHTTP1Channel(api: api, responder: responder, tls: tls) },
                configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "postduif-gateway"),
                onServerRunning: { channel in
                    self.serving.withLock { $0 = true }
                    onListening(channel.localAddress?.port ?? 0)
                },
                logger: logger)
            group.addTask { try await app.runService(gracefulShutdownSignals: stopsOnSignals ? [.sigterm, .sigint] : []) }
            try await group.next()
            group.cancelAll()
        }
    }

    private func tailStart(topic: String, partition: Int32, earliest: Bool) async throws -> Int64 {
        try await link.offset(topic: topic, partition: partition, earliest: earliest)
    }

    /// Takes the fan-out's deliveries from every broker leading a partition
    /// of `conversations`, for as long as the gateway runs.
    func deliveries(state: ChatState) async {
        var refresh = false
        while !Task.isCancelled {
            do {
                let addresses = Set(try await link.layout(ChatTopics.conversations, refresh: refresh).values)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for address in addresses {
                        group.addTask { try await self.poll(address, state: state) }
                    }
                    // One broker failing may mean leadership moved: start over.
                    try await group.next()
                    group.cancelAll()
                }
            } catch {
                guard !Task.isCancelled else { return }
                logger.warning("fan-out polling failed; retrying", metadata: ["error": "\(error)"])
            }
            refresh = true
            try? await Task.sleep(for: .milliseconds(200))
        }
    }

    /// One broker's GatewayPoll loop: the first poll names every user
    /// syncing here, later ones the changes.
    func poll(_ address: String, state: ChatState) async throws {
        let connection = try await link.open(address)
        state.registration.polling(address, active: true)
        defer {
            state.registration.polling(address, active: false)
            Task { await connection.close() }
        }
        var sent: Set<String>? = nil
        var quietSince = ContinuousClock.now
        while !Task.isCancelled {
            let users = state.registration.localUsers(idle: 300)
            localUsersGauge.record(users.count)
            let added = sent.map { users.subtracting($0) } ?? users
            let reconnected = sent == nil
            let request = GatewayPollRequest(
                gatewayID: gatewayID, topic: ChatTopics.conversations, leaseMilliseconds: 10_000, replaceUsers: sent == nil,
                users: Array(added), removedUsers: Array(sent.map { $0.subtracting(users) } ?? []),
                // Short, so a new user's registration leaves within a quarter second.
                maxWaitMilliseconds: 250, maxDeliveries: 5000)
            var reader = try await connection.request(extensionKey: ChatApiKey.gatewayPoll.rawValue, version: 0) { request.encode(&$0, version: 0) }
            let response = try GatewayPollResponse.decode(&reader, version: 0)
            guard response.errorCode == 0 else { throw BrokerRefusal(description: "GatewayPoll to \(address): error \(response.errorCode)") }
            sent = users
            logger.trace("polled the fan-out", metadata: [
                "broker": "\(address)", "deliveries": "\(response.deliveries.count)",
                "positions": "\(response.partitions.map { "\($0.partition):\($0.fannedOutUpTo)" })"])
            // A new worker or a gap first: the deliveries below belong after it.
            // A new poll loop counts as a gap too: whatever was queued for an
            // earlier registration of this gateway (a lease that ended while it
            // was away) is gone.
            for partition in response.partitions where reconnected || state.registration.worker(partition: partition.partition) != partition.workerID || partition.resyncFrom >= 0 {
                logger.info("fan-out restarted or skipped; the cache of the partition starts again", metadata: [
                    "broker": "\(address)", "partition": "\(partition.partition)", "worker": "\(partition.workerID)", "resyncFrom": "\(partition.resyncFrom)"])
                state.fannedOut(partition: partition.partition, worker: partition.workerID, upTo: partition.fannedOutUpTo, gap: true)
                cacheRestarts.increment()
            }
            deliveriesReceived.increment(by: response.deliveries.count)
            var woken: Set<String> = []
            for delivery in response.deliveries {
                woken.formUnion(state.applyDelivery(delivery))
            }
            for partition in response.partitions {
                state.fannedOut(partition: partition.partition, worker: partition.workerID, upTo: partition.fannedOutUpTo, gap: false)
            }
            state.confirmRegistered(added, at: address, fannedOutUpTo: Dictionary(response.partitions.map { ($0.partition, $0.fannedOutUpTo) }, uniquingKeysWith: max))
            state.wake(users: woken)
            // A broker that leads nothing here any more: look for the leaders again.
            if response.partitions.isEmpty {
                if ContinuousClock.now - quietSince > .seconds(5) { throw BrokerRefusal(description: "\(address) runs no fan-out worker") }
            } else {
                quietSince = ContinuousClock.now
            }
        }
    }

    /// Deliveries the fan-out in this process handed over, on the thread
    /// that stepped its worker: applied as a poll's answer is, then the
    /// syncs they concern woken.
    func received(_ handOver: FanOutHandOver, state: ChatState) {
        deliveriesReceived.increment(by: handOver.deliveries.count)
        let (woken, restarted) = state.handedOver(handOver)
        if restarted {
            logger.info("fan-out restarted; the cache of the partition starts again", metadata: [
                "broker": "this process", "partition": "\(handOver.partition)", "worker": "\(handOver.workerID)", "from": "\(handOver.from)"])
            cacheRestarts.increment()
        }
        state.wake(users: woken)
    }

    /// Reads one partition for as long as the gateway runs, from `from` (or
    /// its first offset), following its leader across failovers.
    func tail(topic: String, partition: Int32, state: ChatState, from start: Int64?, apply: @escaping @Sendable (StoredRecord, Int32) -> Void) async {
        var next = start
        var refresh = false
        while !Task.isCancelled {
            do {
                let address = try await link.leader(topic: topic, partition: partition, refresh: refresh)
                let connection = try await link.open(address)
                defer { Task { await connection.close() } }
                let reader = PartitionTail(topic: topic, partition: partition, connection: connection)
                if next == nil { next = try await reader.offset(earliest: true) }
                while !Task.isCancelled {
                    let (records, after, _) = try await reader.fetch(from: next!, maxWaitMilliseconds: 500)
                    for record in records { apply(record, partition) }
                    next = after
                    state.applied(topic: topic, partition: partition, next: after)
                }
            } catch {
                guard !Task.isCancelled else { return }
                logger.warning("gateway tail failed; retrying", metadata: ["topic": "\(topic)", "partition": "\(partition)", "error": "\(error)"])
                refresh = true
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }
}
