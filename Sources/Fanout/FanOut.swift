import Broker
import ChatWire
import Core
import Foundation
import KafkaNIO
import KafkaWire
import LogStore
import Logging
import Metrics
import NIOCore
import Synchronization

/// The chat topics the fan-out reads. The gateway writes them (Docs/chat.md).
public enum FanOutTopics {
    public static let conversations = ChatTopicNames.conversations
    /// Keyed by conversation id and member (`MembershipChange.key`), value
    /// `{"member": user id, "membership": "join"|"invite"|"leave"|"ban"}`;
    /// the latest entry per conversation and member wins.
    public static let members = ChatTopicNames.members
}

/// "Members of C" and "conversations of U", read from this broker's
/// replicas of the membership topic up to their high watermark. Kept in
/// memory and rebuilt from the log when the log shrinks under it (a
/// follower truncated).
///
/// When another broker leads the membership partition, this broker's
/// replica lags it by a fetch, while a message sent right after a join may
/// already be committed in the conversation's partition. So the workers
/// also apply the change each member event carries (`observed`), in the
/// conversation's own order; such a change is "ahead" of the topic until
/// the topic shows the same membership, and wins until then.
final class MembershipIndex: Sendable {
    struct State {
        var members: [[UInt8]: [String: String]] = [:]
        var conversations: [String: Set<[UInt8]>] = [:]
        var applied: [Int32: Int64] = [:]
        /// Per conversation, changes seen in its partition that the
        /// membership topic has not shown yet.
        var ahead: [[UInt8]: [String: String]] = [:]

        mutating func apply(conversation: [UInt8], member: String, membership: String) {
            members[conversation, default: [:]][member] = membership
            conversations[member, default: []].insert(conversation)
            if ahead[conversation]?[member] == membership { settle(conversation, member) }
        }

        mutating func observe(_ change: MembershipChange, in conversation: [UInt8]) {
            if members[conversation]?[change.member] == change.membership {
                settle(conversation, change.member)
            } else {
                ahead[conversation, default: [:]][change.member] = change.membership
                conversations[change.member, default: []].insert(conversation)
            }
        }

        mutating func settle(_ conversation: [UInt8], _ member: String) {
            ahead[conversation]?[member] = nil
            if ahead[conversation]?.isEmpty == true { ahead[conversation] = nil }
        }

        func joined(_ conversation: [UInt8]) -> [String] {
            var members = self.members[conversation] ?? [:]
            if let ahead = ahead[conversation] { members.merge(ahead) { $1 } }
            return members.filter { $0.value == "join" }.map(\.key)
        }
    }

    private let state = Mutex(State())

    /// Reads what was committed since the last call.
    func refresh(_ committed: any CommittedLog) {
        guard let partitionCount = committed.partitionCount(topic: FanOutTopics.members) else { return }
        for index in 0..<partitionCount {
            guard let log = committed.committedPartition(topic: FanOutTopics.members, index: index) else { continue }
            let highWatermark = log.highWatermark
            var from = state.withLock { $0.applied[index] ?? 0 }
            if log.logEndOffset < from {
                // Truncated below what was applied: start over. Changes seen
                // ahead stay: they are committed in their conversations.
                state.withLock { $0 = State(ahead: $0.ahead) }
                refresh(committed)
                return
            }
            while from < highWatermark {
                guard let read = try? log.read(from: from, bytesMax: 1 << 20, upTo: highWatermark), !read.batches.isEmpty else { break }
                var changes: [(conversation: [UInt8], change: MembershipChange)] = []
                for bytes in read.batches {
                    guard let batch = try? RecordBatch(storedBytes: bytes), let records = try? batch.records() else { continue }
                    for record in records where batch.baseOffset + Int64(record.offsetDelta) >= from {
                        guard let key = record.key, let change = record.value.flatMap(Self.change) else { continue }
                        changes.append((MembershipChange.conversation(ofKey: key), change))
                    }
                    from = max(from, batch.nextOffset)
                }
                let applied = from
                state.withLock { state in
                    for (conversation, change) in changes {
                        state.apply(conversation: conversation, member: change.member, membership: change.membership)
                    }
                    state.applied[index] = applied
                }
            }
        }
    }

