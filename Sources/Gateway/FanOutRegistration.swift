import Core
import Synchronization

/// This gateway's side of the fan-out: the users syncing here, the brokers
/// it polls, which of them route each user here, and the fan-out worker of
/// each partition. Written by syncs (`touch`) and the poll loops.
final class FanOutRegistration: Sendable {
    private struct Tables {
        /// Users with a session syncing here, and when they last synced
        /// (seconds of uptime): the fan-out routes their rooms to this gateway.
        var localUsers: [String: Int64] = [:]
        /// The brokers this gateway polls, and per user the brokers whose
        /// fan-out has confirmed routing the user here.
        var pollAddresses: Set<String> = []
        var registeredAt: [String: Set<String>] = [:]
        /// Per partition, the fan-out worker this gateway last heard from.
        var workers: [Int32: String] = [:]
    }

    private let tables = Mutex(Tables())
    /// Idle time is counted on it (a manual clock in tests).
    let clock: any MonotonicClock

    init(clock: any MonotonicClock = SystemClock()) {
        self.clock = clock
    }

    var uptimeSeconds: Int64 { clock.now.components.seconds }

    /// A user synced here: the fan-out should route their rooms here.
    func touch(user: String) {
        let now = uptimeSeconds
        tables.withLock { $0.localUsers[user] = now }
    }

    func isLocal(_ user: String) -> Bool { tables.withLock { $0.localUsers[user] != nil } }

    /// The users syncing here; one idle for `idle` seconds is dropped, and
    /// the fan-out stops routing to this gateway for them.
    func localUsers(idle: Int64) -> Set<String> {
        let now = uptimeSeconds
        return tables.withLock { tables in
            for (user, seen) in tables.localUsers where now - seen > idle {
                tables.localUsers[user] = nil
                tables.registeredAt[user] = nil
            }
            return Set(tables.localUsers.keys)
        }
    }

    /// A poll loop to `address` starts (or, with `active` false, ends):
    /// every user's routing there is to be confirmed again.
    func polling(_ address: String, active: Bool) {
        tables.withLock { tables in
            if active { tables.pollAddresses.insert(address) } else { tables.pollAddresses.remove(address) }
            for user in tables.registeredAt.keys { tables.registeredAt[user]?.remove(address) }
        }
    }

    /// A poll to `address` that named `added` was answered: its fan-out
    /// routes them here. Returns those whom every broker now routes here.
    func confirm(_ added: Set<String>, at address: String) -> [String] {
        tables.withLock { tables in
            for user in added { tables.registeredAt[user, default: []].insert(address) }
            return added.filter { Self.isRegistered(tables, $0) }
        }
    }

    /// Whether every broker's fan-out routes `user` here already.
    func isRegistered(_ user: String) -> Bool { tables.withLock { Self.isRegistered($0, user) } }

    private static func isRegistered(_ tables: Tables, _ user: String) -> Bool {
        !tables.pollAddresses.isEmpty && tables.pollAddresses.isSubset(of: tables.registeredAt[user] ?? [])
    }

    func worker(partition: Int32) -> String? { tables.withLock { $0.workers[partition] } }

    /// Records the worker a poll answered for; true when it is not the one
    /// heard from before (the broker restarted, or leadership moved).
    func record(worker: String, partition: Int32) -> Bool {
        tables.withLock { tables in
            guard tables.workers[partition] != worker else { return false }
            tables.workers[partition] = worker
            return true
        }
    }
}
