import Foundation
import Operations
import Testing

/// Every metric the sources name has a `# HELP` text, and the exposition
/// gets it before the family's `# TYPE` line.
@Suite struct MetricHelpTests {
    static var sources: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Sources")
    }

    @Test func everyMetricTheSourcesNameIsDescribed() throws {
        let files = try #require(FileManager.default.enumerator(atPath: Self.sources.path)).compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") }
        let pattern = try NSRegularExpression(pattern: #"label: "(postduif_[a-z_]+)""#)
        var named = Set<String>()
        for file in files {
            let text = try String(contentsOf: Self.sources.appendingPathComponent(file), encoding: .utf8)
            for match in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                named.insert(String(text[Range(match.range(at: 1), in: text)!]))
            }
        }
        #expect(named.count > 30, "the sources were not found from \(Self.sources.path)")
        let undescribed = named.subtracting(MetricHelp.texts.keys)
        #expect(undescribed.isEmpty, "metrics without a HELP text: \(undescribed.sorted())")
        let stale = Set(MetricHelp.texts.keys).subtracting(named)
        #expect(stale.isEmpty, "HELP texts of metrics no source names: \(stale.sorted())")
    }

    @Test func theHelpLineGoesBeforeItsFamilysTypeLine() {
        let exposition = "# TYPE postduif_connections gauge\npostduif_connections 3\n# TYPE something_else counter\nsomething_else 1\n"
        let annotated = MetricHelp.annotate(exposition)
        #expect(annotated == "# HELP postduif_connections Open Kafka client connections.\n# TYPE postduif_connections gauge\npostduif_connections 3\n# TYPE something_else counter\nsomething_else 1\n")
    }
}
