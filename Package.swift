// swift-tools-version: 6.2
import PackageDescription

// Postduif: a replicated append-only log on RocksDB that speaks the Kafka wire
// protocol. Layers depend downwards only; see Docs/architecture.md.
// Warnings are errors in every target of ours (not in dependencies): a
// warning left alone is a warning nobody reads.
let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "postduif",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "postduif", targets: ["postduif"]),
        .executable(name: "postduif-bench", targets: ["postduif-bench"]),
        .library(name: "LogStore", targets: ["LogStore"]),
        .library(name: "KafkaWire", targets: ["KafkaWire"]),
        // Producer, group consumer and admin calls over SwiftNIO, for
        // services in Swift (Docs/services.md).
        .library(name: "PostduifClient", targets: ["PostduifClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.20.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        // WebSocket subscriptions of the HTTP proxy.
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.0.0"),
        // HTTP/1 and its conversion to HTTP types, which Hummingbird builds on:
        // the gateway's sync fast path sits between them.
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.34.1"),
        // TLS on every listener and connection (swift-nio-ssl's BoringSSL),
        // certificate subjects read with swift-certificates.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.29.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.0.0"),
    ],
    targets: [
        // System libraries from Debian's -dev packages, found through pkg-config.
        .systemLibrary(name: "CRocksDB", pkgConfig: "rocksdb", providers: [.apt(["librocksdb-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CMalloc"),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CSnappy", pkgConfig: "snappy", providers: [.apt(["libsnappy-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // PBKDF2 and HMAC for SASL/SCRAM, from the system's OpenSSL.
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CGD", pkgConfig: "gdlib", providers: [.apt(["libgd-dev"])]),
        // CRC-32C with the SSE 4.2 instruction where the CPU has it.
        .target(name: "CCRC32C"),
        // Base64 decoding 32 characters at a time with AVX2 (HTTP produce).
        .target(name: "CBase64"),
        // sync_file_range, which Swift's Glibc module does not export.
        .target(name: "CFileSync"),

        // What every layer shares: the clock state machines are given, the
        // table of parked waiters with deadlines. No I/O.
        // Core's generic waiter table is on every long poll's path: compiled
        // for cross-module optimization so the modules above specialize it
        // (unspecialized, its generic metadata lookups cost the gateway a
        // tenth of its CPU per delivery).
        .target(name: "Core", swiftSettings: strictSettings + [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]),
        .target(name: "RocksDB", dependencies: ["CRocksDB"], swiftSettings: strictSettings),
        .target(
            name: "KafkaWire",
            dependencies: ["Core", "CCRC32C", "CLZ4", "CZlib", "CSnappy", "CZstd"],
            swiftSettings: strictSettings
        ),
        .target(
            name: "LogStore",
            dependencies: ["Core", "RocksDB", "KafkaWire", "CFileSync", .product(name: "Metrics", package: "swift-metrics")],
            swiftSettings: strictSettings
        ),
        // Postduif's chat on the wire: the chat topics' names and the two
        // extension APIs (ConversationHistory, GatewayPoll). Nothing below
        // it knows chat.
        .target(name: "ChatWire", dependencies: ["KafkaWire"], swiftSettings: strictSettings),
        // Kafka framing over SwiftNIO and a pipelined client connection.
        .target(
            name: "KafkaNIO",
            dependencies: [
                "Core", "KafkaWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        // Who a connection is and what it may do: TLS contexts from an
        // operator's files, principals from SASL or certificates, ACLs.
        .target(
            name: "Security",
            dependencies: [
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: strictSettings
        ),
        // The coordination protocol and etcd behind it (ADR 0009).
        .target(
            name: "Coordination",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        // The Swift client library: a cluster's connections and metadata,
        // an idempotent batching producer, a classic-protocol group
        // consumer, admin calls.
        .target(
            name: "PostduifClient",
            dependencies: ["KafkaWire", "KafkaNIO"],
            swiftSettings: strictSettings
        ),
        // HTTP access to the streams: the REST Proxy v2 API and Server-Sent
        // Events, in the broker's process, through PostduifClient.
        .target(
            name: "HTTPProxy",
            dependencies: [
                "Core", "KafkaWire", "KafkaNIO", "PostduifClient", "Security", "CBase64",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // The archive's files: events per conversation and month, manifests,
        // a hash chain, retention by a selection list (`postduif archive`).
        .target(name: "Archive", dependencies: ["COpenSSL"], swiftSettings: strictSettings),
        // Thumbnails of chat images through libgd, made in a child process
        // (`postduif thumbnail`) so a decoder fault never reaches the gateway.
        .target(name: "Thumbnails", dependencies: ["CGD"], swiftSettings: strictSettings),
        // Cluster control: the controller state machine (pure), and later the
        // drivers that apply it through Coordination.
        .target(
            name: "Cluster",
            dependencies: ["Core", "Coordination", "LogStore", "KafkaWire", "KafkaNIO", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        .target(
            name: "Broker",
            dependencies: [
                "Core", "LogStore", "KafkaWire", "KafkaNIO", "Cluster", "Coordination", "COpenSSL", "Security",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        // The chat fan-out: workers taking committed conversation records
        // to the gateways of their members; reads the broker through its
        // CommittedLog protocol and plugs the chat APIs into its router.
        .target(
            name: "Fanout",
            dependencies: [
                "Core", "Broker", "ChatWire", "KafkaWire", "KafkaNIO", "LogStore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        // The operators' HTTP port (/metrics, /health, /ready) of the broker and the gateway.
        .target(
            name: "Operations",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                "CMalloc",
                "Security",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        // The chat gateway: Matrix client-server API over Hummingbird, a thin
        // consumer of the broker through PostduifClient (and Postduif's
        // ConversationHistory extension).
        .target(
            name: "Gateway",
            dependencies: [
                "Core", "ChatWire", "KafkaWire", "KafkaNIO", "PostduifClient", "COpenSSL", "Security", "Thumbnails",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "postduif",
            dependencies: [
                "LogStore", "KafkaWire", "ChatWire", "Broker", "Fanout", "Cluster", "Coordination", "Gateway", "KafkaNIO", "Operations", "Security", "HTTPProxy", "PostduifClient", "Archive", "Thumbnails",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        // The load tool: workloads, targets (Kafka, NATS JetStream, discard),
        // HDR latency recording and reports; the executable is a thin CLI.
        .target(
            name: "BenchCore",
            dependencies: [
                "Core", "KafkaWire", "KafkaNIO", "PostduifClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "postduif-bench",
            dependencies: ["BenchCore", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strictSettings
        ),

        // A child process for the crash-safety test: appends in fsync mode and
        // prints each acknowledged offset until it is killed.
        .executableTarget(
            name: "CrashWriter",
            dependencies: ["Core", "LogStore", "KafkaWire"],
            path: "Tests/CrashWriter",
            swiftSettings: strictSettings
        ),
        .testTarget(name: "CoreTests", dependencies: ["Core", "TestSupport"], swiftSettings: strictSettings),
        .testTarget(
            name: "GatewayTests",
            dependencies: ["Gateway", "ChatWire", "Core", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "HTTPProxyTests", dependencies: ["HTTPProxy", "CBase64"], swiftSettings: strictSettings),
        .testTarget(name: "ThumbnailsTests", dependencies: ["Thumbnails", "CGD"], swiftSettings: strictSettings),
        .testTarget(
            name: "KafkaNIOTests",
            dependencies: ["KafkaNIO", "KafkaWire", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "OperationsTests",
            dependencies: ["Operations", .product(name: "AsyncHTTPClient", package: "async-http-client"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "RocksDBTests", dependencies: ["RocksDB"], swiftSettings: strictSettings),
        .testTarget(name: "KafkaWireTests", dependencies: ["KafkaWire"], resources: [.copy("Fixtures")], swiftSettings: strictSettings),
        .testTarget(name: "ChatWireTests", dependencies: ["ChatWire", "KafkaWire"], swiftSettings: strictSettings),
        .testTarget(
            name: "SecurityTests",
            dependencies: ["Security"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "BrokerTests",
            dependencies: ["Broker", "Fanout", "ChatWire", "Cluster", "LogStore", "KafkaWire", "KafkaNIO", "Security", "TestSupport", "PostduifClient", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")],
            swiftSettings: strictSettings
        ),
        // Helpers shared by test targets: a real etcd on free loopback ports.
        .target(name: "TestSupport", dependencies: ["Coordination"], path: "Tests/TestSupport", swiftSettings: strictSettings),
        .testTarget(name: "CoordinationTests", dependencies: ["Coordination", "TestSupport", .product(name: "AsyncHTTPClient", package: "async-http-client")], swiftSettings: strictSettings),
        .testTarget(
            name: "ClusterTests",
            dependencies: ["Cluster", "Broker", "LogStore", "KafkaWire", "KafkaNIO", "Coordination", "TestSupport", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "BenchTests",
            dependencies: ["BenchCore", "Core", "KafkaWire"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "LogStoreTests",
            dependencies: ["Core", "LogStore", "KafkaWire", "RocksDB"],
            swiftSettings: strictSettings
        ),
    ]
)
