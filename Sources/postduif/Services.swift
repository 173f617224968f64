import ArgumentParser
import Broker
import ChatWire
import Cluster
import Coordination
import Core
import Fanout
import Foundation
import Gateway
import HTTPProxy
import KafkaWire
import LogStore
import Logging
import Metrics
import Operations
import Prometheus
import ServiceLifecycle
import Synchronization

/// The chat fan-out workers as a service of the node's ServiceGroup.
struct FanOutService: Service {
    let fanOut: FanOut

    func run() async throws {
        // The workers hold nothing that needs finishing: gateways resync
        // whatever a stopped worker had not delivered.
        await cancelWhenGracefulShutdown {
            await fanOut.run()
        }
    }
}

/// The chat gateway inside the broker's process (`--with-gateway`). A
/// gateway that fails (a cluster still electing leaders for its topics, say)
/// starts again after a pause instead of stopping the broker with it.
struct EmbeddedGatewayService: Service {
    let gateway: ChatGateway
    let logger: Logger
    /// The line printed once listening; `%d` becomes the bound port.
    let announce: String

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await gateway.run(stopsOnSignals: false) { port in
                        FileHandle.standardOutput.write(Data((announce.replacingOccurrences(of: "%d", with: String(port)) + "\n").utf8))
                    }
                    return
                } catch {
                    guard !Task.isCancelled else { return }
                    logger.error("the chat gateway stopped; starting it again in a second", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }
}

/// The Kafka listener as a service of the node's ServiceGroup.
struct KafkaService: Service {
    let server: KafkaServer
    /// The line printed once listening; `%d` becomes the bound port.
    let announce: String

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await server.run { port in
                    FileHandle.standardOutput.write(Data((announce.replacingOccurrences(of: "%d", with: String(port)) + "\n").utf8))
                }
            }
        } catch where Task.isShuttingDownGracefully || Task.isCancelled {
            // The listener ends by cancellation when the node shuts down: a normal end.
        }
    }
}

/// The node's cluster side (registration, controller, roles) as a service:
/// when its lease is lost it ends with an error, and the node stops, since
/// other brokers may have taken over its partitions.
struct ClusterService: Service {
    let node: ClusterNode
    /// How long a controlled shutdown waits for its leaderships to move.
    let shutdownTimeout: Duration

    func run() async throws {
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await node.run() }
                // On SIGTERM, the leaderships move before the node stops
                // (the Kafka listener, stopped after this service, still
                // serves meanwhile); then the node's tasks end.
                group.addTask {
                    do { try await gracefulShutdown() } catch { return }
                    await node.controlledShutdown(timeout: shutdownTimeout)
                }
                try await group.next()
                group.cancelAll()
            }
        } catch where Task.isShuttingDownGracefully || Task.isCancelled {
            // Shutting down: the lease was revoked, or ends with the process.
        }
    }
}

/// The operations HTTP port as a service of the node's ServiceGroup.
struct OperationsService: Service {
    let server: OperationsServer

    func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await server.run { port in
                    FileHandle.standardOutput.write(Data("postduif operations endpoints on http://\(server.host):\(port)/metrics, /health, /ready\n".utf8))
                }
            }
        } catch where Task.isShuttingDownGracefully || Task.isCancelled {
            // Ends by cancellation when the node shuts down: a normal end.
        }
    }
}

/// The gateway's `DirectAppendPort` on this process's broker: the composition
/// root joins the two, so neither knows the other's insides.
struct BrokerDirectAppends: DirectAppendPort {
    let broker: Broker

    var appendsDirectly: Bool { broker.appendsOneDirectly }

    func appendDirect(topic: String, partition: Int32, key: [UInt8], value: [UInt8]?, headers: [RecordHeader], timestamp: Int64,
                      done: @escaping @Sendable (Result<Int64, DirectAppendRefusal>) -> Void) -> Bool {
        broker.appendOne(topic: topic, partition: partition, key: key, value: value, headers: headers, timestamp: timestamp) { result in
            done(result.mapError { DirectAppendRefusal(errorCode: $0.errorCode, message: $0.message) })
        }
    }

    func appendDirect(topic: String, partition: Int32, key: [UInt8], valueCount: Int, timestamp: Int64, appendValue: (inout [UInt8]) -> Void,
                      done: @escaping @Sendable (Result<Int64, DirectAppendRefusal>) -> Void) -> Bool {
        broker.appendOne(topic: topic, partition: partition, key: key, valueCount: valueCount, timestamp: timestamp, appendValue: appendValue) { result in
            done(result.mapError { DirectAppendRefusal(errorCode: $0.errorCode, message: $0.message) })
        }
    }
}

