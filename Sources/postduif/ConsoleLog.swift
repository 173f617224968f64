import Foundation
import Logging
import Operations

/// Copies the process's log records at info and above into the operator
/// console's event log (`RecentEvents`), beside the usual standard-error
/// handler: the console shows what the broker's log says, no more.
struct ConsoleLogHandler: LogHandler {
    let events: RecentEvents
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var details: [String: String] = [:]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) { details[key] = "\(value)" }
        events.record(.init(time: Self.format(Date()), level: event.level.rawValue, message: "\(event.message)", details: details))
    }

    private static func format(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: false))
    }
}
