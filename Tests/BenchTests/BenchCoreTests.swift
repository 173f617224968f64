import Core
import Foundation
import KafkaWire
import Testing

@testable import BenchCore

@Suite struct SamplingTests {
    @Test func zipfFrequenciesFollowTheLaw() {
        let zipf = ZipfSampler(count: 100, exponent: 1.0)
        var generator = SeededGenerator(seed: 42)
        var counts = [Int](repeating: 0, count: 101)
        let draws = 200_000
        for _ in 0..<draws { counts[zipf.next(using: &generator)] += 1 }
        #expect(counts[0] == 0)
        // Rank 1 is drawn twice as often as rank 2 and ten times as often as rank 10, within sampling error.
        let ratio2 = Double(counts[1]) / Double(counts[2])
        let ratio10 = Double(counts[1]) / Double(counts[10])
        #expect(abs(ratio2 - 2) < 0.1)
        #expect(abs(ratio10 - 10) < 1)
        let expectedFirst = zipf.probability(of: 1) * Double(draws)
        #expect(abs(Double(counts[1]) - expectedFirst) / expectedFirst < 0.02)
    }

    @Test func zipfExponentZeroIsUniformAndEveryRankIsInRange() {
        let zipf = ZipfSampler(count: 10, exponent: 0)
        var generator = SeededGenerator(seed: 7)
        var counts = [Int](repeating: 0, count: 11)
        for _ in 0..<100_000 { counts[zipf.next(using: &generator)] += 1 }
        #expect(counts[0] == 0)
        for rank in 1...10 { #expect(abs(counts[rank] - 10_000) < 500) }
    }

    @Test func theSameSeedDrawsTheSameSequence() {
        let zipf = ZipfSampler(count: 1000, exponent: 1.1)
        var a = SeededGenerator(seed: 3)
        var b = SeededGenerator(seed: 3)
        #expect((0..<100).map { _ in zipf.next(using: &a) } == (0..<100).map { _ in zipf.next(using: &b) })
    }

    @Test func murmur2MatchesKafkasDefaultPartitioner() {
        // Values from Kafka's own partitioner tests (Utils.murmur2).
        #expect(KafkaPartitioner.murmur2(Array("21".utf8)) == -973_932_308)
        #expect(KafkaPartitioner.murmur2(Array("foobar".utf8)) == -790_332_482)
        #expect(KafkaPartitioner.murmur2(Array("a-little-bit-long-string".utf8)) == -985_981_536)
        #expect(KafkaPartitioner.murmur2(Array("a-little-bit-longer-string".utf8)) == -1_486_304_829)
        #expect(KafkaPartitioner.murmur2(Array("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8".utf8)) == -58_897_971)
        #expect(KafkaPartitioner.murmur2([0x62, 0x63, 0x64]) == KafkaPartitioner.murmur2(Array("bcd".utf8)))
        for key in ["room-1", "conversation-42", "x"] {
            let partition = KafkaPartitioner.partition(forKey: Array(key.utf8), partitionCount: 8)
            #expect((0..<8).contains(partition))
        }
    }

    @Test func chatRoomsHaveAtLeastTwoMembersAndPickBiggerRoomsMoreOften() {
        let rooms = ChatRooms(count: 200, membersMax: 300, exponent: 1.2, onlineFraction: 0.25, seed: 5)
        #expect(rooms.members.allSatisfy { $0 >= 2 && $0 <= 300 })
        #expect(zip(rooms.online, rooms.members).allSatisfy { $0 <= $1 })
        let onlineShare = Double(rooms.online.reduce(0, +)) / Double(rooms.members.reduce(0, +))
        #expect(abs(onlineShare - 0.25) < 0.05)
        var generator = SeededGenerator(seed: 9)
        var picks = [Int](repeating: 0, count: 200)
        for _ in 0..<100_000 { picks[rooms.pickRoom(using: &generator)] += 1 }
        let biggest = rooms.members.indices.max { rooms.members[$0] < rooms.members[$1] }!
        let expected = Double(rooms.members[biggest]) / Double(rooms.members.reduce(0, +)) * 100_000
        #expect(abs(Double(picks[biggest]) - expected) / expected < 0.1)
        #expect(ChatRooms.room(fromKey: ChatRooms.roomKey(17)) == 17)
    }
}

@Suite struct PacingTests {
    @Test func openLoopScheduleSpacesMessagesByTheRate() {
        let schedule = OpenLoopSchedule(start: 1_000_000_000, ratePerSecond: 1000, total: 5000)
        #expect(schedule.intendedTime(of: 0) == 1_000_000_000)
        #expect(schedule.intendedTime(of: 1) == 1_001_000_000)
        #expect(schedule.intendedTime(of: 1000) == 2_000_000_000)
        #expect(schedule.due(at: 999_999_999, next: 0).isEmpty)
        #expect(schedule.due(at: 1_000_000_000, next: 0) == 0..<1)
        // 10.5 ms in: messages 0...10 are due.
        #expect(schedule.due(at: 1_010_500_000, next: 0) == 0..<11)
        #expect(schedule.due(at: 1_010_500_000, next: 11).isEmpty)
        // A generator that stalled for a second owes every message it missed.
        #expect(schedule.due(at: 2_000_000_000, next: 11) == 11..<1001)
        // Never past the total.
        #expect(schedule.due(at: 100_000_000_000, next: 4990) == 4990..<5000)
    }