/// The gateway's `LocalFanOutPort` on this process's fan-out (ADR 0037).
struct FanOutHandOvers: LocalFanOutPort {
    let fanOut: FanOut

    func handOver(to gatewayID: String, receive: @escaping @Sendable (FanOutHandOver) -> Void) {
        fanOut.handOver(to: gatewayID, receive: receive)
    }

    func stopHandingOver(to gatewayID: String) {
        fanOut.stopHandingOver(to: gatewayID)
    }
}

/// The gateway's `DirectReadPort` on this process's broker: committed
/// batches of the partitions it leads, read as a consumer's Fetch reads them.
struct BrokerDirectReads: DirectReadPort {
    let broker: Broker

    func readCommitted(topic: String, partition: Int32, from offset: Int64, bytesMax: Int) throws(DirectReadRefusal) -> [[UInt8]]? {
        guard broker.leads(topic: topic, index: partition), let log = broker.committedPartition(topic: topic, index: partition) else { return nil }
        do {
            return try log.read(from: offset, bytesMax: bytesMax, upTo: .max).batches
        } catch where error.code == .offsetOutOfRange {
            throw .offsetOutOfRange
        } catch {
            throw .store(error.description)
        }
    }
}

/// Retention and compaction on a timer: every interval, one pass of
/// `Broker.cleanLogs` at the wall clock's time (retention compares it with
/// record timestamps, which are wall-clock times). A graceful shutdown
/// ends a pass early, so the store closes without waiting for a long
/// compaction.
struct LogCleanerService: Service {
    let broker: Broker
    let interval: Duration

    func run() async throws {
        let stopping = StopFlag()
        await cancelWhenGracefulShutdown {
            await withTaskCancellationHandler {
                await loop(stopping)
            } onCancel: {
                stopping.stop()
            }
        }
    }

    /// Set once the node stops; the cleaner's thread reads it between steps.
    final class StopFlag: Sendable {
        private let flag = Mutex(false)
        var isSet: Bool { flag.withLock { $0 } }
        func stop() { flag.withLock { $0 = true } }
    }

    private func loop(_ stopping: StopFlag) async {
        while !Task.isCancelled && !stopping.isSet {
            let now = SystemWallClock().nowMilliseconds
            // A pass reads and writes the store: off the cooperative pool, on
            // its own thread. The service returns only once it is done.
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                Thread.detachNewThread {
                    Self.yieldToRequests()
                    let throttle = Self.throttle()
                    broker.cleanLogs(nowMilliseconds: now) { bytes, limit in
                        guard !stopping.isSet else { return false }
                        throttle(bytes, limit)
                        return true
                    }
                    done.resume()
                }
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// The cleaner's thread runs at the lowest CPU priority (niceness 19):
    /// on a busy node a compaction's reads and copies took the core a
    /// produce was waiting for (ack p99 at half the peak ×1.26 while
    /// cleaning at niceness 10, ×1.02 at 19: Docs/benchmarks.md).
    /// Background work that may run later; an idle core still runs it at
    /// full speed, and its I/O limit still holds. Linux sets niceness per
    /// thread.
    static func yieldToRequests() {
        #if os(Linux)
        // `who` 0 is the calling thread on Linux.
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
        #endif
    }

    /// A partition's compaction I/O held to the limit: it sleeps whenever
    /// its bytes so far are ahead of the time the limit allows them. (The
    /// count starts again at each partition: then the clock does too.)
    static func throttle() -> (Int64, Double) -> Void {
        let started = Mutex<(start: ContinuousClock.Instant, bytes: Int64)?>(nil)
        return { bytes, bytesPerSecond in
            let now = ContinuousClock.now
            let start = started.withLock { state in
                if state == nil || bytes < state!.bytes { state = (now, 0) }
                state!.bytes = bytes
                return state!.start
            }
            let due = start + .seconds(Double(bytes) / bytesPerSecond)
            if due > now { Thread.sleep(forTimeInterval: Double((due - now).milliseconds) / 1000) }
        }
    }
}

/// The HTTP proxy (REST Proxy v2 and Server-Sent Events) as a service.
struct HTTPProxyService: Service {
    let proxy: HTTPProxy
    /// The line printed once listening; `%d` becomes the bound port.
    let announce: String

    func run() async throws {
        // A graceful shutdown cancels the proxy; what it throws then is
        // the cancellation, not a failure of the node.
        try await cancelWhenGracefulShutdown {
            do {
                try await proxy.run { port in
                    FileHandle.standardOutput.write(Data((announce.replacingOccurrences(of: "%d", with: String(port)) + "\n").utf8))
                }
            } catch {
                guard !Task.isCancelled else { return }
                throw error
            }
        }
    }
}
