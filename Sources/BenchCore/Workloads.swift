import Core
import Foundation
import Synchronization

/// The workloads and every knob they have; the defaults are the documented ones.
public struct WorkloadSettings: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case produce, consume, e2e, chat
    }

    public var kind: Kind = .produce
    /// Topic (Kafka) or stream (NATS) name.
    public var stream = "bench"
    public var partitions = 8
    /// Concurrent publishers, each with its own connection.
    public var producers = 1
    public var messageBytes = 1024
    /// Keys over this many conversations, drawn with a Zipf skew.
    public var conversations = 10_000
    public var zipfExponent = 1.0
    /// Messages per second across all publishers; nil runs a closed loop (as fast as acknowledged).
    public var rate: Double?
    public var seconds = 10.0
    /// Stop after this many messages instead (or whichever comes first).
    public var count: Int?
    /// consume: read from the start of a topic first filled with `count` messages, or from the tail while producing.
    public var fromStart = true
    /// chat: member counts follow a Zipf law up to this size.
    public var membersMax = 500
    public var membersZipfExponent = 1.2
    /// chat: the share of members online (receiving live).
    public var onlineFraction = 0.2
    public var seed: UInt64 = 1
    public var publish = PublishSettings()
    /// How long to wait after the last send for acknowledgements and receipts.
    public var drainSeconds = 15.0

    public init() {}

    public var described: [String: String] {
        var settings: [String: String] = [
            "workload": kind.rawValue, "stream": stream, "partitions": "\(partitions)", "producers": "\(producers)",
            "message_bytes": "\(messageBytes)", "conversations": "\(conversations)", "zipf": "\(zipfExponent)",
            "rate": rate.map { "\($0)" } ?? "closed loop", "seconds": "\(seconds)", "count": count.map { "\($0)" } ?? "none",
            "acks": "\(publish.acks)", "batch_bytes": "\(publish.batchBytes)", "linger_ms": "\(publish.lingerMilliseconds)",
            "in_flight": "\(publish.inFlightMax)", "seed": "\(seed)",
        ]
        if kind == .consume { settings["from"] = fromStart ? "start" : "tail" }
        if kind == .chat {
            settings["members_max"] = "\(membersMax)"
            settings["members_zipf"] = "\(membersZipfExponent)"
            settings["online_fraction"] = "\(onlineFraction)"
        }
        return settings
    }
}

/// Counts each message number once, however often it arrives (at-least-once delivery).
final class ReceiptBook: Sendable {
    private struct State {
        var words: [UInt64] = []
        var unique = 0
        var duplicates = 0
    }
    private let state = Mutex(State())

    /// Marks the numbers; returns how many were new.
    func mark(_ ids: [UInt64]) -> Int {
        state.withLock { state in
            var new = 0
            for id in ids {
                let word = Int(id / 64)
                if word >= state.words.count { state.words.append(contentsOf: repeatElement(0, count: word + 1 - state.words.count + 1024)) }
                let bit = UInt64(1) << (id % 64)
                if state.words[word] & bit == 0 {
                    state.words[word] |= bit
                    new += 1
                } else {
                    state.duplicates += 1
                }
            }
            state.unique += new
            return new
        }
    }

    var unique: Int { state.withLock { $0.unique } }
    var duplicates: Int { state.withLock { $0.duplicates } }
}

/// Chat rooms for the chat workload: sizes from a Zipf law, online members
/// sampled once, and a sender picked with probability proportional to room
/// size (every member talks at the same rate).
public struct ChatRooms: Sendable {
    public let members: [Int]
    public let online: [Int]
    private let cumulativeMembers: [Int]

    public init(count: Int, membersMax: Int, exponent: Double, onlineFraction: Double, seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        let sizes = ZipfSampler(count: max(membersMax - 1, 1), exponent: exponent)
        var members: [Int] = []
        var online: [Int] = []
        for _ in 0..<count {
            let size = sizes.next(using: &generator) + 1  // a conversation has at least two members
            members.append(size)
            online.append((0..<size).reduce(0) { total, _ in total + (Double.random(in: 0..<1, using: &generator) < onlineFraction ? 1 : 0) })
        }
        self.members = members
        self.online = online
        var running = 0
        cumulativeMembers = members.map { running += $0; return running }
    }

