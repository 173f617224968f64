import Coordination
import Foundation

/// A real etcd (Debian's etcd-server) on free loopback ports, with its data
/// in a temporary folder; stopped by its PID.
public final class EtcdProcess: @unchecked Sendable {
    let process = Process()
    let dataDirectory = NSTemporaryDirectory() + "postduif-etcd-\(UUID().uuidString)"
    public let clientPort: Int
    public var endpoint: String { "http://127.0.0.1:\(clientPort)" }

    public static func freePort() -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    public init() throws {
        clientPort = Self.freePort()
        let peerPort = Self.freePort()
        let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let binary else { throw CoordinationError.unavailable("etcd is missing: make deps installs etcd-server") }
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--name", "test", "--data-dir", dataDirectory,
            "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--listen-peer-urls", "http://127.0.0.1:\(peerPort)",
            "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPort)",
            "--initial-cluster", "test=http://127.0.0.1:\(peerPort)",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    public func waitReady() async throws {
        let client = EtcdClient(endpoints: [endpoint], timeout: .seconds(1))
        for _ in 0..<100 {
            if (try? await client.list(prefix: "/")) != nil { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CoordinationError.unavailable("etcd did not start on \(endpoint)")
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dataDirectory)
    }
}

