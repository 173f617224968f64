import Foundation
import RocksDB
import Testing

/// A fresh directory under the system's temporary folder, removed by the caller.
func makeTemporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "postduif-rocksdb-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

@Suite struct DatabaseTests {
    @Test func putGetDeleteRoundTripInNamedColumnFamily() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try Database(path: path, columnFamilies: ["log", "meta"])
        let log = try #require(database.columnFamily("log"))
        let meta = try #require(database.columnFamily("meta"))
        try database.put(bytes("k"), bytes("in-log"), in: log, sync: true)
        try database.put(bytes("k"), bytes("in-meta"), in: meta)
        #expect(try database.get(bytes("k"), in: log) == bytes("in-log"))
        #expect(try database.get(bytes("k"), in: meta) == bytes("in-meta"))
        try database.delete(bytes("k"), in: log)
        #expect(try database.get(bytes("k"), in: log) == nil)
        #expect(try database.get(bytes("k"), in: meta) == bytes("in-meta"))
    }

    @Test func reopeningKeepsDataAndColumnFamiliesNotNamedAgain() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let database = try Database(path: path, columnFamilies: ["extra"])
            try database.put(bytes("a"), bytes("1"), in: database.columnFamily("extra")!, sync: true)
            database.close()
        }
        let reopened = try Database(path: path, columnFamilies: [])
        let extra = try #require(reopened.columnFamily("extra"))
        #expect(try reopened.get(bytes("a"), in: extra) == bytes("1"))
    }

    @Test func writeBatchIsAtomicAndCountsOperations() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try Database(path: path, columnFamilies: ["a", "b"])
        let a = database.columnFamily("a")!
        let b = database.columnFamily("b")!
        let batch = WriteBatch()
        batch.put(bytes("x"), bytes("1"), in: a)
        batch.put(bytes("y"), bytes("2"), in: b)
        batch.delete(bytes("z"), in: a)
        #expect(batch.count == 3)
        try database.write(batch, sync: true)
        #expect(try database.get(bytes("x"), in: a) == bytes("1"))
        #expect(try database.get(bytes("y"), in: b) == bytes("2"))
        batch.clear()
        #expect(batch.count == 0)
    }

    @Test func boundedIteratorStaysInsideItsRangeBothWays() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try Database(path: path, columnFamilies: ["f"])
        let family = database.columnFamily("f")!
        for index in 0..<10 {
            try database.put([UInt8(index)], [UInt8(index * 2)], in: family)
        }
        var forward: [UInt8] = []
        do {
            let iterator = database.makeIterator(in: family, lowerBound: [3], upperBound: [7])
            iterator.seekToFirst()
            while iterator.isValid {
                forward.append(iterator.key[0])
                #expect(iterator.value == [iterator.key[0] * 2])
                iterator.next()
            }
            try iterator.checkError()
        }
        #expect(forward == [3, 4, 5, 6])
        var backward: [UInt8] = []
        do {
            let iterator = database.makeIterator(in: family, lowerBound: [3], upperBound: [7])
            iterator.seekToLast()
            while iterator.isValid {
                backward.append(iterator.key[0])
                iterator.previous()
            }
        }
        #expect(backward == [6, 5, 4, 3])
        let iterator = database.makeIterator(in: family)
        iterator.seekForPrevious([5, 0])
        #expect(iterator.key == [5])
        iterator.seek([5, 0])
        #expect(iterator.key == [6])
    }

    @Test func snapshotDoesNotSeeLaterWrites() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try Database(path: path, columnFamilies: ["f"])
        let family = database.columnFamily("f")!
        try database.put(bytes("k"), bytes("old"), in: family)
        let snapshot = database.makeSnapshot()
        try database.put(bytes("k"), bytes("new"), in: family)
        try database.put(bytes("k2"), bytes("new"), in: family)
        #expect(try database.get(bytes("k"), in: family, snapshot: snapshot) == bytes("old"))
        #expect(try database.get(bytes("k"), in: family) == bytes("new"))
        let iterator = database.makeIterator(in: family, snapshot: snapshot)
        iterator.seekToFirst()
        var count = 0
        while iterator.isValid { count += 1; iterator.next() }
        #expect(count == 1)
    }

    @Test func deleteRangeRemovesExactlyTheHalfOpenRange() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try Database(path: path, columnFamilies: ["f"])
        let family = database.columnFamily("f")!
        for index: UInt8 in 0..<10 {
            try database.put([index], [index], in: family)
        }
        try database.deleteRange(from: [2], to: [5], in: family)
        let batch = WriteBatch()
        batch.deleteRange(from: [8], to: [10], in: family)
        try database.write(batch, sync: false)
        var remaining: [UInt8] = []
        let iterator = database.makeIterator(in: family)
        iterator.seekToFirst()
        while iterator.isValid { remaining.append(iterator.key[0]); iterator.next() }
        #expect(remaining == [0, 1, 5, 6, 7])
    }

    @Test func propertiesAndApproximateSizesAfterFlush() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try Database(path: path, columnFamilies: ["f"])
        let family = database.columnFamily("f")!
        let value = [UInt8](repeating: 7, count: 1000)
        for index in 0..<1000 {
            try database.put(withUnsafeBytes(of: UInt32(index).bigEndian) { Array($0) }, value, in: family)
        }
        try database.flushWAL(sync: true)
        try database.flush(family)
        let keys = try #require(database.integerProperty("rocksdb.estimate-num-keys", in: family))
        #expect(keys > 500 && keys < 2000)
        #expect(database.property("rocksdb.stats") != nil)
        let size = try database.approximateSize(from: [0, 0, 0, 0], to: [0xff, 0xff, 0xff, 0xff], in: family)
        #expect(size > 0)
        database.compactRange(from: nil, to: nil, in: family)
    }

    @Test func openingAFileAsADatabaseGivesRocksDBsMessage() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = path + "/not-a-directory"
        _ = FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        #expect(throws: RocksDBError.self) {
            _ = try Database(path: file, columnFamilies: [])
        }
        do {
            _ = try Database(path: file, columnFamilies: [])
        } catch {
            #expect(error.operation.hasPrefix("open"))
            #expect(!error.message.isEmpty)
        }
    }

    @Test func blobColumnFamilyKeepsLargeValuesAcrossFlushAndReopen() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        var blobbed = ColumnFamilyOptions()
        blobbed.blobs = BlobSettings(valueBytesMin: 1024)
        let large = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        do {
            let database = try Database(path: path, columnFamilyOptions: [("blobs", blobbed), ("plain", ColumnFamilyOptions())])
            let family = try #require(database.columnFamily("blobs"))
            try database.put(bytes("large"), large, in: family)
            try database.put(bytes("small"), bytes("tiny"), in: family)
            try database.flush(family)
            #expect(try database.get(bytes("large"), in: family) == large)
            database.close()
        }
        let reopened = try Database(path: path, columnFamilyOptions: [("blobs", blobbed)])
        let family = try #require(reopened.columnFamily("blobs"))
        #expect(try reopened.get(bytes("large"), in: family) == large)
        #expect(try reopened.get(bytes("small"), in: family) == bytes("tiny"))
        #expect(reopened.columnFamily("plain") != nil)
        let blobFiles = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".blob") }
        #expect(!blobFiles.isEmpty, "values over the minimum went to a blob file")
    }

    @Test func putFromPartsStoresTheirConcatenation() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try Database(path: path, columnFamilies: ["f"])
        let family = database.columnFamily("f")!
        let head = bytes("head-")
        let body = bytes("and-body")
        let batch = WriteBatch()
        head.withUnsafeBytes { h in
            body.withUnsafeBytes { b in
                batch.put(bytes("k"), parts: [h, b], in: family)
            }
        }
        try database.write(batch, sync: false)
        #expect(try database.get(bytes("k"), in: family) == bytes("head-and-body"))
    }
}

