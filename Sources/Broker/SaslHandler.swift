import Cluster
import Coordination
import Core
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Security
import Synchronization

// SaslHandshake and SaslAuthenticate: a connection proves who it is.
// Failures from one address are limited (`Limits.saslFailuresPerMinute`):
// past the limit its exchanges fail at once, whatever the password, until
// the minute is over; and every failure is answered after a pause, as
// Kafka's connection.failed.authentication.delay.ms does.
extension Broker {
    func authenticate(_ request: SaslAuthenticateRequest, session: inout ClientSession) async -> SaslAuthenticateResponse {
        let host = session.host
        let milliseconds = clock.now.milliseconds
        if let wait = saslFailures.withLock({ $0.wait(for: host, now: milliseconds) }) {
            session.closeAfterResponse = true
            logger.warning("authentication refused: too many failures from this address", metadata: ["client": "\(session.client)", "retryAfterMs": "\(wait)"])
            try? await Task.sleep(for: Limits.saslFailureDelay)
            return SaslAuthenticateResponse(errorCode: ErrorCode.saslAuthenticationFailed.rawValue,
                                            errorMessage: "too many failed authentications from \(host); retry in \(wait / 1000 + 1) s", authBytes: [])
        }
        guard session.authenticatedUser == nil, var sasl = session.sasl else {
            session.closeAfterResponse = true
            return SaslAuthenticateResponse(errorCode: ErrorCode.illegalSaslState.rawValue, errorMessage: "SaslAuthenticate without a SaslHandshake", authBytes: [])
        }
        let step = sasl.receive(request.authBytes)
        session.sasl = sasl
        switch step {
        case .challenge(let bytes):
            return SaslAuthenticateResponse(errorCode: 0, errorMessage: nil, authBytes: bytes)
        case .success(let user, let final):
            session.authenticatedUser = user
            session.sasl = nil
            logger.info("client authenticated", metadata: ["client": "\(session.client)", "user": "\(user)", "mechanism": "\(sasl.mechanism)"])
            return SaslAuthenticateResponse(errorCode: 0, errorMessage: nil, authBytes: final)
        case .failure(let reason):
            session.closeAfterResponse = true
            saslFailures.withLock { $0.record(host, now: milliseconds) }
            try? await Task.sleep(for: Limits.saslFailureDelay)
            logger.warning("authentication failed", metadata: ["client": "\(session.client)", "mechanism": "\(sasl.mechanism)", "reason": "\(reason)"])
            return SaslAuthenticateResponse(errorCode: ErrorCode.saslAuthenticationFailed.rawValue, errorMessage: "authentication failed", authBytes: [])
        }
    }
}
