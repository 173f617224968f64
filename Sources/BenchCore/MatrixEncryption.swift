import Foundation

/// What an encrypting Matrix client sends a homeserver, for the encrypted
/// chat workload: device keys, one-time keys, megolm room events and the
/// olm to-device messages that share a room's megolm session with each
/// member's device. A homeserver stores and relays these without reading
/// them (the ciphertexts are opaque to it, the signatures are checked by
/// the receiving clients), so what its work depends on is their shape and
/// size, not their cryptography. They are random bytes in unpadded base64,
/// sized as libolm and vodozemac produce them:
///
/// - Curve25519 and Ed25519 keys, a megolm session id: 32 bytes (43 characters);
/// - an Ed25519 signature: 64 bytes (86 characters);
/// - a megolm message: version, message index, AES-256-CBC ciphertext of the
///   event's JSON (padded to 16 bytes), an 8-byte MAC and a 64-byte signature;
/// - an exported megolm session key: 229 bytes (306 characters);
/// - an olm pre-key message carrying an `m.room_key`: three 32-byte keys and
///   an inner message around the padded ciphertext of that event's JSON.
///   Until a recipient answers, olm sends every message as a pre-key message,
///   and in this workload nobody answers.
///
/// The measured message carries its bench marker (`bench ID INTENDED`) in a
/// field of its own beside the ciphertext, which the server passes through
/// as it passes any unknown content field.
enum EncryptedChat {
    static let megolm = "m.megolm.v1.aes-sha2"
    static let olm = "m.olm.v1.curve25519-aes-sha2"
    static let markerField = "org.postduif.bench"

    /// Unpadded base64 of `count` random bytes, as Matrix writes keys and ciphertexts.
    static func random(_ count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var text = Data(bytes).base64EncodedString()
        while text.last == "=" { text.removeLast() }
        return text
    }

    static func padded(_ count: Int) -> Int { (count / 16 + 1) * 16 }

    /// One device's identity, as its client generated it at login.
    struct Device: Sendable {
        var user: String
        var id: String
        var curve25519 = EncryptedChat.random(32)
        var ed25519 = EncryptedChat.random(32)

        func signatures() -> [String: Any] { [user: ["ed25519:\(id)": EncryptedChat.random(64)]] }

        /// The body of `POST /keys/upload` a client sends after its first login.
        func keysUpload(oneTimeKeys: Int) -> [String: Any] {
            var keys: [String: Any] = [:]
            for index in 0..<oneTimeKeys {
                keys["signed_curve25519:AAAA\(index)"] = ["key": EncryptedChat.random(32), "signatures": signatures()]
            }
            let deviceKeys: [String: Any] = [
                "user_id": user, "device_id": id, "algorithms": [EncryptedChat.olm, EncryptedChat.megolm],
                "keys": ["curve25519:\(id)": curve25519, "ed25519:\(id)": ed25519], "signatures": signatures(),
            ]
            return ["device_keys": deviceKeys, "one_time_keys": keys]
        }
    }

    /// A sender's outbound megolm session in one room, replaced every
    /// rotation period (Element's default: 100 messages).
    struct OutboundSession: Sendable {
        var id = EncryptedChat.random(32)
        var key = EncryptedChat.random(229)
        var sent = 0
    }

    /// A device a sender shares its session with, as `keys/query` described it.
    struct Recipient: Sendable {
        var user: String
        var device: String
        var curve25519: String
        var ed25519: String
    }

    /// The content of an `m.room.encrypted` room event for a text message.
    static func roomEvent(body: String, room: String, from device: Device, session: OutboundSession) -> [String: Any] {
        let plaintext = #"{"type":"m.room.message","content":{"msgtype":"m.text","body":""#.utf8.count + body.utf8.count
            + #""},"room_id":""#.utf8.count + room.utf8.count + 2
        // version, index (a varint), ciphertext's tag and length, the ciphertext, MAC, signature
        let message = 1 + 1 + 3 + 1 + 2 + padded(plaintext) + 8 + 64
        return [
            "algorithm": megolm, "sender_key": device.curve25519, "device_id": device.id, "session_id": session.id,
            "ciphertext": random(message), markerField: body,
        ]
    }

    /// The messages of one `PUT /sendToDevice/m.room.encrypted/{txnId}`
    /// sharing `session` in `room` with each recipient device (its curve25519
    /// key as `keys/query` returned it).
    static func roomKeyShare(room: String, session: OutboundSession, from device: Device,
                             to recipients: [Recipient]) -> [String: Any] {
        var messages: [String: [String: Any]] = [:]
        for recipient in recipients {
            let plaintext = #"{"type":"m.room_key","content":{"algorithm":"","room_id":"","session_id":"","session_key":""},"sender":"","sender_device":"","keys":{"ed25519":""},"recipient":"","recipient_keys":{"ed25519":""}}"#.utf8.count
                + megolm.utf8.count + room.utf8.count + session.id.utf8.count + session.key.utf8.count + device.user.utf8.count
                + device.id.utf8.count + device.ed25519.utf8.count + recipient.user.utf8.count + recipient.ed25519.utf8.count
            // pre-key message: version, one-time key, base key, identity key (each tagged), then the
            // inner message: version, ratchet key, counter, ciphertext, MAC
            let inner = 1 + 34 + 2 + 3 + padded(plaintext) + 8
            let preKey = 1 + 34 + 34 + 34 + 3 + inner
            let content: [String: Any] = [
                "algorithm": olm, "sender_key": device.curve25519,
                "ciphertext": [recipient.curve25519: ["type": 0, "body": random(preKey)]],
            ]
            messages[recipient.user, default: [:]][recipient.device] = content
        }
        return ["messages": messages]
    }
}