/// What a process killed now would leave: a copy of the database's files as
/// they are (the page cache outlives the process), opened as RocksDB would
/// open them at the next start.
private func reopenAsAfterAProcessCrash(_ path: String, families: [String]) throws -> Database {
    let copy = makeTemporaryDirectory()
    for name in try FileManager.default.contentsOfDirectory(atPath: path) where name != "LOCK" {
        try FileManager.default.copyItem(atPath: path + "/" + name, toPath: copy + "/" + name)
    }
    return try Database(path: copy, columnFamilies: families)
}

@Suite struct BufferedWALTests {
    @Test func aBufferedWriteReachesTheWALFileWithTheNextUnbufferedOneAndNeverAfterIt() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        var options = DatabaseOptions()
        options.manualWALFlush = true
        let database = try Database(path: path, options: options, columnFamilies: ["log"])
        let log = try #require(database.columnFamily("log"))
        try database.put(bytes("before"), bytes("1"), in: log)

        let buffered = WriteBatch()
        buffered.put(bytes("buffered"), bytes("2"), in: log)
        try database.write(buffered, sync: false, buffered: true)
        #expect(try database.get(bytes("buffered"), in: log) == bytes("2"), "readers see a buffered write at once")
        do {
            let crashed = try reopenAsAfterAProcessCrash(path, families: ["log"])
            defer { try? FileManager.default.removeItem(atPath: crashed.path) }
            let family = try #require(crashed.columnFamily("log"))
            #expect(try crashed.get(bytes("before"), in: family) == bytes("1"), "an unbuffered write is in the WAL file when it returns")
            #expect(try crashed.get(bytes("buffered"), in: family) == nil, "a buffered write waits for the next flush")
            crashed.close()
        }

        try database.put(bytes("after"), bytes("3"), in: log)
        do {
            let crashed = try reopenAsAfterAProcessCrash(path, families: ["log"])
            defer { try? FileManager.default.removeItem(atPath: crashed.path) }
            let family = try #require(crashed.columnFamily("log"))
            #expect(try crashed.get(bytes("after"), in: family) == bytes("3"))
            #expect(try crashed.get(bytes("buffered"), in: family) == bytes("2"), "an unbuffered write takes the buffered ones before it along")
            crashed.close()
        }
        database.close()
    }

    @Test func closingKeepsBufferedWrites() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        var options = DatabaseOptions()
        options.manualWALFlush = true
        do {
            let database = try Database(path: path, options: options, columnFamilies: ["log"])
            let batch = WriteBatch()
            batch.put(bytes("k"), bytes("v"), in: database.columnFamily("log")!)
            try database.write(batch, sync: false, buffered: true)
            database.close()
        }
        let reopened = try Database(path: path, columnFamilies: ["log"])
        #expect(try reopened.get(bytes("k"), in: reopened.columnFamily("log")!) == bytes("v"))
    }

    @Test func withoutTheOptionEveryWriteReachesTheWALFile() throws {
        let path = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try Database(path: path, columnFamilies: ["log"])
        let batch = WriteBatch()
        batch.put(bytes("k"), bytes("v"), in: database.columnFamily("log")!)
        try database.write(batch, sync: false, buffered: true)
        let crashed = try reopenAsAfterAProcessCrash(path, families: ["log"])
        defer { try? FileManager.default.removeItem(atPath: crashed.path) }
        #expect(try crashed.get(bytes("k"), in: crashed.columnFamily("log")!) == bytes("v"))
        crashed.close()
        database.close()
    }
}