    public func pickRoom(using generator: inout some RandomNumberGenerator) -> Int {
        let target = Int.random(in: 0..<cumulativeMembers.last!, using: &generator)
        var low = 0
        var high = cumulativeMembers.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulativeMembers[middle] <= target { low = middle + 1 } else { high = middle }
        }
        return low
    }

    public static func roomKey(_ room: Int) -> [UInt8] { Array("room-\(room)".utf8) }

    public static func room(fromKey key: [UInt8]) -> Int? {
        let text = String(decoding: key, as: UTF8.self)
        return text.hasPrefix("room-") ? Int(text.dropFirst(5)) : nil
    }
}

/// Runs one workload against one target.
public struct WorkloadRunner: Sendable {
    public let target: any Target
    public let settings: WorkloadSettings
    /// Called about once a second with a progress line.
    public let progress: @Sendable (String) -> Void

    public init(target: any Target, settings: WorkloadSettings, progress: @escaping @Sendable (String) -> Void = { _ in }) {
        self.target = target
        self.settings = settings
        self.progress = progress
    }

    public func run() async throws -> BenchResult {
        let started = ISO8601DateFormatter().string(from: Date())
        let stream = settings.kind == .chat && settings.stream == "bench" ? "conversations" : settings.stream
        try await target.prepare(stream: stream, partitions: settings.partitions)
        let recorder: Recorder
        var notes: [String] = []
        let seconds: Double
        switch settings.kind {
        case .produce:
            recorder = Recorder()
            let outcome = try await produce(stream: stream, recorder: recorder)
            seconds = outcome.seconds
            notes += outcome.notes
        case .e2e, .chat:
            recorder = Recorder()
            let outcome = try await produceAndConsume(stream: stream, recorder: recorder)
            seconds = outcome.seconds
            notes += outcome.notes
        case .consume:
            (recorder, seconds, notes) = try await consume(stream: stream)
        }
        let figures = recorder.summary(seconds: seconds)
        return BenchResult(
            workload: settings.kind.rawValue, target: target.url, label: target.label,
            settings: settings.described, started: started, figures: figures, notes: notes)
    }

    struct Outcome {
        var seconds: Double
        var notes: [String]
        var sent: Int
    }

    /// The key of the next message: a Zipf-drawn conversation, or for chat a
    /// room picked by its size. Keys are made once (`keys`), not per message.
    func nextKey(rooms: ChatRooms?, zipf: ZipfSampler, keys: [[UInt8]], generator: inout SeededGenerator) -> [UInt8] {
        if let rooms { return keys[rooms.pickRoom(using: &generator)] }
        return keys[zipf.next(using: &generator) - 1]
    }

    var rooms: ChatRooms? {
        settings.kind == .chat
            ? ChatRooms(count: settings.conversations, membersMax: settings.membersMax, exponent: settings.membersZipfExponent, onlineFraction: settings.onlineFraction, seed: settings.seed)
            : nil
    }

