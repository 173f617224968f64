import KafkaWire
import NIOCore
import Security

extension Broker {
    /// Envelope (Kafka's API key 58): another broker forwards a request for
    /// a principal it authenticated itself: the HTTP proxy's callers who
    /// showed a client certificate (ADR 0031). Only a principal with
    /// ClusterAction on the cluster (the brokers) may speak for others, as
    /// Kafka asks of Envelope; the embedded request is then answered as a
    /// connection of that principal from that host would be, under the same
    /// ACLs. Envelope is not advertised: only brokers send it.
    func stageEnvelope(header: RequestHeader, reader: inout ByteReader, session: ClientSession) async throws(CloseConnection) -> StagedAnswer {
        if !session.isAuthenticated {
            throw CloseConnection(reason: "Envelope before SASL authentication")
        }
        guard header.apiVersion == EnvelopeRequest.version else {
            throw CloseConnection(reason: "Envelope v\(header.apiVersion) is not supported (v0 only)")
        }
        let request: EnvelopeRequest
        do {
            try reader.skipTaggedFields()
            request = try EnvelopeRequest.decode(&reader)
        } catch {
            throw CloseConnection(reason: "malformed Envelope request: \(error)")
        }
        let correlationID = header.correlationID
        let answer = { @Sendable (embedded: [UInt8]?, code: ErrorCode) -> [UInt8] in
            var body = ByteWriter(capacity: (embedded?.count ?? 0) + 16)
            // The embedded answer without its size prefix: the envelope's bytes carry the size.
            EnvelopeResponse(responseData: embedded.map { Array($0.dropFirst(4)) }, errorCode: code.rawValue).encode(&body)
            return frameResponse(correlationID: correlationID, flexibleHeader: true, body: body.bytes)
        }
        guard permitsCluster(session, .clusterAction) else {
            logger.warning("refused an Envelope: only brokers may act for others", metadata: ["client": "\(session.client)", "principal": "\(session.principal)"])
            return .ready(answer(nil, .clusterAuthorizationFailed))
        }
        guard let text = request.requestPrincipal.flatMap({ String(validating: $0, as: UTF8.self) }),
              case let principal = Principal(parsing: text), principal.type == "User", !principal.name.isEmpty else {
            return .ready(answer(nil, .principalDeserializationFailure))
        }
        guard let host = Self.hostAddress(request.clientHostAddress) else {
            return .ready(answer(nil, .invalidRequest))
        }
        // Nothing that changes who the connection is, and no envelope in an envelope.
        let embeddedKey = request.requestData.count >= 2 ? Int16(request.requestData[0]) << 8 | Int16(request.requestData[1]) : -1
        guard ![EnvelopeRequest.apiKey, ApiKey.saslHandshake.rawValue, ApiKey.saslAuthenticate.rawValue].contains(embeddedKey) else {
            return .ready(answer(nil, .invalidRequest))
        }
        var embedded = ClientSession(client: host, host: host, listener: session.listener)
        embedded.authenticatedUser = principal.name
        let staged: StagedAnswer
        do {
            staged = try await stage(frame: request.requestData, session: &embedded)
        } catch {
            // Where the caller's own connection would close, the envelope's
            // answer says so; the broker's connection carries others' requests.
            logger.info("refused an enveloped request", metadata: ["client": "\(session.client)", "principal": "\(principal)", "reason": "\(error.reason)"])
            return .ready(answer(nil, .invalidRequest))
        }
        switch staged {
        case .ready(let response):
            return .ready(answer(response, .none))
        case .pending(let finish):
            return .pending { answer(await finish(), .none) }
        }
    }

    /// An IP address as Envelope carries it (4 or 16 bytes), as text.
    static func hostAddress(_ bytes: [UInt8]) -> String? {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        return (try? SocketAddress(packedIPAddress: ByteBuffer(bytes: bytes), port: 0))?.ipAddress
    }
}
