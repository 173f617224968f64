import Cluster
import Coordination
import Foundation
import KafkaWire
import LogStore
import Logging
import Metrics
import Synchronization

// SaslHandshake and SaslAuthenticate: a connection proves who it is.
extension Broker {
    func authenticate(_ request: SaslAuthenticateRequest, session: inout ClientSession) -> SaslAuthenticateResponse {
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
            logger.warning("authentication failed", metadata: ["client": "\(session.client)", "mechanism": "\(sasl.mechanism)", "reason": "\(reason)"])
            return SaslAuthenticateResponse(errorCode: ErrorCode.saslAuthenticationFailed.rawValue, errorMessage: "authentication failed", authBytes: [])
        }
    }
}
