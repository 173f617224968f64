import ArgumentParser
import Broker
import Cluster
import Coordination
import Foundation
import Gateway
import LogStore
import Logging
import Metrics
import Operations
import Prometheus
import ServiceLifecycle

/// A failure the operator can act on, printed as `Error: <message>` without usage text.
struct OperatorError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Settings named POSTDUIF_<NAME>: from the environment first, then from
/// the config file (`--config FILE` or POSTDUIF_CONFIG), whose lines use
/// the same names (`POSTDUIF_PORT=9093`; `#` starts a comment), so
/// Deploy/config/postduif.env serves as both. Flags win over both.
enum Environment {
    static func string(_ name: String) -> String? {
        ProcessInfo.processInfo.environment["POSTDUIF_" + name] ?? configFile["POSTDUIF_" + name]
    }

    /// The config file's settings. Its path is read from the arguments before
    /// ArgumentParser runs, because option defaults are computed from it.
    static let configFile: [String: String] = {
        let arguments = CommandLine.arguments
        var path = ProcessInfo.processInfo.environment["POSTDUIF_CONFIG"]
        if let index = arguments.firstIndex(of: "--config"), index + 1 < arguments.count {
            path = arguments[index + 1]
        } else if let inline = arguments.first(where: { $0.hasPrefix("--config=") }) {
            path = String(inline.dropFirst("--config=".count))
        }
        guard let path else { return [:] }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            FileHandle.standardError.write(Data("Error: cannot read the config file \(path)\n".utf8))
            exit(2)
        }
        var settings: [String: String] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#"), let equals = trimmed.firstIndex(of: "=") else { continue }
            let key = trimmed[..<equals].trimmingCharacters(in: .whitespaces)
            var value = trimmed[trimmed.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2 && value.hasPrefix("\"") && value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            settings[key] = value
        }
        return settings
    }()

    static func integer(_ name: String) -> Int? {
        string(name).flatMap { Int($0) }
    }
}

/// Raises the soft limit of open files to the hard one: each partition
/// keeps its segment files open, besides the clients' connections, and a
/// shell's default soft limit (1,024) is low for a broker. The systemd unit
/// sets the limit itself (`LimitNOFILE`).
func raiseOpenFilesLimit() {
    var limit = rlimit()
    guard getrlimit(openFilesResource, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(openFilesResource, &limit)
}

/// `RLIMIT_NOFILE` as Glibc's Swift overlay spells it (an enum case there).
private let openFilesResource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
