import Foundation
import HTTPTypes
import Hummingbird
import KafkaWire
import NIOCore
import PostduifClient

extension HTTPProxy {
    func consumerRoutes(_ router: Router<ProxyRequestContext>) {
        router.post("/consumers/:group") { request, context in
            await self.answer(request, context) { caller in try await self.createInstance(request, context, group: try context.parameters.require("group"), caller) }
        }
        let instancePath = "/consumers/:group/instances/:name"
        router.delete(RouterPath(instancePath)) { request, context in
            await self.withInstance(request, context) { instance, _ in
                _ = self.instances.remove(instance.group, instance.name)
                await instance.consumer.close(commit: instance.autoCommit)
                return Self.noContent
            }
        }
        router.post(RouterPath(instancePath + "/subscription")) { request, context in
            await self.withInstance(request, context) { instance, _ in
                let body = try await Self.body(request)
                if let source = body["topic_pattern"] {
                    guard body["topics"] == nil else { throw ProxyError.unprocessable("give \"topics\" or \"topic_pattern\", not both") }
                    guard let source = source as? String, !source.isEmpty else { throw ProxyError.unprocessable("\"topic_pattern\" must be a regular expression") }
                    do {
                        try await instance.consumer.subscribe(pattern: source)
                    } catch {
                        throw ProxyError.unprocessable("\"topic_pattern\" is not a regular expression: \(error)")
                    }
                    return Self.noContent
                }
                guard let topics = body["topics"] as? [String], !topics.isEmpty else { throw ProxyError.unprocessable("the body needs a non-empty \"topics\" list") }
                await instance.consumer.subscribe(topics)
                return Self.noContent
            }
        }
        router.get(RouterPath(instancePath + "/subscription")) { request, context in
            await self.withInstance(request, context) { instance, _ in Self.json(["topics": await instance.consumer.subscription]) }
        }
        router.delete(RouterPath(instancePath + "/subscription")) { request, context in
            await self.withInstance(request, context) { instance, _ in
                await instance.consumer.unsubscribe()
                return Self.noContent
            }
        }
        router.post(RouterPath(instancePath + "/assignments")) { request, context in
            await self.withInstance(request, context) { instance, _ in
                let partitions = try Self.partitionList(try await Self.body(request)["partitions"])
                try await instance.consumer.assign(Dictionary(partitions.map { ($0, nil) }, uniquingKeysWith: { first, _ in first }))
                return Self.noContent
            }
        }
        router.get(RouterPath(instancePath + "/assignments")) { request, context in
            await self.withInstance(request, context) { instance, _ in
                Self.json(["partitions": await instance.consumer.assignment.map { ["topic": $0.topic, "partition": $0.partition] }])
            }
        }
        router.post(RouterPath(instancePath + "/positions")) { request, context in
            await self.withInstance(request, context) { instance, _ in
                for (partition, offset) in try Self.offsetList(try await Self.body(request)["offsets"]) { await instance.consumer.seek(partition, to: offset) }
                return Self.noContent
            }
        }
        for (end, path) in [(false, "/positions/beginning"), (true, "/positions/end")] {
            router.post(RouterPath(instancePath + path)) { request, context in
                await self.withInstance(request, context) { instance, _ in
                    try await instance.consumer.seek(try Self.partitionList(try await Self.body(request)["partitions"]), toEnd: end)
                    return Self.noContent
                }
            }
        }
        router.get(RouterPath(instancePath + "/records")) { request, context in
            await self.withInstance(request, context) { instance, _ in try await self.records(request, instance) }
        }
        router.post(RouterPath(instancePath + "/offsets")) { request, context in
            await self.withInstance(request, context) { instance, _ in
                let body = try await Self.body(request)
                if let entries = body["offsets"] {
                    // As the REST Proxy: the offset given is the last one
                    // processed, so the group resumes after it.
                    try await instance.consumer.commit(try Self.offsetList(entries).mapValues { $0 + 1 })
                } else {
                    try await instance.consumer.commit()
                }
                return Self.noContent
            }
        }
        router.get(RouterPath(instancePath + "/committed/offsets")) { request, context in
            await self.withInstance(request, context) { instance, _ in
                let body = try await Self.body(request)
                var partitions = body["partitions"] == nil ? [] : try Self.partitionList(body["partitions"])
                if partitions.isEmpty { partitions = await instance.consumer.assignment }
                let committed = try await instance.consumer.committedOffsets(partitions)
                return Self.json(["offsets": partitions.map { ["topic": $0.topic, "partition": $0.partition, "offset": committed[$0] ?? -1, "metadata": ""] as [String: Any] }])
            }
        }
        router.get(RouterPath(instancePath + "/events")) { request, context in
            await self.withInstance(request, context) { instance, _ in self.eventStream(instance.consumer, format: instance.format, autoCommit: instance.autoCommit, closeAfter: false) }
        }
    }