    /// A change carried by a member event of `conversation`, committed in
    /// its partition: it holds from here on in that conversation's order.
    func observed(_ change: MembershipChange, in conversation: [UInt8]) {
        state.withLock { $0.observe(change, in: conversation) }
    }

    /// The change a record's `membership` header carries, if any.
    static func carried(_ headers: [RecordHeader]) -> MembershipChange? {
        headers.first { $0.key == MembershipChange.headerKey }?.value.flatMap(change)
    }

    private static func change(_ value: [UInt8]) -> MembershipChange? {
        try? JSONDecoder().decode(MembershipChange.self, from: Data(value))
    }

    /// The members of a conversation who receive its messages (joined).
    func joinedMembers(_ conversation: [UInt8]) -> [String] {
        state.withLock { $0.joined(conversation) }
    }

    func conversations(of user: String) -> [[UInt8]] {
        state.withLock { Array($0.conversations[user] ?? []) }
    }
}

/// Fan-out workers: on each partition of `conversations` this broker leads,
/// a worker tails committed messages (up to the high watermark), looks up
/// each conversation's members and queues the message once for every
/// gateway serving one of them. Gateways take their queue with GatewayPoll.
public final class FanOut: Sendable {
    /// Deliveries a gateway's full queue left out (it resyncs from the log).
    static let droppedDeliveries = Counter(label: "postduif_fanout_dropped_deliveries_total")
    /// Deliveries handed straight to the gateway in this process (ADR 0037).
    static let handedOverDeliveries = Counter(label: "postduif_fanout_handed_over_deliveries_total")
    struct State {
        var router = FanOutRouter()
        /// Per partition: the worker led here (its steps find it here too)
        /// and the next offset it handles, as polls are told.
        var workers: [Int32: (worker: PartitionWorker, position: Int64)] = [:]
        /// The gateway in this process, whose deliveries are handed over
        /// rather than queued (ADR 0037).
        var localGateway: (id: String, receive: @Sendable (FanOutHandOver) -> Void)? = nil
    }

    let broker: any CommittedLog
    let members = MembershipIndex()
    let logger: Logger
    private let state = Mutex(State())
    private let tasks = Mutex<[Int32: Task<Void, Never>]>([:])
    private let clockStart = ContinuousClock.now
    /// Gateway polls wait seconds; 20 ms is precise enough.
    let timeouts = ParkedTimeouts(tick: .milliseconds(20))
    /// Gateways' polls waiting for deliveries, by gateway.
    let pollWaiters: ParkedWaiters<String, Void>
    /// Worker tasks resting between steps, by partition: a step that gave
    /// up with more committed behind it wakes its task to go on.
    let restingWorkers: ParkedWaiters<Int32, Void>

    public init(broker: any CommittedLog, logger: Logger) {
        self.broker = broker
        self.logger = logger
        pollWaiters = ParkedWaiters(deadlines: timeouts, expired: (), waitersMax: Limits.parkedPollsMax)
        restingWorkers = ParkedWaiters(deadlines: timeouts, expired: (), waitersMax: Limits.parkedPollsMax)
        broker.observeCommits { [weak self] topic, index in self?.committed(topic: topic, index: index) }
    }

    var now: Int64 { (ContinuousClock.now - clockStart).milliseconds }

    // MARK: Gateways

    /// The gateway `gatewayID` runs in this process: from now on the
    /// workers call `receive` with its deliveries, in each partition's
    /// offset order, before their position passes them. Its GatewayPoll
    /// goes on as before (users, lease, positions) and finds no deliveries
    /// queued. `receive` runs on the thread stepping the worker (ADR
    /// 0038): it must not block.
    public func handOver(to gatewayID: String, receive: @escaping @Sendable (FanOutHandOver) -> Void) {
        state.withLock { $0.localGateway = (gatewayID, receive) }
    }

    /// The gateway stopped: its deliveries queue again, for a poll.
    public func stopHandingOver(to gatewayID: String) {
        state.withLock { state in
            if state.localGateway?.id == gatewayID { state.localGateway = nil }
        }
    }

