import ArgumentParser
import BenchCore
import Foundation

/// Flags shared by `run` and `compare`; defaults are WorkloadSettings'.
struct WorkloadOptions: ParsableArguments {
    @Argument(help: "produce, consume, e2e or chat")
    var workload: String

    @Option(help: "Topic or stream name (chat defaults to conversations).")
    var stream = "bench"
    @Option(help: "Partitions of the topic the run creates.")
    var partitions = 8
    @Option(help: "Publishers, each on its own connection.")
    var producers = 1
    @Option(name: .customLong("message-bytes"), help: "Message size in bytes.")
    var messageBytes = 1024
    @Option(help: "Conversations (keys); chat: rooms.")
    var conversations = 10_000
    @Option(help: "Zipf exponent of the key choice (0 is uniform).")
    var zipf = 1.0
    @Option(help: "Messages per second (open loop, latency from the intended send time); omit for a closed loop at full speed.")
    var rate: Double?
    @Option(help: "Seconds to send for.")
    var seconds = 10.0
    @Option(help: "Messages to send instead (consume: messages to fill the topic with first).")
    var count: Int?
    @Option(help: "consume: start or tail.")
    var from = "start"
    @Option(help: "Kafka acks: 0, 1 or -1 (all). NATS: 0 publishes without waiting for JetStream's acknowledgement.")
    var acks: Int16 = -1
    @Option(name: .customLong("batch-bytes"), help: "A batch leaves once it holds this many bytes.")
    var batchBytes = 256 << 10
    @Option(name: .customLong("linger-ms"), help: "Or once its oldest message waited this long.")
    var lingerMilliseconds = 1
    @Option(name: .customLong("in-flight"), help: "Produce requests in flight per publisher (Kafka).")
    var inFlight = 8
    @Option(name: .customLong("members-max"), help: "chat: the largest room.")
    var membersMax = 500
    @Option(name: .customLong("members-zipf"), help: "chat: Zipf exponent of room sizes.")
    var membersZipf = 1.2
    @Option(name: .customLong("online"), help: "chat: share of members online.")
    var online = 0.2
    @Option(help: "Replication factor of the topic or stream the run creates.")
    var replicas = 1
    @Option(help: "Seed of every random choice: the same seed makes the same workload.")
    var seed: UInt64 = 1

    func settings() throws -> WorkloadSettings {
        guard let kind = WorkloadSettings.Kind(rawValue: workload) else {
            throw ValidationError("unknown workload \(workload): produce, consume, e2e or chat")
        }
        guard ["start", "tail"].contains(from) else { throw ValidationError("--from is start or tail") }
        var settings = WorkloadSettings()
        settings.kind = kind
        settings.stream = stream
        settings.partitions = partitions
        settings.producers = max(producers, 1)
        settings.messageBytes = messageBytes
        settings.conversations = conversations
        settings.zipfExponent = zipf
        settings.rate = rate
        settings.seconds = seconds
        settings.count = count
        settings.fromStart = from == "start"
        settings.membersMax = membersMax
        settings.membersZipfExponent = membersZipf
        settings.onlineFraction = online
        settings.seed = seed
        settings.publish.acks = acks
        settings.publish.batchBytes = batchBytes
        settings.publish.lingerMilliseconds = lingerMilliseconds
        settings.publish.inFlightMax = inFlight
        return settings
    }
}

func printProgress(_ line: String) {
    FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
}

func write(_ report: BenchReport, json: String?, html: String?) throws {
    if let json { try report.json().write(to: URL(fileURLWithPath: json)) }
    if let html { try Data(report.html().utf8).write(to: URL(fileURLWithPath: html)) }
}

