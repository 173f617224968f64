import Foundation

/// One run, as written to the JSON result file and drawn in the report.
public struct BenchResult: Codable, Sendable, Equatable {
    /// produce, consume, e2e or chat.
    public var workload: String
    /// The target's URL (kafka://, nats://, discard://).
    public var target: String
    /// A short name for charts ("postduif", "nats", ...).
    public var label: String
    /// Every setting the run used, flags and defaults alike.
    public var settings: [String: String]
    /// ISO 8601 time the run started.
    public var started: String
    public var figures: Figures
    /// Anything a reader must know to trust the figures (a generator that
    /// fell behind, messages missing).
    public var notes: [String]

    public init(workload: String, target: String, label: String, settings: [String: String], started: String, figures: Figures, notes: [String] = []) {
        self.workload = workload
        self.target = target
        self.label = label
        self.settings = settings
        self.started = started
        self.figures = figures
        self.notes = notes
    }

    /// The counter that measures the workload's throughput.
    public var headlineCounter: Counter {
        switch workload {
        case "consume": .received
        case "chat": .deliveries
        default: .acknowledged
        }
    }
}

/// The result file: the runs of one invocation, and for a comparison the
/// ratio per A/B pair.
public struct BenchReport: Codable, Sendable, Equatable {
    public var tool = "postduif-bench"
    public var machine: String
    public var results: [BenchResult]

    public init(machine: String = BenchReport.describeMachine(), results: [BenchResult]) {
        self.machine = machine
        self.results = results
    }

