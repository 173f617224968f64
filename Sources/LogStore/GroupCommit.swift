import Foundation
import Metrics
import RocksDB
import Synchronization

/// Group commit: appends write their batch to a segment file without
/// syncing, take a ticket, and wait here; one thread syncs every segment
/// written since its last round for everyone who is waiting, so a hundred
/// concurrent appends cost one round of syncs rather than a hundred.
///
/// Why a dedicated thread: an fsync blocks for milliseconds, and blocking one
/// of the two cooperative-pool threads of a two-core machine would stall
/// every other task. The thread sleeps while nobody waits.
///
/// Only segment files are synced. RocksDB's entries for a batch (its
/// location, the conversation index, producer state) go to its WAL's
/// buffer, unsynced: after a crash of the machine or of the process,
/// opening the store rebuilds them from the segments (Docs/adr/0013). Correctness rests on a batch's `pwrite`
/// returning before its ticket is taken, so a sync that starts after the
/// ticket covers it.
final class GroupCommit: @unchecked Sendable {
    // All mutable state is guarded by `condition`.
    private let condition = NSCondition()
    private let database: Database
    /// Whether a write since the last round needs RocksDB's WAL synced too
    /// (group offsets, which live only in RocksDB).
    private var walDirty = false
    private var ticketWritten: UInt64 = 0
    private var ticketSynced: UInt64 = 0
    /// Who waits for which ticket: a task's continuation, or a callback
    /// (`whenDurable`), both called with nil or the sync's failure.
    private var waiters: [(ticket: UInt64, done: @Sendable (LogStoreError?) -> Void)] = []
    /// Segments written since the last round began, by identity.
    private var dirty: [ObjectIdentifier: SegmentFile] = [:]
    /// Segments whose writeback should start, in modes that do not sync.
    private var writebacks: [ObjectIdentifier: SegmentFile] = [:]
    private var failure: LogStoreError?
    private var stopping = false
    private var stopped = false
    private(set) var syncCount: UInt64 = 0
    /// How long each round of syncs takes: the floor of an fsync-mode
    /// acknowledgement. (The metric keeps its first name, from when the
    /// round synced RocksDB's WAL, so dashboards keep working.)
    private let syncDuration = Metrics.Timer(label: "postduif_wal_sync_duration_seconds")

    /// Segments to write out ahead (`SegmentFile.prepare`), by identity,
    /// with how far; guarded by `preparations`' lock.
    private let preparations = NSCondition()
    private var preparationsWanted: [ObjectIdentifier: (segment: SegmentFile, ahead: Int64, limit: Int64)] = [:]
    private var preparerStopping = false
    private var preparerStopped = false
    /// The preparer is writing zeros out (for `waitForPreparations`).
    private var preparerBusy = false

    init(database: Database) {
        self.database = database
        let thread = Thread { [self] in run() }
        thread.name = "postduif-group-commit"
        thread.start()
        let preparer = Thread { [self] in prepareSegments() }
        preparer.name = "postduif-segment-prepare"
        preparer.start()
    }

    /// Asks for `segment` to be written out `ahead` bytes past its last
    /// write (at most to `limit`), on a thread of its own: a round of
    /// syncs never waits for it.
    func requestPreparation(_ segment: SegmentFile, ahead: Int64, limit: Int64) {
        preparations.lock()
        preparationsWanted[ObjectIdentifier(segment)] = (segment, ahead, limit)
        preparations.broadcast()
        preparations.unlock()
    }

    private func prepareSegments() {
        while true {
            preparations.lock()
            while preparationsWanted.isEmpty && !preparerStopping { preparations.wait() }
            if preparerStopping {
                preparerStopped = true
                preparations.broadcast()
                preparations.unlock()
                return
            }
            let wanted = Array(preparationsWanted.values)
            preparationsWanted.removeAll(keepingCapacity: true)
            preparerBusy = true
            preparations.unlock()
            defer {
                preparations.lock()
                preparerBusy = false
                preparations.broadcast()
                preparations.unlock()
            }
            for request in wanted {
                // A zeros write that failed (a full disk) leaves appends
                // growing the file as they would without it.
                if case .syncFailed(let error) = request.segment.prepare(ahead: request.ahead, limit: request.limit) {
                    condition.lock()
                    failure = failure ?? error
                    condition.unlock()
                }
            }
        }
    }

