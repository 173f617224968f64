/// A partition leader's view of its followers: their log end offsets (from
/// the offsets they fetch at), the high watermark (the smallest log end
/// offset in the ISR, never moving back), and which followers should leave
/// or join the ISR. Pure: the leader applies ISR changes through etcd
/// compare-and-swap first, then tells the tracker (`isrChanged`).
public struct ReplicaTracker: Sendable, Equatable {
    public let leader: Int32
    public private(set) var replicas: [Int32]
    public private(set) var isr: Set<Int32>
    public private(set) var highWatermark: Int64
    /// A follower that has not caught up with the leader for this long leaves the ISR (Kafka's replica.lag.time.max.ms).
    public let lagMaxMilliseconds: Int64

    /// Followers proposed to join the ISR and not yet in it (the leader's
    /// compare-and-swap on its record is under way). They count for the
    /// high watermark from the proposal on, as Kafka's "maximal ISR" does:
    /// otherwise a batch acknowledged by the old ISR while the write is in
    /// flight would be committed without a replica the record then calls in
    /// sync, and a leader handing over to it (a controlled shutdown) would
    /// lose that batch. The fault campaign found this (seed 201, round 20).
    public private(set) var joining: Set<Int32> = []

    /// The etcd revision of the partition record whose ISR `isr` is. A
    /// record seen later at an older revision (a cluster view read before the
    /// leader's own write of the ISR landed, then delivered after it) says
    /// nothing new and is ignored: taken as the ISR, it would drop a
    /// follower just written in, the high watermark would move on without
    /// it, and the controller, reading etcd's newer record, could hand the
    /// leadership to that follower while it lacked acknowledged batches.
    /// The fault campaign found this (seed 20261205, round 64).
    public private(set) var isrRevision: Int64

    private var leaderLogEnd: Int64
    private var followerLogEnd: [Int32: Int64] = [:]
    /// When each follower was last at the leader's log end (milliseconds on the caller's clock).
    private var caughtUp: [Int32: Int64] = [:]

    public init(leader: Int32, replicas: [Int32], isr: Set<Int32>, isrRevision: Int64 = 0, leaderLogEnd: Int64, highWatermark: Int64, now: Int64, lagMaxMilliseconds: Int64 = 30_000) {
        self.leader = leader
        self.replicas = replicas
        self.isr = isr.union([leader])
        self.isrRevision = isrRevision
        self.leaderLogEnd = leaderLogEnd
        self.highWatermark = highWatermark
        self.lagMaxMilliseconds = lagMaxMilliseconds
        // A new leader gives every follower a full lag period to show up.
        for replica in replicas where replica != leader { caughtUp[replica] = now }
    }

    /// The leader's own log end offset moved (its append became durable).
    public mutating func leaderAppended(logEndOffset: Int64) -> Bool {
        leaderLogEnd = max(leaderLogEnd, logEndOffset)
        return advanceHighWatermark()
    }

    /// A follower fetched from `offset`: everything before it is in its log.
    /// Returns true when the high watermark moved.
    public mutating func followerFetched(_ replica: Int32, offset: Int64, now: Int64) -> Bool {
        guard replica != leader, replicas.contains(replica) else { return false }
        followerLogEnd[replica] = offset
        if offset >= leaderLogEnd { caughtUp[replica] = now }
        return advanceHighWatermark()
    }

    public func logEnd(of replica: Int32) -> Int64? {
        replica == leader ? leaderLogEnd : followerLogEnd[replica]
    }

    /// The ISR the leader should write to etcd now, or nil to keep it:
    /// followers that lagged past the limit leave; followers out of the ISR
    /// that reached the high watermark join.
    public func proposedISR(now: Int64) -> Set<Int32>? {
        var next = isr
        for replica in isr where replica != leader {
            if now - (caughtUp[replica] ?? now) > lagMaxMilliseconds { next.remove(replica) }
        }
        for replica in replicas where replica != leader && !isr.contains(replica) {
            if let end = followerLogEnd[replica], end >= highWatermark, end >= leaderLogEnd || now - (caughtUp[replica] ?? .min) <= lagMaxMilliseconds {
                next.insert(replica)
            }
        }
        return next == isr ? nil : next
    }

    /// The partition's replicas changed (a reassignment began, or ended):
    /// a replica being added joins the ISR once it has been at the leader's
    /// log end; one removed is forgotten (it leaves the ISR when etcd says).
    public mutating func replicasChanged(to replicas: [Int32]) {
        self.replicas = replicas
        for gone in followerLogEnd.keys where !replicas.contains(gone) {
            followerLogEnd[gone] = nil
            caughtUp[gone] = nil
        }
    }

    /// The ISR of the partition record at etcd `revision` (the leader's own
    /// compare-and-swap, or the record as the cluster view has it); a
    /// revision not newer than the one held changes nothing. (Not the
    /// record's `version`: two writes of the controller made from one
    /// state, a handover and then a dead follower's removal, carry the same.)
    public mutating func isrChanged(to isr: Set<Int32>, revision: Int64) -> Bool {
        guard revision > isrRevision else { return false }
        isrRevision = revision
        self.isr = isr.union([leader])
        joining.subtract(self.isr)
        return advanceHighWatermark()
    }

    /// The followers the leader is writing into the ISR now (empty: none,
    /// the write failed or was given up). Never moves the high watermark
    /// forward by itself.
    public mutating func expanding(_ followers: Set<Int32>) -> Bool {
        joining = followers.subtracting(isr).filter { replicas.contains($0) && $0 != leader }
        return advanceHighWatermark()
    }

    /// `proposedISR`, and the followers it adds count for the high
    /// watermark from now on (`joining`), in the same step: no batch is
    /// committed between the proposal and the joiners counting.
    public mutating func proposeISR(now: Int64) -> Set<Int32>? {
        let proposal = proposedISR(now: now)
        if let proposal { joining = proposal.subtracting(isr) }
        return proposal
    }

    /// The high watermark is the smallest log end offset in the ISR and
    /// among the followers joining it.
    private mutating func advanceHighWatermark() -> Bool {
        let ends = isr.union(joining).map { $0 == leader ? leaderLogEnd : (followerLogEnd[$0] ?? highWatermark) }
        let candidate = ends.min() ?? leaderLogEnd
        guard candidate > highWatermark else { return false }
        highWatermark = candidate
        return true
    }

    /// Whether an acks=all produce may be taken: enough replicas in sync.
    public func acceptsAcksAll(minInsyncReplicas: Int) -> Bool {
        isr.count >= minInsyncReplicas
    }
}
