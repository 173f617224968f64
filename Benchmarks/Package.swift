// swift-tools-version: 6.1
import PackageDescription

// Micro benchmarks of the log store (package-benchmark). A package of its
// own, so that `make test` never builds the benchmark tool and its
// dependencies. Run with `make bench` or, from this folder:
//   swift package --allow-writing-to-package-directory benchmark --target LogStoreBenchmarks
let package = Package(
    name: "PostduifBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "postduif", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "LogStoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "LogStore", package: "postduif"),
                .product(name: "KafkaWire", package: "postduif"),
            ],
            path: "Benchmarks/LogStoreBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
