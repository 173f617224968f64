import Foundation
import HTTPTypes
import Hummingbird
import KafkaWire
import PostduifClient

/// An answer in the REST Proxy's error shape: `{"error_code": 40401,
/// "message": "..."}`, the code's first three digits the HTTP status.
struct ProxyError: Error, CustomStringConvertible {
    var code: Int
    var message: String

    var status: HTTPResponse.Status { HTTPResponse.Status(code: code / 100) }
    var description: String { "\(code): \(message)" }

    static func topicNotFound(_ topic: String) -> ProxyError { ProxyError(code: 40401, message: "Topic \(topic) not found.") }
    static func partitionNotFound(_ partition: Int32) -> ProxyError { ProxyError(code: 40402, message: "Partition \(partition) not found.") }
    static let instanceNotFound = ProxyError(code: 40403, message: "Consumer instance not found.")
    static let unauthenticated = ProxyError(code: 40101, message: "Authentication is required: HTTP Basic with a Kafka user's name and password.")
    static func unprocessable(_ why: String) -> ProxyError { ProxyError(code: 42201, message: why) }
    static func badRequest(_ why: String) -> ProxyError { ProxyError(code: 40001, message: why) }

    /// A Kafka refusal as the REST Proxy reports it.
    static func kafka(_ error: any Error) -> ProxyError {
        guard let error = error as? ClientError else { return ProxyError(code: 50002, message: "Kafka error: \(error)") }
        switch error.errorCode {
        case .topicAuthorizationFailed?, .groupAuthorizationFailed?, .clusterAuthorizationFailed?:
            return ProxyError(code: 40301, message: "Not authorized: \(error)")
        case .unknownTopicOrPartition?:
            return ProxyError(code: 40401, message: "Not found: \(error)")
        case .saslAuthenticationFailed?:
            return ProxyError(code: 40101, message: "\(error)")
        default:
            return ProxyError(code: 50002, message: "Kafka error: \(error)")
        }
    }

    var response: Response {
        let body = (try? JSONSerialization.data(withJSONObject: ["error_code": code, "message": message], options: [.sortedKeys])) ?? Data()
        var headers: HTTPFields = [.contentType: ProxyMedia.v2Json]
        if code == 40101 { headers[.wwwAuthenticate] = "Basic realm=\"postduif\"" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// The REST Proxy's media types.
enum ProxyMedia {
    static let v2Json = "application/vnd.kafka.v2+json"
    static let jsonV2 = "application/vnd.kafka.json.v2+json"
    static let binaryV2 = "application/vnd.kafka.binary.v2+json"

    /// The embedded format a request body or an Accept header names.
    static func format(_ mediaType: String?) -> EmbeddedFormat? {
        guard let mediaType = mediaType?.lowercased() else { return nil }
        if mediaType.contains("vnd.kafka.binary.") { return .binary }
        if mediaType.contains("vnd.kafka.json.") { return .json }
        return nil
    }
}

/// How keys and values are written in the JSON of requests and answers:
/// as JSON themselves, or as base64 of their bytes.
enum EmbeddedFormat: String, Sendable {
    case json, binary

    var mediaType: String { self == .json ? ProxyMedia.jsonV2 : ProxyMedia.binaryV2 }

    /// The bytes a request's key or value stands for (nil: JSON null).
    func bytes(_ value: Any?) throws(ProxyError) -> [UInt8]? {
        guard let value, !(value is NSNull) else { return nil }
        switch self {
        case .binary:
            guard let text = value as? String, let data = Data(base64Encoded: text) else {
                throw .unprocessable("a binary key or value must be a base64 string")
            }
            return Array(data)
        case .json:
            guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .withoutEscapingSlashes]) else {
                throw .unprocessable("a key or value that is not JSON")
            }
            return Array(data)
        }
    }

    /// A stored key or value as it goes into an answer's JSON.
    func json(_ bytes: [UInt8]?, at place: String) throws(ProxyError) -> Any {
        guard let bytes else { return NSNull() }
        switch self {
        case .binary:
            return Data(bytes).base64EncodedString()
        case .json:
            guard let value = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]) else {
                throw ProxyError(code: 50002, message: "the record at \(place) is not JSON: read it with the binary format")
            }
            return value
        }
    }
}
