import Foundation
import KafkaNIO
import KafkaWire
import NIOCore
import Synchronization

// This gateway's side of the fan-out: which users it serves and which brokers route them here.
extension ChatState {

    var uptimeSeconds: Int64 { (ContinuousClock.now - clockStart).components.seconds }

    /// A user synced here: the fan-out should route their rooms here.
    func touch(user: String) {
        let now = uptimeSeconds
        inner.withLock { $0.localUsers[user] = now }
    }

    /// The users syncing here; one idle for `idle` seconds is dropped, and
    /// the fan-out stops routing to this gateway for them.
    func localUsers(idle: Int64) -> Set<String> {
        let now = uptimeSeconds
        return inner.withLock { inner in
            for (user, seen) in inner.localUsers where now - seen > idle {
                inner.localUsers[user] = nil
                inner.registeredAt[user] = nil
            }
            return Set(inner.localUsers.keys)
        }
    }

    /// A poll loop to `address` starts (or, with `active` false, ends).
    func polling(_ address: String, active: Bool) {
        inner.withLock { inner in
            if active { inner.pollAddresses.insert(address) } else { inner.pollAddresses.remove(address) }
            for user in inner.registeredAt.keys { inner.registeredAt[user]?.remove(address) }
        }
    }

    /// A poll to `address` carrying `users` was answered: its fan-out routes them here.
    ///
    /// `added` are the users this poll newly named; `fannedOutUpTo` the
    /// fan-out's positions in the answer. From those positions on, every
    /// message of the new users' rooms reaches this gateway, so a room not
    /// yet covered by the cache is covered from there: their next syncs
    /// read the cache instead of the index.
    func confirmRegistered(_ added: Set<String>, at address: String, fannedOutUpTo: [Int32: Int64]) {
        let registered = inner.withLock { inner -> [String] in
            for user in added {
                inner.registeredAt[user, default: []].insert(address)
                for roomID in inner.roomsOfUser[user] ?? [] where inner.rooms[roomID]?.coveredFrom == nil {
                    if let upTo = fannedOutUpTo[self.partition(ofRoom: roomID)] {
                        inner.rooms[roomID]!.coveredFrom = upTo
                        inner.rooms[roomID]!.recent = []
                    }
                }
            }
            // Only these users' registration moved.
            return added.filter { Self.isRegistered(inner, $0) }
        }
        for user in registered { registrationWaiters.wake(user, with: ()) }
    }

    /// Whether every broker's fan-out routes `user` here already.
    func isRegistered(_ user: String) -> Bool { inner.withLock { Self.isRegistered($0, user) } }

    static func isRegistered(_ inner: Inner, _ user: String) -> Bool {
        !inner.pollAddresses.isEmpty && inner.pollAddresses.isSubset(of: inner.registeredAt[user] ?? [])
    }

    /// Waits until every broker's fan-out routes `user` here, so nothing
    /// sent from now on passes this gateway by; gives up after `timeout`.
    func waitRegistered(_ user: String, timeout: Duration) async {
        await registrationWaiters.wait(user, timeout: timeout) { isRegistered(user) ? () : nil }
    }

    func generation(of user: String) -> UInt64 {
        inner.withLock { $0.userGenerations[user] ?? 0 }
    }

    /// Where a partition's fan-out stands after a poll. A new worker (the
    /// broker restarted, or leadership moved) or a reported gap means some
    /// deliveries never came: the cache of that partition restarts at
    /// `upTo`, and older positions are served from the index.
    func fannedOut(partition: Int32, worker: String, upTo: Int64, gap: Bool) {
        let index = Int(partition)
        guard index < Int(timelinePartitions) else { return }
        inner.withLock { inner in
            if inner.workers[partition] != worker || gap {
                inner.workers[partition] = worker
                inner.cacheStart[index] = upTo
                for (id, room) in inner.rooms where room.coveredFrom != nil && self.partition(ofRoom: id) == partition {
                    inner.rooms[id]!.coveredFrom = nil
                    inner.rooms[id]!.recent = []
                }
                inner.deltas.removeAll()
                inner.answers.removeAll()
                inner.cacheEpoch &+= 1
            }
            inner.position.timeline[index] = max(inner.position.timeline[index], upTo)
        }
    }

    func knowsWorker(partition: Int32) -> String? {
        inner.withLock { $0.workers[partition] }
    }
}