    @Test func payloadCarriesIntendedTimeAndNumber() {
        let filler = [UInt8](repeating: 0xAB, count: 2000)
        let value = Payload.make(size: 1024, intended: 123_456_789_012, id: 77, filler: filler)
        #expect(value.count == 1024)
        #expect(value[16] == 0xAB && value[1023] == 0xAB)
        let header = Payload.read(value)
        #expect(header?.intended == 123_456_789_012)
        #expect(header?.id == 77)
        #expect(Payload.read([1, 2, 3]) == nil)
        #expect(Payload.make(size: 4, intended: 1, id: 2, filler: filler).count == Payload.headerBytes)
    }

    @Test func receiptBookCountsEachNumberOnce() {
        let book = ReceiptBook()
        #expect(book.mark([0, 1, 2, 64, 100_000]) == 5)
        #expect(book.mark([1, 2, 3]) == 1)
        #expect(book.unique == 6)
        #expect(book.duplicates == 2)
    }
}

@Suite struct RecorderTests {
    @Test func latenciesAndCountersAreSummarised() {
        let recorder = Recorder(start: 0)
        // 100 messages, latencies 1..100 ms.
        recorder.recordLatencies(from: (1...100).map { 1_000_000_000 - UInt64($0) * 1_000_000 }, to: 1_000_000_000)
        recorder.count(.acknowledged, 60, at: 500_000_000)
        recorder.count(.acknowledged, 40, at: 1_500_000_000)
        let figures = recorder.summary(seconds: 2)
        let latency = try! #require(figures.latency)
        #expect(latency.count == 100)
        #expect(abs(latency.p50 - 50) < 0.1)
        #expect(abs(latency.p99 - 99) < 0.1)
        #expect(abs(latency.max - 100) < 0.1)
        #expect(figures.perSecond["acknowledged"] == [60, 40])
        #expect(figures.rate(.acknowledged) == 50)
        #expect(latency.curve.first?[0] == 0)
        #expect(latency.curve.last?[0] == 100)
    }

    @Test func mergingAddsHistogramsAndSeries() {
        let a = Recorder(start: 0)
        let b = Recorder(start: 0)
        a.recordLatencies(from: [0], to: 1_000_000)  // 1 ms
        b.recordLatencies(from: [0, 0, 0], to: 9_000_000)  // 9 ms three times
        a.count(.received, 1, at: 0)
        b.count(.received, 2, at: 2_100_000_000)
        a.merge(b)
        let figures = a.summary(seconds: 3)
        #expect(figures.latency?.count == 4)
        #expect(abs((figures.latency?.p50 ?? 0) - 9) < 0.01)
        #expect(figures.perSecond["received"] == [1, 0, 2])
        // Counters only: no latencies join.
        let c = Recorder(start: 0)
        c.mergeCounters(from: b, [.received])
        #expect(c.summary(seconds: 1).latency == nil)
        #expect(c.total(.received) == 2)
    }

    @Test func weightedLatenciesCountEveryCopy() {
        let recorder = Recorder(start: 0)
        recorder.recordLatencies(from: [0], to: 2_000_000, weight: 5)
        #expect(recorder.summary(seconds: 1).latency?.count == 5)
    }
}

@Suite struct ReportTests {
    func result(_ label: String, rate: Int) -> BenchResult {
        let recorder = Recorder(start: 0)
        recorder.count(.acknowledged, rate, at: 0)
        recorder.count(.acknowledged, rate, at: 1_000_000_000)
        recorder.recordLatencies(from: [0, 0], to: 3_000_000)
        return BenchResult(workload: "produce", target: "kafka://127.0.0.1:1", label: label, settings: ["rate": "x"], started: "2026-11-23T00:00:00Z",
                           figures: recorder.summary(seconds: 2), notes: ["a <note>"])
    }

