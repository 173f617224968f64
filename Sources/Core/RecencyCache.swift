/// A bounded map that, when full, forgets the entries least recently used
/// rather than everything: two generations, the newest and the one before;
/// a hit in the older is moved into the newer, and when the newer reaches
/// half the bound it becomes the older and the one before it is dropped.
/// Entries used since the last turn survive it, and every lookup and
/// insert stays a dictionary operation or two (a linked-list LRU costs a
/// node per entry on paths taken for every appended record).
public struct RecencyCache<Key: Hashable, Value> {
    private var newer: [Key: Value] = [:]
    private var older: [Key: Value] = [:]
    /// The most entries held at once.
    public let countMax: Int

    public init(countMax: Int) {
        precondition(countMax >= 2, "a recency cache holds two generations")
        self.countMax = countMax
    }

    /// Entries held now (both generations).
    public var count: Int { newer.count + older.count }

    /// The value for `key`, marked as recently used.
    public mutating func get(_ key: Key) -> Value? {
        if let value = newer[key] { return value }
        guard let value = older.removeValue(forKey: key) else { return nil }
        insert(value, for: key)
        return value
    }

    /// Sets (or replaces) the value for `key`, marked as recently used.
    public mutating func set(_ value: Value, for key: Key) {
        older.removeValue(forKey: key)
        insert(value, for: key)
    }

    /// Forgets `key`.
    public mutating func remove(_ key: Key) {
        newer.removeValue(forKey: key)
        older.removeValue(forKey: key)
    }

    /// Forgets everything.
    public mutating func removeAll() {
        newer.removeAll()
        older.removeAll()
    }

    private mutating func insert(_ value: Value, for key: Key) {
        newer[key] = value
        if newer.count >= countMax / 2 {
            // The older generation held what was not used since the last turn.
            older = newer
            newer = [:]
            newer.reserveCapacity(countMax / 2)
        }
    }
}

extension RecencyCache: Sendable where Key: Sendable, Value: Sendable {}