    /// Drives the publishers: open loop at `rate`, or closed loop; stops at
    /// `seconds` or `count`; then waits for every acknowledgement.
    func produce(stream: String, recorder: Recorder, rate: Double? = nil, count: Int? = nil, rooms: ChatRooms? = nil, quiet: Bool = false, progressRecorder: Recorder? = nil) async throws -> Outcome {
        let rate = rate ?? settings.rate
        let total = count ?? settings.count
        let zipf = ZipfSampler(count: max(settings.conversations, 1), exponent: settings.zipfExponent)
        let nextID = SharedCount()
        let keys: [[UInt8]] = rooms != nil
            ? (0..<rooms!.members.count).map { ChatRooms.roomKey($0) }
            : (1...max(settings.conversations, 1)).map { Array("conversation-\($0)".utf8) }
        var filler = [UInt8](repeating: 0, count: settings.messageBytes)
        var fillGenerator = SeededGenerator(seed: settings.seed ^ 0xF111)
        for index in filler.indices { filler[index] = UInt8.random(in: 0...255, using: &fillGenerator) }
        let publishers = try await (0..<settings.producers).asyncMap { _ in
            try await target.makePublisher(stream: stream, recorder: recorder, settings: settings.publish)
        }
        let start = monotonicNanoseconds()
        let deadline = start + UInt64(settings.seconds * 1e9)
        let shown = progressRecorder ?? recorder
        let progressCounter: Counter = rooms != nil ? .deliveries : (progressRecorder != nil ? .received : .acknowledged)
        let progressTask = quiet ? nil : Task { await reportProgress(recorder: shown, start: start, deadline: deadline, total: total, counter: progressCounter) }
        defer { progressTask?.cancel() }
        let producers = settings.producers
        let perPublisherTotal = total.map { ($0 + producers - 1) / producers }
        let workload = settings
        let filled = filler
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, publisher) in publishers.enumerated() {
                group.addTask {
                    let settings = workload
                    var generator = SeededGenerator(seed: settings.seed &+ UInt64(index) &* 7919)
                    let limit = perPublisherTotal ?? Int.max
                    func make(_ intended: UInt64) -> OutgoingMessage {
                        let id = UInt64(nextID.add(1) - 1)
                        let key = nextKey(rooms: rooms, zipf: zipf, keys: keys, generator: &generator)
                        return OutgoingMessage(key: key, value: Payload.make(size: settings.messageBytes, intended: intended, id: id, filler: filled), intended: intended)
                    }
                    if let rate {
                        let schedule = OpenLoopSchedule(start: start, ratePerSecond: rate / Double(producers), total: limit)
                        var next = 0
                        while next < limit {
                            let now = monotonicNanoseconds()
                            if now >= deadline { break }
                            let due = schedule.due(at: now, next: next)
                            if due.isEmpty {
                                // Wake at most every millisecond and send what fell due
                                // meanwhile: a wake-up per message would cost more CPU
                                // than the sending, on the cores the target needs.
                                // Latency still counts from each message's own due time.
                                let wait = schedule.intendedTime(of: next) - min(now, schedule.intendedTime(of: next))
                                try await Task.sleep(for: .nanoseconds(Int64(max(wait, 1_000_000))))
                                continue
                            }
                            // At most a few thousand at once, so a stall's backlog flows out in steps.
                            let slice = due.prefix(4096)
                            try await publisher.publish(slice.map { make(schedule.intendedTime(of: $0)) })
                            next = slice.upperBound
                        }
                    } else {
                        var sent = 0
                        while sent < limit && monotonicNanoseconds() < deadline {
                            let chunk = min(256, limit - sent)
                            let now = monotonicNanoseconds()
                            try await publisher.publish((0..<chunk).map { _ in make(now) })
                            sent += chunk
                        }
                    }
                    try await publisher.flush()
                }
            }
            try await group.waitForAll()
        }
        let sendingEnded = monotonicNanoseconds()
        for publisher in publishers { await publisher.close() }
        var notes: [String] = []
        let sent = recorder.total(.sent)
        let elapsed = Double(sendingEnded - start) / 1e9
        if let rate {
            let achieved = Double(sent) / min(elapsed, settings.seconds)
            if achieved < rate * 0.97 && total == nil {
                notes.append(String(format: "the generator achieved %.0f msgs/s of the %.0f asked: latencies include its lag", achieved, rate))
            }
        }
        if recorder.total(.errors) > 0 { notes.append("\(recorder.total(.errors)) messages failed") }
        return Outcome(seconds: elapsed, notes: notes, sent: sent)
    }

    /// e2e and chat: a subscriber at the tail, publishers at the rate; latency
    /// from intended send to receipt (chat: weighted by online members).
    func produceAndConsume(stream: String, recorder: Recorder) async throws -> Outcome {
        let rooms = self.rooms
        let subscriber = try await target.makeSubscriber(stream: stream, fromStart: false)
        let book = ReceiptBook()
        let expected = SharedCount(-1)
        let publishRecorder = Recorder(start: recorder.start)
        let consumer = Task {
            try await subscriber.run(pollMilliseconds: 100, shouldStop: {
                let target = expected.value
                return target >= 0 && book.unique >= target
            }) { messages in
                let now = monotonicNanoseconds()
                var intended: [UInt64] = []
                var ids: [UInt64] = []
                var deliveries = 0
                for message in messages {
                    guard let value = message.value, let header = Payload.read(value) else { continue }
                    ids.append(header.id)
                    intended.append(header.intended)
                }
                let new = book.mark(ids)
                recorder.count(.received, new, at: now)
                if let rooms {
                    // Latency per delivered copy: each online member of the room.
                    for (index, message) in messages.enumerated() where index < intended.count {
                        guard let room = message.key.flatMap(ChatRooms.room(fromKey:)), room < rooms.online.count else { continue }
                        let copies = rooms.online[room]
                        deliveries += copies
                        recorder.recordLatencies(from: [intended[index]], to: now, weight: UInt64(copies))
                    }
                    recorder.count(.deliveries, deliveries, at: now)
                } else {
                    recorder.recordLatencies(from: intended, to: now)
                }
            }
        }
        let outcome: Outcome
        do {
            outcome = try await produce(stream: stream, recorder: publishRecorder, rooms: rooms, progressRecorder: recorder)
        } catch {
            consumer.cancel()
            throw error
        }
        let acknowledged = publishRecorder.total(.acknowledged)
        expected.set(acknowledged)
        // Wait for the stragglers, bounded.
        let drainDeadline = monotonicNanoseconds() + UInt64(settings.drainSeconds * 1e9)
        while book.unique < acknowledged && monotonicNanoseconds() < drainDeadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        consumer.cancel()
        _ = await consumer.result
        await subscriber.close()
        // The send side's counters join the receive side's in one result
        // (its acknowledgement latencies do not: this run measures receipt).
        recorder.mergeCounters(from: publishRecorder, [.sent, .acknowledged, .errors])
        var notes = outcome.notes
        if book.unique < acknowledged {
            notes.append("\(acknowledged - book.unique) acknowledged messages were not received within \(settings.drainSeconds) s")
        }
        if book.duplicates > 0 { notes.append("\(book.duplicates) duplicate receipts (dropped by message number)") }
        return Outcome(seconds: outcome.seconds, notes: notes, sent: outcome.sent)
    }

    /// consume: from the start of a topic filled with `count` messages first
    /// (the fill is not measured), or from the tail while a closed-loop
    /// producer writes.
    func consume(stream: String) async throws -> (Recorder, Double, [String]) {
        let recorder = Recorder()
        var notes: [String] = []
        if settings.fromStart {
            let fill = settings.count ?? 1_000_000
            let fillRecorder = Recorder()
            progress("filling \(stream) with \(fill) messages")
            _ = try await produce(stream: stream, recorder: fillRecorder, rate: nil, count: fill, quiet: true)
            let expected = fillRecorder.total(.acknowledged)
            let subscriber = try await target.makeSubscriber(stream: stream, fromStart: true)
            let start = monotonicNanoseconds()
            let measuring = Recorder(start: start)
            let received = SharedCount()
            let progressTask = Task { await reportProgress(recorder: measuring, start: start, deadline: start + UInt64(settings.seconds * 1e9), total: expected, counter: .received) }
            try await subscriber.run(pollMilliseconds: 100, shouldStop: { received.value >= expected || monotonicNanoseconds() > start + UInt64(settings.seconds * 1e9) }) { messages in
                received.add(messages.count)
                measuring.count(.received, messages.count, bytes: messages.reduce(0) { $0 + ($1.value?.count ?? 0) })
            }
            progressTask.cancel()
            let elapsed = Double(monotonicNanoseconds() - start) / 1e9
            await subscriber.close()
            if received.value < expected {
                notes.append("read \(received.value) of \(expected) messages within \(settings.seconds) s")
            }
            return (measuring, elapsed, notes)
        } else {
            let outcome = try await produceAndConsume(stream: stream, recorder: recorder)
            return (recorder, outcome.seconds, outcome.notes)
        }
    }

    func reportProgress(recorder: Recorder, start: UInt64, deadline: UInt64, total: Int?, counter: Counter = .acknowledged) async {
        var last = 0
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let now = monotonicNanoseconds()
            let done = recorder.total(counter)
            let p99 = recorder.latencyMilliseconds(atPercentile: 99).map { String(format: "%.2f ms", $0) } ?? "–"
            let left = max(0, Double(Int64(deadline) - Int64(now)) / 1e9)
            progress(String(format: "%@ %.0fs: %d msgs/s, %d %@ in all, p99 so far %@, %.0fs left%@",
                            settings.kind.rawValue, Double(now - start) / 1e9, done - last, done, counter.rawValue, p99, left,
                            total.map { " (of \($0))" } ?? ""))
            last = done
        }
    }
}

/// An integer shared between tasks (Atomic itself cannot be captured by an escaping closure).
final class SharedCount: Sendable {
    private let storage: Atomic<Int>
    init(_ value: Int = 0) { storage = Atomic(value) }
    var value: Int { storage.load(ordering: .relaxed) }
    func set(_ value: Int) { storage.store(value, ordering: .relaxed) }
    @discardableResult func add(_ amount: Int) -> Int { storage.add(amount, ordering: .relaxed).newValue }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