func summary(_ result: BenchResult) -> String {
    let figures = result.figures
    var line = String(format: "%@ %@ against %@: %.1f s, sent %d, acknowledged %d",
                      result.label, result.workload, result.target, figures.seconds,
                      figures.totals["sent"] ?? 0, figures.totals["acknowledged"] ?? 0)
    if let received = figures.totals["received"], received > 0 { line += ", received \(received)" }
    if let deliveries = figures.totals["deliveries"], deliveries > 0 { line += ", deliveries \(deliveries)" }
    line += String(format: "; %.0f msgs/s", figures.rate(result.headlineCounter))
    if let bytes = figures.bytes[result.headlineCounter == .received ? "received" : "sent"] {
        line += String(format: " (%.1f MB/s)", Double(bytes) / figures.seconds / 1e6)
    }
    if let latency = figures.latency {
        line += String(format: "; latency ms p50 %.2f p90 %.2f p99 %.2f p99.9 %.2f max %.2f", latency.p50, latency.p90, latency.p99, latency.p999, latency.max)
    }
    for note in result.notes { line += "\n  note: \(note)" }
    return line
}

@main
struct PostduifBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postduif-bench",
        abstract: "Chat-shaped load against Postduif (Kafka protocol), NATS JetStream or a discard target; or over the Matrix API (matrix).",
        subcommands: [Run.self, Compare.self, Report.self, Matrix.self])
}

/// `postduif-bench matrix`: the chat workload over the Matrix client-server
/// API, against Postduif's gateway or any Matrix homeserver.
struct Matrix: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Chat over the Matrix client-server API: every member long-polls /sync, one sender per room.")

    @Option(help: "The homeserver's base URL.") var url = "http://127.0.0.1:8008"
    @Option(help: "The server name in user ids.") var serverName = "localhost"
    @Option(help: "Rooms.") var rooms = 1
    @Option(help: "Members per room, every one syncing.") var members = 10
    @Option(help: "Messages per second over all rooms (open loop); omit for a closed loop (each sender waits for its acknowledgement).") var rate: Double?
    @Option(help: "Seconds to measure.") var seconds = 10.0
    @Option(name: .customLong("server-pid"), help: "A server process whose CPU and memory are measured (repeat for several).") var serverPIDs: [Int32] = []
    @Option(help: "Concurrent requests while registering, inviting and joining.") var setupConcurrency = 16
    @Option(name: .customLong("sync-timeout-ms"), help: "Each long poll's timeout, as clients send it.") var syncTimeoutMilliseconds = 30_000
    @Option(help: "Write the result as JSON here.") var json: String?
    @Option(help: "A label for the summary line.") var label = "matrix"
    @Flag(help: "Encrypted rooms: device and one-time keys uploaded, megolm room events, each sender's session shared with every member's device by olm to-device messages, and again every --rotation-messages.")
    var encrypted = false
    @Option(help: "Messages per megolm session in encrypted rooms.") var rotationMessages = 100

    func run() async throws {
        var settings = MatrixChatSettings()
        settings.baseURL = url
        settings.serverName = serverName
        settings.rooms = rooms
        settings.members = members
        settings.rate = rate
        settings.seconds = seconds
        settings.serverPIDs = serverPIDs
        settings.setupConcurrency = setupConcurrency
        settings.syncTimeoutMilliseconds = syncTimeoutMilliseconds
        settings.encrypted = encrypted
        settings.rotationMessages = rotationMessages
        let result = try await MatrixChatBench(settings: settings).run { FileHandle.standardError.write(Data(("  " + $0 + "\n").utf8)) }
        func ms(_ values: [String: Double], _ key: String) -> String { String(format: "%.1f", values[key] ?? 0) }
        var line = "\(label): \(rooms)x\(members) members\(encrypted ? " (encrypted)" : ""), \(String(format: "%.1f", result.sendsPerSecond)) msgs/s (\(result.sendErrors) errors), "
        line += "\(String(format: "%.0f", result.deliveriesPerSecond)) deliveries/s (\(result.deliveries) of \(result.expectedDeliveries)), "
        line += "send p50 \(ms(result.sendLatencyMilliseconds, "p50")) p99 \(ms(result.sendLatencyMilliseconds, "p99")) ms, "
        line += "delivery p50 \(ms(result.deliveryLatencyMilliseconds, "p50")) p99 \(ms(result.deliveryLatencyMilliseconds, "p99")) ms"
        if let perDelivery = result.cpuMicrosecondsPerDelivery {
            line += ", server CPU \(String(format: "%.2f", result.serverCPUSeconds)) s = \(String(format: "%.1f", perDelivery)) µs per delivery, \(String(format: "%.0f", result.deliveriesPerCPUSecond ?? 0)) deliveries per CPU-second, RSS max \(String(format: "%.0f", result.serverMemoryMaxMB)) MB"
        }
        if let shares = result.keyShares, let messages = result.toDeviceMessages {
            line += ", \(shares) key shares in \(messages) to-device messages (\(result.toDeviceDelivered ?? 0) received)"
        }
        print(line)
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(result).write(to: URL(fileURLWithPath: json))
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Runs one workload against one target.")

    @OptionGroup var options: WorkloadOptions
    @Option(help: "kafka://HOST:PORT, nats://HOST:PORT or discard://")
    var target = "kafka://127.0.0.1:9092"
    @Option(help: "Name of the run in reports (default: the target's kind).")
    var label: String?
    @Option(help: "Write the result as JSON here.")
    var json: String?
    @Option(help: "Write an HTML report here.")
    var html: String?

    func run() async throws {
        let target = try makeTarget(self.target, replicas: options.replicas)
        var result = try await WorkloadRunner(target: target, settings: try options.settings(), progress: printProgress).run()
        if let label { result.label = label }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        print(summary(result))
        try write(BenchReport(results: [result]), json: json, html: html)
    }
}

