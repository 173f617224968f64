import Foundation
import Synchronization

/// The operator console's data, given to `OperationsServer` by the process
/// that runs it: the cluster's state as JSON (`Broker.consoleState`), the
/// recent events, and who may look. The page itself (`ConsoleAssets`) asks
/// for them and for `/metrics`, and draws everything in the browser; it
/// loads nothing from outside the broker.
public struct OperationsConsole: Sendable {
    public var state: @Sendable () -> String
    public var events: RecentEvents
    /// Checks HTTP Basic credentials (user, password, the client's
    /// address); nil leaves the console open, as when the operations port
    /// has no TLS or the authorizer is off.
    public var authorize: (@Sendable (_ user: String, _ password: String, _ host: String) -> Bool)?

    public init(state: @escaping @Sendable () -> String, events: RecentEvents,
                authorize: (@Sendable (_ user: String, _ password: String, _ host: String) -> Bool)? = nil) {
        self.state = state
        self.events = events
        self.authorize = authorize
    }
}

/// The newest log records of the process (info and above), for the
/// console's event log: a ring of `capacity`, oldest dropped first.
public final class RecentEvents: Sendable {
    public struct Event: Codable, Sendable, Equatable {
        public var time: String
        public var level: String
        public var message: String
        public var details: [String: String]

        public init(time: String, level: String, message: String, details: [String: String]) {
            self.time = time
            self.level = level
            self.message = message
            self.details = details
        }
    }

    private let ring: Mutex<(events: [Event], next: Int, total: Int)>
    public let capacity: Int

    public init(capacity: Int = 200) {
        precondition(capacity > 0, "a ring of no events")
        self.capacity = capacity
        ring = Mutex(([], 0, 0))
    }

    public func record(_ event: Event) {
        ring.withLock { ring in
            if ring.events.count < capacity {
                ring.events.append(event)
            } else {
                ring.events[ring.next] = event
            }
            ring.next = (ring.next + 1) % capacity
            ring.total += 1
        }
    }

    /// The events held, oldest first, and how many were ever recorded.
    public var snapshot: (events: [Event], total: Int) {
        ring.withLock { ring in
            let ordered = ring.events.count < capacity ? ring.events : Array(ring.events[ring.next...] + ring.events[..<ring.next])
            return (ordered, ring.total)
        }
    }

    public var json: String {
        struct Body: Encodable {
            var total: Int
            var events: [Event]
        }
        let (events, total) = snapshot
        let data = (try? JSONEncoder().encode(Body(total: total, events: events))) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