    func poll(_ request: GatewayPollRequest) async -> GatewayPollResponse {
        guard request.topic == FanOutTopics.conversations, !request.gatewayID.isEmpty else {
            return GatewayPollResponse(errorCode: ErrorCode.invalidRequest.rawValue, partitions: [], deliveries: [])
        }
        let lease = Int64(min(max(request.leaseMilliseconds, 1000), 300_000))
        let known = state.withLock { state -> Bool in
            // A gateway this broker does not know (its lease ended, or the
            // broker restarted) must name all its users again: changes alone
            // would leave the rest unrouted without anyone noticing.
            guard request.replaceUsers || state.router.gateways[request.gatewayID] != nil else { return false }
            state.router.register(request.gatewayID, replace: request.replaceUsers, users: request.users, removed: request.removedUsers, leaseEnd: now + lease)
            return true
        }
        guard known else {
            return GatewayPollResponse(errorCode: ErrorCode.unknownMemberId.rawValue, partitions: [], deliveries: [])
        }
        let wait = Duration.milliseconds(Int64(min(max(request.maxWaitMilliseconds, 0), 30_000)))
        if wait > .zero && !state.withLock({ $0.router.hasPending(request.gatewayID) }) {
            await waitForDeliveries(request.gatewayID, timeout: wait)
        }
        return state.withLock { state in
            // Renewed again: a long wait must not let the lease lapse.
            state.router.register(request.gatewayID, replace: false, users: [], removed: [], leaseEnd: now + lease)
            let (deliveries, resync, stillQueued) = state.router.drain(request.gatewayID, max: Int(max(request.maxDeliveries, 1)))
            let partitions = state.workers.keys.sorted().map { partition -> GatewayPollResponse.PartitionState in
                let entry = state.workers[partition]!
                let upTo = min(entry.position, stillQueued[partition] ?? entry.position)
                return .init(partition: partition, workerID: entry.worker.id, fannedOutUpTo: upTo, resyncFrom: resync[partition] ?? -1)
            }
            return GatewayPollResponse(errorCode: 0, partitions: partitions, deliveries: deliveries)
        }
    }

    private func waitForDeliveries(_ gateway: String, timeout: Duration) async {
        // A newer poll of the same gateway ends the one before it.
        pollWaiters.wake(gateway, with: ())
        await pollWaiters.wait(gateway, timeout: timeout) {
            state.withLock { $0.router.hasPending(gateway) } ? () : nil
        }
    }

    private func wake(_ gateways: [String]) {
        pollWaiters.wake(each: gateways, with: ())
    }

    // MARK: Workers

