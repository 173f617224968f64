import Foundation
import KafkaWire
import PostduifClient
import Synchronization

/// One consumer instance of the REST Proxy API: a group member (or a
/// reader of assigned partitions) owned by the principal that made it.
final class ConsumerInstance: Sendable {
    let group: String
    let name: String
    let owner: String
    let format: EmbeddedFormat
    let autoCommit: Bool
    let requestTimeoutMilliseconds: Int32
    let consumer: GroupConsumer
    let lastUsed: Mutex<Int64>

    init(group: String, name: String, owner: String, format: EmbeddedFormat, autoCommit: Bool, requestTimeoutMilliseconds: Int32, consumer: GroupConsumer, now: Int64) {
        self.group = group
        self.name = name
        self.owner = owner
        self.format = format
        self.autoCommit = autoCommit
        self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
        self.consumer = consumer
        lastUsed = Mutex(now)
    }
}

/// The live consumer instances, by group and name.
final class ConsumerInstances: Sendable {
    private let instances = Mutex<[String: ConsumerInstance]>([:])
    /// An instance unused this long is closed (leaves its group), as the
    /// REST Proxy's `consumer.instance.timeout.ms` does.
    let idleMilliseconds: Int64

    init(idleMilliseconds: Int64) {
        self.idleMilliseconds = idleMilliseconds
    }

    static func key(_ group: String, _ name: String) -> String { group + "\u{0}" + name }

    /// Adds `instance`; false when the name is taken in its group.
    func add(_ instance: ConsumerInstance) -> Bool {
        instances.withLock { all in
            let key = Self.key(instance.group, instance.name)
            guard all[key] == nil else { return false }
            all[key] = instance
            return true
        }
    }

    /// The instance, touched, if `principal` owns it.
    func find(_ group: String, _ name: String, principal: String, now: Int64) -> ConsumerInstance? {
        guard let instance = instances.withLock({ $0[Self.key(group, name)] }), instance.owner == principal else { return nil }
        instance.lastUsed.withLock { $0 = now }
        return instance
    }

    func remove(_ group: String, _ name: String) -> ConsumerInstance? {
        instances.withLock { $0.removeValue(forKey: Self.key(group, name)) }
    }

    var all: [ConsumerInstance] { instances.withLock { Array($0.values) } }

    /// Removes and returns those idle past the limit.
    func expire(now: Int64) -> [ConsumerInstance] {
        instances.withLock { all in
            let idle = all.filter { now - $0.value.lastUsed.withLock { $0 } > idleMilliseconds }
            for key in idle.keys { all.removeValue(forKey: key) }
            return Array(idle.values)
        }
    }
}