struct Compare: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Runs the same workload against two targets in turns (A B A B ...) and prints the ratio per pair and the median.")

    @OptionGroup var options: WorkloadOptions
    @Option(help: "Target A (the one measured against B).")
    var a: String
    @Option(help: "Target B.")
    var b: String
    @Option(name: .customLong("a-label")) var aLabel = "postduif"
    @Option(name: .customLong("b-label")) var bLabel = "nats"
    @Option(help: "A/B pairs to run.")
    var pairs = 3
    @Option var json: String?
    @Option var html: String?

    func run() async throws {
        var results: [BenchResult] = []
        var throughputRatios: [Double] = []
        var p99Ratios: [Double] = []
        for pair in 1...max(pairs, 1) {
            var pairResults: [BenchResult] = []
            for (url, label) in [(a, aLabel), (b, bLabel)] {
                let target = try makeTarget(url, replicas: options.replicas)
                var settings = try options.settings()
                settings.seed &+= UInt64(pair)
                var result = try await WorkloadRunner(target: target, settings: settings, progress: printProgress).run()
                result.label = "\(label) #\(pair)"
                FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
                print(summary(result))
                pairResults.append(result)
            }
            let (first, second) = (pairResults[0], pairResults[1])
            let throughput = first.figures.rate(first.headlineCounter) / max(second.figures.rate(second.headlineCounter), 1e-9)
            throughputRatios.append(throughput)
            var line = String(format: "pair %d: throughput %@/%@ = %.2f", pair, aLabel, bLabel, throughput)
            if let p99a = first.figures.latency?.p99, let p99b = second.figures.latency?.p99 {
                p99Ratios.append(p99a / max(p99b, 1e-9))
                line += String(format: ", p99 %@/%@ = %.2f", aLabel, bLabel, p99a / max(p99b, 1e-9))
            }
            print(line)
            results += pairResults
        }
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        var line = String(format: "median throughput ratio %@/%@ = %.2f", aLabel, bLabel, median(throughputRatios))
        if !p99Ratios.isEmpty { line += String(format: ", median p99 ratio %@/%@ = %.2f", aLabel, bLabel, median(p99Ratios)) }
        print(line)
        try write(BenchReport(results: results), json: json, html: html)
    }
}

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Combines JSON result files into one report.")

    @Argument(help: "JSON result files of earlier runs.")
    var inputs: [String]
    @Option var html: String?
    @Option var json: String?

    func run() throws {
        var results: [BenchResult] = []
        for input in inputs {
            let report = try JSONDecoder().decode(BenchReport.self, from: Data(contentsOf: URL(fileURLWithPath: input)))
            results += report.results
        }
        try write(BenchReport(results: results), json: json, html: html)
        for result in results { print(summary(result)) }
    }
}