    /// Returns once every preparation asked for so far is done (for tests).
    func waitForPreparations() {
        preparations.lock()
        while !preparationsWanted.isEmpty || preparerBusy { preparations.wait() }
        preparations.unlock()
    }

    private func stopPreparer() {
        preparations.lock()
        preparerStopping = true
        preparations.broadcast()
        while !preparerStopped { preparations.wait() }
        preparations.unlock()
    }

    /// Records that a write to `segment` has returned (nil: nothing new was
    /// written, as for a producer's retry); the ticket orders it for syncing.
    /// `wal`: the write went to RocksDB alone and needs its WAL synced.
    func noteWrite(_ segment: SegmentFile?, wal: Bool = false) -> UInt64 {
        condition.lock()
        defer { condition.unlock() }
        ticketWritten += 1
        if let segment { dirty[ObjectIdentifier(segment)] = segment }
        if wal { walDirty = true }
        return ticketWritten
    }

    /// Returns once every write up to `ticket` is fsynced.
    func waitDurable(_ ticket: UInt64) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            whenDurable(ticket) { failure in
                if let failure {
                    continuation.resume(throwing: failure)
                } else {
                    continuation.resume()
                }
            }
        }
    }

    /// Calls `done` once every write up to `ticket` is fsynced (nil), or
    /// with why not: at once when it already is, else on this thread after
    /// its round of syncs, so `done` should be short.
    func whenDurable(_ ticket: UInt64, _ done: @escaping @Sendable (LogStoreError?) -> Void) {
        condition.lock()
        if let failure {
            condition.unlock()
            done(LogStoreError(.storageFailed, "an earlier segment sync failed: \(failure)"))
            return
        }
        if ticket <= ticketSynced {
            condition.unlock()
            done(nil)
            return
        }
        precondition(!stopped, "waiting for durability after the store closed")
        waiters.append((ticket, done))
        condition.signal()
        condition.unlock()
    }

    /// Asks the thread to start writing a segment's dirty pages to the disk
    /// without waiting for them. Modes that acknowledge before a sync call
    /// this every few MiB written: the kernel otherwise lets gigabytes of
    /// dirty pages pile up and then stalls the writer (here: an append
    /// holding its partition's lock) for hundreds of milliseconds while
    /// it catches up. RocksDB's `bytes_per_sync` exists for the same reason.
    func requestWriteback(_ segment: SegmentFile) {
        condition.lock()
        writebacks[ObjectIdentifier(segment)] = segment
        condition.signal()
        condition.unlock()
    }

    /// Syncs RocksDB's WAL on the calling thread, not this one's: for
    /// writers that hold a partition's lock, which the completions this
    /// thread calls may need. A failure counts as a round's does: later
    /// appends are refused.
    func syncWAL() throws(LogStoreError) {
        if let failed { throw LogStoreError(.storageFailed, "an earlier sync failed: \(failed)") }
        do {
            try database.flushWAL(sync: true)
        } catch {
            let failure = LogStoreError.storage(error)
            condition.lock()
            self.failure = self.failure ?? failure
            condition.unlock()
            throw failure
        }
    }

    /// Whether a sync has failed (the store then refuses appends).
    var failed: LogStoreError? {
        condition.lock()
        defer { condition.unlock() }
        return failure
    }

    /// Syncs whatever is pending, then ends the threads.
    func stop() {
        stopPreparer()
        condition.lock()
        stopping = true
        condition.signal()
        while !stopped { condition.wait() }
        condition.unlock()
    }

    /// Makes every write to `segments` durable, with one flush of each
    /// disk's volatile cache where that is enough (Docs/adr/0039).
    ///
    /// A segment whose writes landed in blocks written out ahead (its
    /// `syncNeed` is `.data`) needs its pages written and the disk's cache
    /// flushed, nothing of its metadata. On each device one segment is
    /// synced with `fdatasync`, which flushes the cache: one that needs its
    /// metadata if there is one, else one of the others. Every other
    /// segment's pages are written and waited for first (`writeOut`), so
    /// that flush covers them. Before, each segment's own `fdatasync`
    /// flushed the cache: up to four flushes a round over four partitions,
    /// on dispatch threads woken for them. A segment that grew or was cut
    /// still gets its own `fdatasync`.
    static func sync(_ segments: [SegmentFile]) -> LogStoreError? {
        var synced: [SegmentFile] = []
        var dataOnly: [SegmentFile] = []
        for segment in segments {
            switch segment.syncNeed() {
            case .data: dataOnly.append(segment)
            case .dataAndMetadata: synced.append(segment)
            }
        }
        var flushedDevices = Set(synced.map(\.device))
        var writtenOut: [SegmentFile] = []
        for segment in dataOnly {
            if flushedDevices.insert(segment.device).inserted {
                synced.append(segment)
            } else {
                writtenOut.append(segment)
            }
        }
        // Every segment's pages on their way to the disk at once.
        if segments.count > 1 {
            for segment in segments { segment.startWriteback() }
        }
        do throws(LogStoreError) {
            for segment in writtenOut { try segment.writeOut() }
            if synced.count <= 1 {
                try synced.first?.sync()
                return nil
            }
        } catch {
            return error
        }
        // Several at once, not one after another: each waits mostly on the
        // disk, which takes several files' writes and flushes together.
        let failures = Mutex<LogStoreError?>(nil)
        let files = synced
        DispatchQueue.concurrentPerform(iterations: files.count) { position in
            do throws(LogStoreError) {
                try files[position].sync()
            } catch {
                failures.withLock { $0 = $0 ?? error }
            }
        }
        return failures.withLock { $0 }
    }

    private func run() {
        while true {
            condition.lock()
            while waiters.isEmpty && writebacks.isEmpty && !stopping { condition.wait() }
            if waiters.isEmpty && !writebacks.isEmpty {
                // No one waits for durability (`none` and `replicated`
                // modes): only start the writeback asked for, and go on.
                let started = Array(writebacks.values)
                writebacks.removeAll(keepingCapacity: true)
                condition.unlock()
                for segment in started { segment.startWriteback() }
                continue
            }
            if waiters.isEmpty && stopping {
                stopped = true
                condition.broadcast()
                condition.unlock()
                return
            }
            let target = ticketWritten
            let segments = Array(dirty.values)
            dirty.removeAll(keepingCapacity: true)
            let syncWAL = walDirty
            walDirty = false
            condition.unlock()

            let started = ContinuousClock.now
            var syncError = GroupCommit.sync(segments)
            if syncError == nil && syncWAL {
                do {
                    try database.flushWAL(sync: true)
                } catch {
                    syncError = .storage(error)
                }
            }
            syncDuration.record(duration: ContinuousClock.now - started)

            condition.lock()
            syncCount += 1
            var ready: [@Sendable (LogStoreError?) -> Void] = []
            // A failed sync on the preparer's thread (whose pages may be
            // this round's too) fails the round as well.
            if syncError == nil, let failure { syncError = failure }
            if let syncError {
                // What reached the disk is unknown after a failed fsync, so every
                // waiter fails and later appends are refused.
                failure = syncError
                ready = waiters.map(\.done)
                waiters.removeAll()
            } else {
                ticketSynced = target
                waiters.removeAll { waiter in
                    guard waiter.ticket <= target else { return false }
                    ready.append(waiter.done)
                    return true
                }
            }
            condition.unlock()
            let outcome = syncError.map { LogStoreError(.storageFailed, "segment sync failed: \($0)") }
            for done in ready { done(outcome) }
        }
    }
}