    func withInstance(_ request: Request, _ context: ProxyRequestContext, _ body: (ConsumerInstance, Caller) async throws -> Response) async -> Response {
        await answer(request, context) { caller in
            guard let instance = instances.find(try context.parameters.require("group"), try context.parameters.require("name"),
                                                principal: caller.principal, now: configuration.monotonicMilliseconds()) else {
                throw ProxyError.instanceNotFound
            }
            return try await body(instance, caller)
        }
    }

    func createInstance(_ request: Request, _ context: ProxyRequestContext, group: String, _ caller: Caller) async throws -> Response {
        let body = try await Self.body(request)
        let name = (body["name"] as? String) ?? (body["id"] as? String) ?? "rest-consumer-\(UInt64.random(in: 0...UInt64.max))"
        guard let format = EmbeddedFormat(rawValue: (body["format"] as? String) ?? "binary") else {
            throw ProxyError.unprocessable("format \(body["format"] ?? "") is not served: json or binary")
        }
        var configuration = GroupConsumer.Configuration(group: group)
        if let reset = body["auto.offset.reset"] as? String {
            guard let policy = OffsetReset(rawValue: reset) else { throw ProxyError.unprocessable("auto.offset.reset is earliest or latest") }
            configuration.offsetReset = policy
        }
        let autoCommit = ((body["auto.commit.enable"] as? String) ?? (body["auto.commit.enable"] as? Bool).map { $0 ? "true" : "false" } ?? "true") == "true"
        let timeout = Int32((body["consumer.request.timeout.ms"] as? String).flatMap(Int.init) ?? (body["consumer.request.timeout.ms"] as? Int) ?? 1_000)
        let clock = self.configuration.monotonicMilliseconds
        let consumer = GroupConsumer(client: caller.client, configuration: configuration, clock: clock)
        let instance = ConsumerInstance(group: group, name: name, owner: caller.principal, format: format, autoCommit: autoCommit,
                                        requestTimeoutMilliseconds: min(max(timeout, 0), 30_000), consumer: consumer, now: clock())
        guard instances.add(instance) else { throw ProxyError(code: 40902, message: "Consumer instance with the specified name already exists.") }
        let host = request.head.authority ?? "\(self.configuration.host):\(self.configuration.port)"
        let scheme = self.configuration.tls == nil ? "http" : "https"
        return Self.json(["instance_id": name, "base_uri": "\(scheme)://\(host)/consumers/\(group)/instances/\(name)"])
    }

    /// Records since the last call: long-polls up to the timeout for some.
    func records(_ request: Request, _ instance: ConsumerInstance) async throws -> Response {
        if let accept = request.headers[.accept], let asked = ProxyMedia.format(accept), asked != instance.format {
            throw ProxyError(code: 40601, message: "The consumer's format is \(instance.format.rawValue); ask with Accept: \(instance.format.mediaType)")
        }
        let timeout = request.uri.queryParameters.get("timeout", as: Int32.self) ?? instance.requestTimeoutMilliseconds
        let bytesMax = request.uri.queryParameters.get("max_bytes", as: Int32.self)
        // What the last call returned counts as consumed.
        if instance.autoCommit { try? await instance.consumer.commit() }
        let deadline = configuration.monotonicMilliseconds() + Int64(max(timeout, 0))
        var found: [ConsumedRecord] = []
        repeat {
            let left = max(deadline - configuration.monotonicMilliseconds(), 0)
            found = try await instance.consumer.poll(maxWaitMilliseconds: Int32(min(left, 5_000)), bytesMax: bytesMax)
        } while found.isEmpty && configuration.monotonicMilliseconds() < deadline
        return Self.json(try found.map { try recordJSON($0, instance.format) }, contentType: instance.format.mediaType)
    }

