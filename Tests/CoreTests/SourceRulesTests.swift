import Foundation
import Testing

/// STYLE.md rules 2, 8 and 13, enforced: time, unstructured tasks and
/// sleeps belong to shells. A state machine takes `now` as an input; a
/// shell reads the clock, starts tasks and waits. This test fails when one
/// of them appears in a file not named below, so a new one is a decision
/// someone writes down here, with the reason, rather than a habit.
@Suite("Source rules")
struct SourceRulesTests {
    /// Files allowed to read the clock, start an unstructured task or sleep,
    /// and why. Docs/architecture.md ("Who owns what") names the same shells.
    static let shells: [String: String] = [
        // Load tool: measuring time is its job.
        "Sources/BenchCore/": "the load tool times and paces what it sends",
        // Broker
        "Sources/Broker/ClusterNode.swift": "the cluster shell: lease renewal, watch loops, the ISR proposal timer",
        "Sources/Broker/ExtensionAPIs.swift": "request duration metrics",
        "Sources/Broker/RequestRouter.swift": "request duration metrics",
        "Sources/Broker/SaslHandler.swift": "the pause before a failed authentication's answer",
        "Sources/Broker/FetchHandler.swift": "a fetch's own long-poll deadline",
        "Sources/Broker/GroupOffsetsHandler.swift": "the commit timestamp written with group offsets",
        "Sources/Broker/MetadataHandler.swift": "waits briefly for a controller right after start",
        "Sources/Broker/GroupCoordinator.swift": "the group machine's shell: hops from its timer into the actor",
        "Sources/Broker/KafkaConnection.swift": "a connection: the tasks that stage its requests other than a single node's Produce",
        // Cluster
        "Sources/Cluster/Membership.swift": "lease keep-alive loop",
        "Sources/Cluster/ReplicaFetcher.swift": "the follower's fetch loop: reconnect backoff and resting partitions",
        // Coordination
        "Sources/Coordination/EtcdClient.swift": "the etcd watch stream's task",
        // Core: the one real clock.
        "Sources/Core/Clock.swift": "SystemClock",
        // Fanout
        "Sources/Fanout/FanOut.swift": "the workers' tasks and their rest after a failed read",
        // Gateway
        "Sources/Gateway/BrokerLink.swift": "connections to brokers: retries while leaders are elected",
        "Sources/Gateway/ChatAccounts.swift": "closing a connection from a defer",
        "Sources/Gateway/Gateway.swift": "the gateway's tails and poll loops",
        "Sources/Gateway/MatrixAPI+Accounts.swift": "event timestamps (wall clock, as Matrix wants)",
        // KafkaNIO
        "Sources/KafkaNIO/KafkaClientConnection.swift": "a client request's timeout",
        "Sources/KafkaNIO/ParkedTimeouts.swift": "the event-loop timer of every parked deadline",
        // HTTPProxy
        "Sources/HTTPProxy/HTTPProxy.swift": "consumer instances' heartbeats and idle expiry",
        "Sources/HTTPProxy/SharedBatches.swift": "writing a batch that waited behind one just answered, for the requests awaiting it (ADR 0033)",
        // PostduifClient
        "Sources/PostduifClient/": "a client library: retries with backoff, heartbeats, a poll's rest while nothing is assigned",
        // LogStore
        "Sources/LogStore/GroupCommit.swift": "the group-commit thread's batching window",
        // The composition root.
        "Sources/postduif/": "the executable: services, signals, restarts",
    ]

    /// What counts: a clock read, an unstructured or detached task, a sleep.
    static let patterns = [
        #"(?<![A-Za-z])Task \{"#, #"Task\.detached"#, #"ContinuousClock\.now"#, #"ContinuousClock\(\)"#,
        #"NIODeadline\.now\(\)"#, #"Task\.sleep"#, #"(?<![A-Za-z])Date\(\)"#, #"DispatchTime\.now"#,
    ]

    static var root: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    @Test func clockReadsTasksAndSleepsStayInTheNamedShells() throws {
        let sources = Self.root.appendingPathComponent("Sources")
        let files = try #require(FileManager.default.enumerator(atPath: sources.path)).compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") }
        #expect(files.count > 50, "the sources were not found from \(sources.path)")
        let expressions = try Self.patterns.map { try NSRegularExpression(pattern: $0) }
        var offenders: [String] = []
        for file in files {
            let path = "Sources/" + file
            if Self.shells.keys.contains(where: { $0.hasSuffix("/") ? path.hasPrefix($0) : path == $0 }) { continue }
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = String(line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
                let range = NSRange(code.startIndex..., in: code)
                if expressions.contains(where: { $0.firstMatch(in: code, range: range) != nil }) {
                    offenders.append("\(path):\(number + 1): \(line.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
        #expect(offenders.isEmpty, "a clock read, unstructured task or sleep outside the named shells:\n\(offenders.joined(separator: "\n"))")
    }

    /// The named shells exist: a renamed file must not leave a stale permission behind.
    @Test func everyNamedShellExists() {
        for path in Self.shells.keys {
            #expect(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(path).path), "\(path) is named as a shell but does not exist")
        }
    }

    /// A file named as a shell still needs to be one: the list stays the
    /// shortest that is true.
    @Test func everyNamedShellFileStillNeedsIt() throws {
        let expressions = try Self.patterns.map { try NSRegularExpression(pattern: $0) }
        for path in Self.shells.keys where !path.hasSuffix("/") {
            let text = try String(contentsOf: Self.root.appendingPathComponent(path), encoding: .utf8)
            let range = NSRange(text.startIndex..., in: text)
            #expect(expressions.contains { $0.firstMatch(in: text, range: range) != nil }, "\(path) is named as a shell but reads no clock, starts no task and sleeps nowhere")
        }
    }

    /// The high watermark has one owner: only `HighWatermarks` moves it.
    @Test func onlyTheOwnerMovesTheHighWatermark() throws {
        let sources = Self.root.appendingPathComponent("Sources")
        let files = try #require(FileManager.default.enumerator(atPath: sources.path)).compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") }
        // A call on a log (`log.advanceHighWatermark(to:`), not the action's name.
        let call = try NSRegularExpression(pattern: #"\w\.advanceHighWatermark\(to:"#)
        var writers: [String] = []
        for file in files where !file.hasPrefix("LogStore/") {
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            if call.firstMatch(in: text, range: NSRange(text.startIndex..., in: text)) != nil { writers.append(file) }
        }
        #expect(writers == ["Cluster/HighWatermarks.swift"])
    }
}
