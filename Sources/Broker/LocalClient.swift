import KafkaNIO
import KafkaWire

/// This broker as a `KafkaLocalBroker`: the chat gateway run inside the
/// broker's process (`postduif serve --with-gateway`, ADR 0016) hands its
/// request frames straight to the request handlers a socket's connection
/// uses, so leader checks, errors and metrics are the same, without the
/// loopback socket, the event loops and the thread hand-offs on each side.
struct LocalClient: KafkaLocalBroker {
    let broker: Broker
    let name: String
    /// Who the requests act for, when not the broker itself: a user the
    /// HTTP proxy authenticated (nil there: anonymous), from `host`.
    var actingFor: (user: String?, host: String)? = nil

    func answer(_ frame: [UInt8]) async throws -> [UInt8]? {
        var session = ClientSession(client: name, host: actingFor?.host ?? name, listener: broker.configuration.effectiveInterBrokerListener)
        if let actingFor {
            // The HTTP proxy checked the user's password: its requests are
            // the user's, and the authorizer decides as on a Kafka port.
            session.authenticatedUser = actingFor.user
            let answer = try await broker.stage(frame: frame, session: &session)
            switch answer {
            case .ready(let response): return response
            case .pending(let finish): return await finish()
            }
        }
        // In the same process there is no one to authenticate: the session
        // counts as signed in, as the gateway's SASL user would be.
        session.authenticatedUser = "in-process:\(name)"
        session.inProcess = true
        switch try await broker.stage(frame: frame, session: &session) {
        case .ready(let response): return response
        case .pending(let finish): return await finish()
        }
    }

    func isSelf(_ address: String) -> Bool {
        // A single node is every address its clients were given; in a
        // cluster, only the one it advertises.
        let configuration = broker.configuration
        guard configuration.isClustered else { return true }
        return address == "\(configuration.effectiveAdvertisedHost):\(configuration.effectiveAdvertisedPort)"
    }
}

extension Broker {
    /// A client for code in this process (the embedded gateway).
    public func localClient(name: String) -> any KafkaLocalBroker {
        LocalClient(broker: self, name: name)
    }

    /// A client acting for `user` (nil: anonymous) connecting from `host`:
    /// the HTTP proxy's requests, under the same ACLs as a Kafka port's.
    /// An anonymous session on a listener that asks for SASL is refused.
    public func localClient(name: String, actingFor user: String?, host: String) -> any KafkaLocalBroker {
        LocalClient(broker: self, name: name, actingFor: (user, host))
    }

    /// Whether `appendOne` takes appends: not while partitions here have
    /// followers, whose commit waits for them.
    public var appendsOneDirectly: Bool { replication == nil }

    /// Appends one record for a caller in this process (the chat gateway's
    /// message sends, ADR 0017) without a Produce frame: the same checks and
    /// write as a Produce of one partition, then `done` from whichever
    /// thread makes the append durable (no task waits for it). False when
    /// partitions here have followers, whose commit waits for them: the
    /// caller sends a Produce instead.
    public func appendOne(topic: String, partition index: Int32, key: [UInt8], value: [UInt8]?, headers: [RecordHeader], timestamp: Int64,
                          done: @escaping @Sendable (Result<Int64, AppendRefusal>) -> Void) -> Bool {
        guard replication == nil else { return false }
        var builder = RecordBatchBuilder()
        builder.append(key: key, value: value, headers: headers, timestamp: timestamp)
        return appendBuilt(topic: topic, partition: index, builder.build(), done: done)
    }

    /// `appendOne` of a record whose `valueCount`-byte value `appendValue`
    /// appends to the batch itself (`RecordBatchBuilder`'s in-place
    /// append): an upload's chunk is copied once, from the buffers it
    /// arrived in.
    public func appendOne(topic: String, partition index: Int32, key: [UInt8], valueCount: Int, timestamp: Int64,
                          appendValue: (inout [UInt8]) -> Void, done: @escaping @Sendable (Result<Int64, AppendRefusal>) -> Void) -> Bool {
        guard replication == nil else { return false }
        var builder = RecordBatchBuilder(capacity: RecordBatchBuilder.encodedCount(keyCount: key.count, valueCount: valueCount))
        builder.appendInPlace(key: key, valueCount: valueCount, timestamp: timestamp, appendValue: appendValue)
        return appendBuilt(topic: topic, partition: index, builder.build(), done: done)
    }

    /// Writes a batch `appendOne` built and calls `done` once it is durable.
    private func appendBuilt(topic: String, partition index: Int32, _ batch: [UInt8], done: @escaping @Sendable (Result<Int64, AppendRefusal>) -> Void) -> Bool {
        let data = ProduceRequest.PartitionData(index: index, batch: batch)
        switch writeOne(topic: topic, data, version: SupportedAPIs.ranges[.produce]!.upperBound, acks: -1, built: true) {
        case .refused(let answer):
            done(.failure(AppendRefusal(answer)))
        case .written(let partition, let pending, let index, _):
            pending.whenDurable { [self] outcome in
                do {
                    let result = try outcome.get()
                    try commitAlone(topic: topic, partition, index: index, result)
                    done(.success(result.baseOffset))
                } catch {
                    done(.failure(AppendRefusal(appendFailure(topic: topic, index: index, error))))
                }
            }
        }
        return true
    }
}

/// Why `Broker.appendOne` refused a record: the Kafka error code and
/// message a Produce of it would have answered.
public struct AppendRefusal: Error, Sendable, CustomStringConvertible {
    public var errorCode: Int16
    public var message: String

    init(_ answer: ProduceResponse.PartitionResponse) {
        errorCode = answer.errorCode
        message = answer.errorMessage ?? ""
    }

    public var description: String { "Kafka error \(errorCode): \(message)" }
}