    public static func describeMachine() -> String {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let memory = Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30)
        return String(format: "%d cores, %.0f GiB memory, %@", cores, memory, ProcessInfo.processInfo.operatingSystemVersionString)
    }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// A self-contained HTML page: a table of figures and SVG charts of
    /// throughput over time, the latency percentile curve and, with more
    /// than one run, side-by-side bars.
    public func html() -> String {
        var page = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"/><title>postduif-bench report</title>
        <style>
        body { font-family: sans-serif; margin: 2em; color: #222; }
        table { border-collapse: collapse; margin: 1em 0; }
        th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
        th:first-child, td:first-child { text-align: left; }
        figure { margin: 1.5em 0; }
        .note { color: #a40; }
        </style></head><body>
        <h1>postduif-bench report</h1>
        <p>Machine: \(escape(machine))</p>

        """
        page += "<table><tr><th>run</th><th>workload</th><th>target</th><th>seconds</th><th>msgs/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>\n"
        for (index, result) in results.enumerated() {
            let latency = result.figures.latency
            page += "<tr><td>\(index + 1). \(escape(result.label))</td><td>\(escape(result.workload))</td><td>\(escape(result.target))</td>"
            page += "<td>\(format(result.figures.seconds))</td><td>\(format(result.figures.rate(result.headlineCounter)))</td>"
            for value in [latency?.p50, latency?.p90, latency?.p99, latency?.p999, latency?.max] {
                page += "<td>\(value.map { format($0) } ?? "–")</td>"
            }
            page += "</tr>\n"
        }
        page += "</table>\n"
        for result in results {
            for note in result.notes { page += "<p class=\"note\">\(escape(result.label)): \(escape(note))</p>\n" }
        }
        page += "<figure id=\"throughput\"><figcaption>Throughput over time (messages per second)</figcaption>\n"
        page += Chart.lines(
            series: results.map { result in
                (result.label, (result.figures.perSecond[result.headlineCounter.rawValue] ?? []).enumerated().map { (Double($0.offset), Double($0.element)) })
            },
            xLabel: "second", yLabel: "msgs/s", logX: false)
        page += "</figure>\n"
        let withLatency = results.filter { $0.figures.latency != nil }
        if !withLatency.isEmpty {
            page += "<figure id=\"latency\"><figcaption>Latency by percentile (milliseconds)</figcaption>\n"
            page += Chart.lines(
                series: withLatency.map { result in
                    (result.label, result.figures.latency!.curve.map { (Chart.percentileAxis($0[0]), $0[1]) })
                },
                xLabel: "percentile", yLabel: "ms", logX: true)
            page += "</figure>\n"
        }
        if results.count > 1 {
            page += "<figure id=\"comparison\"><figcaption>Side by side</figcaption>\n"
            page += Chart.bars(
                groups: ["msgs/s", "p99 ms"],
                series: results.map { result in
                    (result.label, [result.figures.rate(result.headlineCounter), result.figures.latency?.p99 ?? 0])
                })
            page += "</figure>\n"
        }
        page += "</body></html>\n"
        return page
    }
}

func escape(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
}

func format(_ value: Double) -> String {
    if value >= 100 { return String(format: "%.0f", value) }
    if value >= 1 { return String(format: "%.2f", value) }
    return String(format: "%.3f", value)
}

/// Inline SVG charts, drawn by hand: a report is one file with no scripts.
enum Chart {
    static let width = 720.0
    static let height = 320.0
    static let margin = (left: 70.0, right: 150.0, top: 15.0, bottom: 40.0)
    static let colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

    /// Maps a percentile to the chart's x axis: each further "nine" (90,
    /// 99, 99.9) is one step to the right.
    static func percentileAxis(_ percentile: Double) -> Double {
        log10(100 / max(100 - percentile, 0.001))
    }

    static func lines(series: [(String, [(Double, Double)])], xLabel: String, yLabel: String, logX: Bool) -> String {
        let points = series.flatMap(\.1)
        let xMax = max(points.map(\.0).max() ?? 1, 1)
        let yMax = max(points.map(\.1).max() ?? 1, 1e-9) * 1.1
        let plotWidth = width - margin.left - margin.right
        let plotHeight = height - margin.top - margin.bottom
        func x(_ value: Double) -> Double { margin.left + value / xMax * plotWidth }
        func y(_ value: Double) -> Double { margin.top + plotHeight - value / yMax * plotHeight }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\">\n"
        svg += axes(plotWidth: plotWidth, plotHeight: plotHeight, xLabel: xLabel, yLabel: yLabel)
        for step in 0...4 {
            let value = yMax * Double(step) / 4
            svg += "<text x=\"\(margin.left - 6)\" y=\"\(y(value) + 4)\" font-size=\"11\" text-anchor=\"end\">\(format(value))</text>\n"
        }
        if logX {
            for (tick, label) in [(0.0, "0"), (1.0, "90"), (2.0, "99"), (3.0, "99.9"), (4.0, "99.99"), (5.0, "99.999")] where tick <= xMax {
                svg += "<text x=\"\(x(tick))\" y=\"\(height - margin.bottom + 15)\" font-size=\"11\" text-anchor=\"middle\">\(label)</text>\n"
            }
        } else {
            for step in 0...4 {
                let value = xMax * Double(step) / 4
                svg += "<text x=\"\(x(value))\" y=\"\(height - margin.bottom + 15)\" font-size=\"11\" text-anchor=\"middle\">\(format(value))</text>\n"
            }
        }
        for (index, (name, values)) in series.enumerated() {
            let colour = colours[index % colours.count]
            let path = values.map { "\(String(format: "%.1f", x($0.0))),\(String(format: "%.1f", y($0.1)))" }.joined(separator: " ")
            svg += "<polyline class=\"series\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\" points=\"\(path)\"/>\n"
            svg += legend(index: index, name: name, colour: colour)
        }
        return svg + "</svg>\n"
    }

    static func bars(groups: [String], series: [(String, [Double])]) -> String {
        let plotWidth = width - margin.left - margin.right
        let plotHeight = height - margin.top - margin.bottom
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\">\n"
        svg += axes(plotWidth: plotWidth, plotHeight: plotHeight, xLabel: "", yLabel: "relative to the largest")
        let groupWidth = plotWidth / Double(max(groups.count, 1))
        let barWidth = groupWidth * 0.8 / Double(max(series.count, 1))
        for (group, name) in groups.enumerated() {
            // Each group is scaled to its own largest value: units differ.
            let largest = max(series.map { $0.1[group] }.max() ?? 1, 1e-9)
            let left = margin.left + Double(group) * groupWidth + groupWidth * 0.1
            for (index, (_, values)) in series.enumerated() {
                let barHeight = values[group] / largest * plotHeight
                let barX = left + Double(index) * barWidth
                svg += "<rect class=\"bar\" x=\"\(String(format: "%.1f", barX))\" y=\"\(String(format: "%.1f", margin.top + plotHeight - barHeight))\" width=\"\(String(format: "%.1f", barWidth - 2))\" height=\"\(String(format: "%.1f", barHeight))\" fill=\"\(colours[index % colours.count])\"/>\n"
                svg += "<text x=\"\(String(format: "%.1f", barX + barWidth / 2))\" y=\"\(String(format: "%.1f", margin.top + plotHeight - barHeight - 3))\" font-size=\"10\" text-anchor=\"middle\">\(format(values[group]))</text>\n"
            }
            svg += "<text x=\"\(String(format: "%.1f", left + groupWidth * 0.4))\" y=\"\(height - margin.bottom + 15)\" font-size=\"12\" text-anchor=\"middle\">\(escape(name))</text>\n"
        }
        for (index, (name, _)) in series.enumerated() {
            svg += legend(index: index, name: name, colour: colours[index % colours.count])
        }
        return svg + "</svg>\n"
    }

    static func axes(plotWidth: Double, plotHeight: Double, xLabel: String, yLabel: String) -> String {
        var svg = "<line x1=\"\(margin.left)\" y1=\"\(margin.top + plotHeight)\" x2=\"\(margin.left + plotWidth)\" y2=\"\(margin.top + plotHeight)\" stroke=\"#444\"/>\n"
        svg += "<line x1=\"\(margin.left)\" y1=\"\(margin.top)\" x2=\"\(margin.left)\" y2=\"\(margin.top + plotHeight)\" stroke=\"#444\"/>\n"
        svg += "<text x=\"\(margin.left + plotWidth / 2)\" y=\"\(height - 5)\" font-size=\"12\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        svg += "<text x=\"14\" y=\"\(margin.top + plotHeight / 2)\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(margin.top + plotHeight / 2))\">\(escape(yLabel))</text>\n"
        return svg
    }

    static func legend(index: Int, name: String, colour: String) -> String {
        let top = margin.top + 10 + Double(index) * 18
        let left = width - margin.right + 15
        return "<rect x=\"\(left)\" y=\"\(top - 9)\" width=\"12\" height=\"12\" fill=\"\(colour)\"/><text x=\"\(left + 18)\" y=\"\(top + 2)\" font-size=\"12\">\(escape(name))</text>\n"
    }
}