    func recordJSON(_ record: ConsumedRecord, _ format: EmbeddedFormat) throws(ProxyError) -> [String: Any] {
        let place = "\(record.topic)/\(record.partition)@\(record.offset)"
        return ["topic": record.topic, "partition": record.partition, "offset": record.offset, "timestamp": record.timestamp,
                "key": try format.json(record.key, at: place), "value": try format.json(record.value, at: place)]
    }

    // MARK: Server-Sent Events

    /// `GET /topics/{topic}/events`: with `group`, as a member of that group
    /// (committing what was sent); otherwise every partition (or
    /// `partition`) from `from` (earliest, latest or an offset).
    func topicEvents(_ request: Request, topic: String, _ caller: Caller) async throws -> Response {
        var query: [String: String] = [:]
        for (name, value) in request.uri.queryParameters { query[String(name)] = String(value) }
        guard let format = EmbeddedFormat(rawValue: query["format"] ?? "binary") else { throw ProxyError.unprocessable("format is json or binary") }
        let (consumer, autoCommit) = try await subscription(topic: topic, query: query, caller)
        return eventStream(consumer, format: format, autoCommit: autoCommit, closeAfter: true)
    }

    /// The reader of a live subscription (Server-Sent Events, WebSocket):
    /// with `group`, a member of that group committing what was sent;
    /// otherwise every partition (or `partition`) from `from` (earliest,
    /// latest or an offset), without a group.
    func subscription(topic: String, query: [String: String], _ caller: Caller) async throws -> (GroupConsumer, autoCommit: Bool) {
        let from = query["from"] ?? "latest"
        var settings = GroupConsumer.Configuration(group: query["group"] ?? "postduif-stream-\(UInt64.random(in: 0...UInt64.max))")
        settings.offsetReset = from == "earliest" ? .earliest : .latest
        let consumer = GroupConsumer(client: caller.client, configuration: settings, clock: configuration.monotonicMilliseconds)
        let count: Int32
        do {
            count = try await caller.client.partitionCount(topic)
        } catch let error as ClientError where error.errorCode == .unknownTopicOrPartition {
            throw ProxyError.topicNotFound(topic)
        }
        if query["group"] != nil {
            await consumer.subscribe([topic])
            return (consumer, true)
        }
        let partitions = query["partition"].flatMap { Int32($0) }.map { [$0] } ?? Array(0..<count)
        if let bad = partitions.first(where: { $0 < 0 || $0 >= count }) { throw ProxyError.partitionNotFound(bad) }
        let offset: Int64? = Int64(from)
        try await consumer.assign(Dictionary(uniqueKeysWithValues: partitions.map { (TopicPartition(topic, $0), offset) }))
        return (consumer, false)
    }

    /// Records as `text/event-stream`: an event per record (its id is
    /// partition:offset), a comment every 15 s of quiet. Each batch is
    /// written before the next is fetched, so a slow reader slows the
    /// reading rather than filling memory.
    func eventStream(_ consumer: GroupConsumer, format: EmbeddedFormat, autoCommit: Bool, closeAfter: Bool) -> Response {
        let clock = configuration.monotonicMilliseconds
        let logger = self.logger
        let body = ResponseBody { writer in
            var quietSince = clock()
            try await writer.write(ByteBuffer(string: ": postduif\n\n"))
            do {
                while !Task.isCancelled {
                    let records = try await consumer.poll(maxWaitMilliseconds: 5_000)
                    if records.isEmpty {
                        if clock() - quietSince >= 15_000 {
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                            quietSince = clock()
                        }
                        continue
                    }
                    var text = ""
                    for record in records {
                        let object = try self.recordJSON(record, format)
                        let data = try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])
                        text += "id: \(record.partition):\(record.offset)\nevent: record\ndata: \(String(decoding: data, as: UTF8.self))\n\n"
                    }
                    try await writer.write(ByteBuffer(string: text))
                    quietSince = clock()
                    if autoCommit { try? await consumer.commit() }
                }
            } catch {
                logger.debug("an event stream ended", metadata: ["error": "\(error)"])
            }
            if closeAfter { await consumer.close(commit: autoCommit) }
            try? await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}