    /// Starts a worker for each partition of `conversations` this broker
    /// leads, expires gateways whose lease ended; until cancelled.
    public func run() async {
        while !Task.isCancelled {
            let expired = state.withLock { $0.router.expire(now: now) }
            if !expired.isEmpty {
                logger.info("gateways expired", metadata: ["gateways": "\(expired)"])
                wake(expired)
            }
            if let partitionCount = broker.partitionCount(topic: FanOutTopics.conversations) {
                for index in 0..<partitionCount where broker.leads(topic: FanOutTopics.conversations, index: index) {
                    tasks.withLock { tasks in
                        if tasks[index] == nil {
                            tasks[index] = Task { await self.work(partition: index) }
                        }
                    }
                }
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
        for (_, task) in tasks.withLock({ $0 }) { task.cancel() }
    }

    /// One partition's worker: from the high watermark at its start (a
    /// gateway reads anything older itself), in offset order. Its steps run
    /// on whichever thread moves the partition's high watermark (ADR 0038):
    /// this task starts it, ends it when leadership moves, and steps it
    /// every quarter second besides (a read that failed) or at once when a
    /// commit's step gave up with more behind it.
    func work(partition: Int32) async {
        defer {
            _ = tasks.withLock { $0.removeValue(forKey: partition) }
            _ = state.withLock { $0.workers.removeValue(forKey: partition) }
        }
        guard let log = broker.committedPartition(topic: FanOutTopics.conversations, index: partition) else { return }
        let id = "\(broker.nodeID)-\(partition)-\(UUID().uuidString.prefix(8))"
        let worker = PartitionWorker(partition: partition, id: id, log: log, position: log.highWatermark,
                                     sequences: RecencyCache(countMax: Limits.fanOutSequenceCacheCountMax))
        state.withLock { $0.workers[partition] = (worker, worker.start) }
        logger.info("fan-out worker started", metadata: ["partition": "\(partition)", "worker": "\(id)", "from": "\(worker.start)"])
        while !Task.isCancelled && broker.leads(topic: FanOutTopics.conversations, index: partition) {
            if worker.turn({ step(worker, &$0) }) {
                // Still behind: the rest is this task's, without resting.
                await Task.yield()
                continue
            }
            await restingWorkers.wait(partition, timeout: .milliseconds(250)) { worker.isBehind ? () : nil }
        }
        logger.info("fan-out worker stopped", metadata: ["partition": "\(partition)", "worker": "\(id)"])
    }

    /// A partition's high watermark moved (on the thread that moved it):
    /// its worker, if it has one here, fans out what was committed.
    func committed(topic: String, index: Int32) {
        // A partition whose leadership just moved away keeps its worker
        // until the task sees it; its steps end with the leadership.
        guard topic == FanOutTopics.conversations, let worker = state.withLock({ $0.workers[index]?.worker }),
              broker.leads(topic: topic, index: index) else { return }
        if worker.turn({ step(worker, &$0) }) { _ = restingWorkers.wake(index, with: ()) }
    }

    /// Fans out what is committed from the worker's position up to the high
    /// watermark. A read that fails is logged and tried again at the next
    /// step; nothing past it is fanned out before it.
    func step(_ worker: PartitionWorker, _ progress: inout PartitionWorker.Progress) {
        let partition = worker.partition
        let log = worker.log
        let id = worker.id
        while true {
            let highWatermark = log.highWatermark
            guard progress.position < highWatermark else { return }
            logger.trace("fan-out reads", metadata: ["partition": "\(partition)", "from": "\(progress.position)", "highWatermark": "\(highWatermark)"])
            let read: LogRead
            do {
                read = try log.read(from: progress.position, bytesMax: 1 << 20, upTo: highWatermark)
            } catch {
                logger.error("fan-out read failed", metadata: ["partition": "\(partition)", "error": "\(error)"])
                return
            }
            guard !read.batches.isEmpty else { return }
            let before = progress.position
            for bytes in read.batches {
                guard let batch = try? RecordBatch(storedBytes: bytes), let records = try? batch.records() else {
                    logger.error("fan-out skipped an unreadable batch", metadata: ["partition": "\(partition)", "offset": "\(progress.position)"])
                    continue
                }
                var woken: [String] = []
                // Deliveries for the gateway in this process, handed over at
                // the batch's end. Until then the position others see stays
                // before the first: a poll answered meanwhile must not tell
                // that gateway it has them.
                var handed: [GatewayPollResponse.Delivery] = []
                var receive: (@Sendable (FanOutHandOver) -> Void)? = nil
                let from = progress.position
                for record in records {
                    let offset = batch.baseOffset + Int64(record.offsetDelta)
                    guard offset >= progress.position, offset < highWatermark else { continue }
                    guard let key = record.key, !key.isEmpty else {
                        if handed.isEmpty { state.withLock { $0.workers[partition]?.position = offset + 1 } }
                        progress.position = offset + 1
                        continue
                    }
                    let sequence = nextSequence(key, at: offset, log: log, cache: &progress.sequences)
                    let delivery = GatewayPollResponse.Delivery(
                        partition: partition, offset: offset, sequence: sequence, timestamp: batch.baseTimestamp + record.timestampDelta,
                        key: key, value: record.value, headers: record.headers)
                    // Membership as of now, not as of the read: a gateway told
                    // "everything from here reaches you" must not miss a member
                    // whose join committed since.
                    members.refresh(broker)
                    if let change = MembershipIndex.carried(record.headers) { members.observed(change, in: key) }
                    let recipients = members.joinedMembers(key)
                    let (queued, dropped, local) = state.withLock { [handing = !handed.isEmpty] state in
                        var targets = state.router.gateways(for: recipients)
                        var local: (@Sendable (FanOutHandOver) -> Void)? = nil
                        if let gateway = state.localGateway, targets.remove(gateway.id) != nil { local = gateway.receive }
                        let queued = state.router.deliver(delivery, to: targets)
                        if !handing && local == nil { state.workers[partition]?.position = offset + 1 }
                        return (queued, state.router.takeDropped(), local)
                    }
                    if let local {
                        handed.append(delivery)
                        receive = local
                    }
                    woken += queued
                    if dropped > 0 { Self.droppedDeliveries.increment(by: dropped) }
                    progress.position = offset + 1
                }
                progress.position = max(progress.position, min(batch.nextOffset, highWatermark))
                if let receive {
                    receive(FanOutHandOver(partition: partition, workerID: id, from: from, deliveries: handed, upTo: progress.position))
                    Self.handedOverDeliveries.increment(by: handed.count)
                }
                state.withLock { $0.workers[partition]?.position = progress.position }
                if !woken.isEmpty { wake(Array(Set(woken))) }
            }
            // A read that moved nothing on (its last batch unreadable) is not
            // read again at once: this may be the thread that commits, and
            // the task's next step tries it again.
            guard progress.position > before else { return }
        }
    }

    /// The conversation sequence of the message at `offset`: one more than
    /// the last before it. The index is asked once per conversation; after
    /// that the worker counts, as the store numbers in offset order.
    private func nextSequence(_ conversation: [UInt8], at offset: Int64, log: CommittedPartition, cache: inout RecencyCache<[UInt8], UInt64>) -> UInt64 {
        if let known = cache.get(conversation) {
            cache.set(known + 1, for: conversation)
            return known
        }
        let previous = (try? log.history(conversation: conversation, from: .latest, limit: 1, maxOffset: offset))?.last?.sequence ?? 0
        cache.set(previous + 2, for: conversation)
        return previous + 1
    }
}

/// One partition's fan-out worker: its id, and its progress (position and
/// conversation sequences), stepped by one thread at a time.
final class PartitionWorker: Sendable {
    struct Progress: Sendable {
        /// The next offset to fan out.
        var position: Int64
        var sequences: RecencyCache<[UInt8], UInt64>
    }

    private struct Turns: Sendable {
        /// Out while a step runs, so the stepper changes it in place.
        var progress: Progress?
        var busy = false
        /// Another thread asked for a step while one ran: it runs once more.
        var again = false
    }

    let partition: Int32
    let id: String
    let log: CommittedPartition
    /// The high watermark at the worker's start.
    let start: Int64
    private let turns: Mutex<Turns>

    init(partition: Int32, id: String, log: CommittedPartition, position: Int64, sequences: RecencyCache<[UInt8], UInt64>) {
        self.partition = partition
        self.id = id
        self.log = log
        start = position
        turns = Mutex(Turns(progress: Progress(position: position, sequences: sequences)))
    }

    /// Passes one turn takes at most: a thread that commits does not
    /// become the fan-out's for as long as commits keep coming.
    static let passesMax = 4

    /// Runs `step` with the progress, unless another thread is stepping:
    /// that one then steps once more before it lets go, so a commit it
    /// did not see is not left behind, up to `passesMax` passes. Never
    /// waits. True when it stopped with a step still due (the caller hands
    /// the rest on: the worker's task takes it).
    @discardableResult
    func turn(_ step: (inout Progress) -> Void) -> Bool {
        guard var progress = turns.withLock({ turns -> Progress? in
            guard !turns.busy else {
                turns.again = true
                return nil
            }
            turns.busy = true
            turns.again = false
            defer { turns.progress = nil }
            return turns.progress
        }) else { return false }
        var passes = 0
        while true {
            step(&progress)
            passes += 1
            let (done, behind) = turns.withLock { [progress, passes] turns -> (Bool, Bool) in
                if turns.again && passes < Self.passesMax {
                    turns.again = false
                    return (false, false)
                }
                turns.progress = progress
                turns.busy = false
                return (true, turns.again)
            }
            if done { return behind }
        }
    }

    /// A step is due that nobody has taken yet.
    var isBehind: Bool { turns.withLock { $0.again && !$0.busy } }
}
