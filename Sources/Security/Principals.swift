import Foundation
import NIOSSL
import X509

/// Who a connection is, as Kafka writes it: `User:alice` from SASL,
/// `User:CN=alice,O=Ministerie` (or a mapped name) from a client
/// certificate, `User:ANONYMOUS` when neither.
public struct Principal: Sendable, Hashable, CustomStringConvertible {
    public var type: String
    public var name: String

    public init(type: String = "User", name: String) {
        self.type = type
        self.name = name
    }

    public static let anonymous = Principal(name: "ANONYMOUS")

    /// `Type:name`; a bare name is a user.
    public init(parsing text: String) {
        if let colon = text.firstIndex(of: ":") {
            self.init(type: String(text[..<colon]), name: String(text[text.index(after: colon)...]))
        } else {
            self.init(name: text)
        }
    }

    public var description: String { "\(type):\(name)" }

    /// The subject of a peer's certificate, most specific part first, as
    /// RFC 2253 writes it (and Kafka's default principal builder).
    public static func subject(of certificate: NIOSSLCertificate) -> String? {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return nil }
        return parsed.subject.description
    }
}

/// Kafka's `ssl.principal.mapping.rules`: `RULE:pattern/replacement/[LU]`
/// entries, tried in order, and `DEFAULT` (the whole subject). The first
/// whose pattern matches the whole subject names the user.
public struct PrincipalMapping: Sendable {
    enum Rule: Sendable {
        case pattern(String, replacement: String, lower: Bool, upper: Bool)
        case whole
    }

    let rules: [Rule]

    public static let standard = PrincipalMapping(rules: [.whole])

    public init(parsing text: String) throws(TLSError) {
        var rules: [Rule] = []
        var rest = Substring(text.trimmingCharacters(in: .whitespacesAndNewlines))
        while !rest.isEmpty {
            if rest.hasPrefix("DEFAULT") {
                rules.append(.whole)
                rest = rest.dropFirst("DEFAULT".count)
            } else if rest.hasPrefix("RULE:") {
                // RULE:pattern/replacement/ with optional L or U; the
                // pattern may hold commas, so it is split on slashes.
                let body = rest.dropFirst("RULE:".count)
                let parts = body.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
                guard parts.count == 3 else { throw TLSError("mapping rule '\(rest)' is not RULE:pattern/replacement/") }
                var tail = parts[2]
                let lower = tail.hasPrefix("L")
                let upper = tail.hasPrefix("U")
                if lower || upper { tail = tail.dropFirst() }
                guard (try? NSRegularExpression(pattern: String(parts[0]))) != nil else {
                    throw TLSError("mapping rule pattern '\(parts[0])' is not a regular expression")
                }
                rules.append(.pattern(String(parts[0]), replacement: String(parts[1]), lower: lower, upper: upper))
                rest = tail
            } else {
                throw TLSError("mapping rules must be RULE:pattern/replacement/[LU] or DEFAULT, at '\(rest.prefix(40))'")
            }
            rest = rest.drop { $0 == "," || $0.isWhitespace }
        }
        self.rules = rules.isEmpty ? [.whole] : rules
    }

    init(rules: [Rule]) {
        self.rules = rules
    }

    /// The user name a subject maps to; nil when no rule matches (the
    /// connection is then refused, as Kafka refuses it).
    public func name(for subject: String) -> String? {
        for rule in rules {
            switch rule {
            case .whole:
                return subject
            case .pattern(let pattern, let replacement, let lower, let upper):
                guard let expression = try? NSRegularExpression(pattern: pattern) else { continue }
                let range = NSRange(subject.startIndex..., in: subject)
                guard let match = expression.firstMatch(in: subject, range: range), match.range == range else { continue }
                // Kafka's replacement writes groups as $1; so does NSRegularExpression.
                let name = expression.replacementString(for: match, in: subject, offset: 0, template: replacement)
                return lower ? name.lowercased() : upper ? name.uppercased() : name
            }
        }
        return nil
    }
}