    @Test func htmlHasTheChartsAndEscapesText() throws {
        let report = BenchReport(machine: "test machine", results: [result("postduif", rate: 100), result("nats <peer>", rate: 50)])
        let html = report.html()
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        #expect(html.hasSuffix("</html>\n"))
        #expect(html.contains("<figure id=\"throughput\">"))
        #expect(html.contains("<figure id=\"latency\">"))
        #expect(html.contains("<figure id=\"comparison\">"))
        #expect(html.components(separatedBy: "<svg ").count - 1 == 3)
        #expect(html.components(separatedBy: "<polyline class=\"series\"").count - 1 == 4)
        #expect(html.components(separatedBy: "<rect class=\"bar\"").count - 1 == 4)
        #expect(html.contains("nats &lt;peer&gt;"))
        #expect(!html.contains("nats <peer>"))
        #expect(html.contains("a &lt;note&gt;"))
        // Well-formedness is checked with a strict XML parser in Tests/Compat/test_bench.py.
    }

    @Test func jsonRoundTrips() throws {
        let report = BenchReport(machine: "m", results: [result("postduif", rate: 10)])
        let decoded = try JSONDecoder().decode(BenchReport.self, from: try report.json())
        #expect(decoded == report)
    }

    @Test func singleRunHasNoComparisonChart() {
        let html = BenchReport(machine: "m", results: [result("postduif", rate: 10)]).html()
        #expect(!html.contains("id=\"comparison\""))
    }
}

/// The chat workload reads `/sync` answers without decoding their JSON: it
/// must find `next_batch` and exactly the bench messages, whatever the
/// server's spacing, and nothing shaped otherwise.
@Suite struct SyncAnswerScanTests {
    func scan(_ text: String) -> SyncAnswerScan {
        Array(text.utf8).withUnsafeBytes { SyncAnswerScan($0) }
    }

    @Test func findsNextBatchAndBenchMessagesInCompactAndSpacedJSON() {
        let compact = #"{"next_batch":"s72_4483_1","rooms":{"join":{"!r:localhost":{"timeline":{"events":[{"type":"m.room.message","content":{"msgtype":"m.text","body":"bench 17 123456789"}},{"type":"m.room.message","content":{"body":"bench 18 123456999"}}]}}}}}"#
        let result = scan(compact)
        #expect(result.nextBatch == "s72_4483_1")
        #expect(result.messages.map(\.id) == [17, 18])
        #expect(result.messages.map(\.intended) == [123_456_789, 123_456_999])

        let spaced = #"{ "rooms": {"join": {"!r:localhost": {"timeline": {"events": [{"content": {"body": "bench 3 99"}}]}}}}, "next_batch" : "t9" }"#
        let other = scan(spaced)
        #expect(other.nextBatch == "t9")
        #expect(other.messages.map(\.id) == [3] && other.messages.map(\.intended) == [99])
    }

    @Test func otherStringsStartingWithBenchAreNotMessages() {
        // A room named "bench 3", user ids of the run's prefix, a body cut short.
        let text = #"{"next_batch":"n","state":[{"content":{"name":"bench 3"}},{"sender":"@bencha1r0m0:localhost"}],"x":"bench 5 ","y":"bench 5 6 7","z":"bench x 1"}"#
        let result = scan(text)
        #expect(result.nextBatch == "n")
        #expect(result.messages.isEmpty)
        #expect(scan("{}").nextBatch == nil)
    }

    @Test func theWarmUpMessageIsSeenAndNotCounted() {
        let text = #"{"next_batch":"w","rooms":{"join":{"!r:localhost":{"timeline":{"events":[{"content":{"body":"warm-up 0"}}]}}}}}"#
        let result = scan(text)
        #expect(result.warmUp)
        #expect(result.messages.isEmpty)
        // A room named like it is not the message.
        #expect(!scan(#"{"name":"warm-up"}"#).warmUp)
        #expect(!scan(#"{"next_batch":"n","rooms":{}}"#).warmUp)
    }
}
