import Foundation
import Metrics
import RocksDB

/// Group commit: appends write to RocksDB without syncing, take a ticket,
/// and wait here; one thread fsyncs the WAL for everyone who is waiting, so
/// a hundred concurrent appends cost one sync rather than a hundred.
///
/// Why a dedicated thread: an fsync blocks for milliseconds, and blocking one
/// of the two cooperative-pool threads of a two-core machine would stall
/// every other task. The thread sleeps while nobody waits.
///
/// Correctness rests on RocksDB writing each WAL record to the file before
/// `Write` returns (`manual_wal_flush` is off), so a sync that starts after a
/// write returned covers it.
final class GroupCommit: @unchecked Sendable {
    // All mutable state is guarded by `condition`.
    private let condition = NSCondition()
    private let database: Database
    private var ticketWritten: UInt64 = 0
    private var ticketSynced: UInt64 = 0
    private var waiters: [(ticket: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
    private var failure: RocksDBError?
    private var stopping = false
    private var stopped = false
    private(set) var syncCount: UInt64 = 0
    /// How long each WAL sync takes: the floor of an fsync-mode acknowledgement.
    private let syncDuration = Metrics.Timer(label: "postduif_wal_sync_duration_seconds")

    init(database: Database) {
        self.database = database
        let thread = Thread { [self] in run() }
        thread.name = "postduif-group-commit"
        thread.start()
    }

    /// Records that a write has returned; the ticket orders it for syncing.
    func noteWrite() -> UInt64 {
        condition.lock()
        defer { condition.unlock() }
        ticketWritten += 1
        return ticketWritten
    }

    /// Returns once every write up to `ticket` is fsynced.
    func waitDurable(_ ticket: UInt64) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            condition.lock()
            if let failure {
                condition.unlock()
                continuation.resume(throwing: LogStoreError(.storageFailed, "an earlier WAL sync failed: \(failure)"))
                return
            }
            if ticket <= ticketSynced {
                condition.unlock()
                continuation.resume()
                return
            }
            precondition(!stopped, "waiting for durability after the store closed")
            waiters.append((ticket, continuation))
            condition.signal()
            condition.unlock()
        }
    }

    /// Whether a sync has failed (the store then refuses appends).
    var failed: RocksDBError? {
        condition.lock()
        defer { condition.unlock() }
        return failure
    }

    /// Syncs whatever is pending, then ends the thread.
    func stop() {
        condition.lock()
        stopping = true
        condition.signal()
        while !stopped { condition.wait() }
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while waiters.isEmpty && !stopping { condition.wait() }
            if waiters.isEmpty && stopping {
                stopped = true
                condition.broadcast()
                condition.unlock()
                return
            }
            let target = ticketWritten
            condition.unlock()

            var syncError: RocksDBError?
            let started = ContinuousClock.now
            do {
                try database.flushWAL(sync: true)
            } catch {
                syncError = error
            }
            syncDuration.record(duration: ContinuousClock.now - started)

            condition.lock()
            syncCount += 1
            var ready: [CheckedContinuation<Void, any Error>] = []
            if let syncError {
                // What reached the disk is unknown after a failed fsync, so every
                // waiter fails and later appends are refused.
                failure = syncError
                ready = waiters.map(\.continuation)
                waiters.removeAll()
            } else {
                ticketSynced = target
                waiters.removeAll { waiter in
                    guard waiter.ticket <= target else { return false }
                    ready.append(waiter.continuation)
                    return true
                }
            }
            condition.unlock()
            for continuation in ready {
                if let syncError {
                    continuation.resume(throwing: LogStoreError(.storageFailed, "WAL sync failed: \(syncError)"))
                } else {
                    continuation.resume()
                }
            }
        }
    }
}
