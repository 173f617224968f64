import ArgumentParser
import Foundation
import Gateway
import Thumbnails

/// `postduif thumbnail`: one thumbnail, made in a process of its own. The
/// gateway runs it for each image it has not made a thumbnail of yet
/// (`ChildProcessThumbnails`), so that a fault in an image decoder, fed a
/// file anyone may upload, ends this process and not the one serving chat.
struct ThumbnailCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "thumbnail",
        abstract: "Make one thumbnail of a JPEG, PNG or GIF (the gateway runs this in a child process).",
        shouldDisplay: false
    )

    /// Exit status when the image is no larger than the box: no thumbnail written.
    static let noLargerStatus: Int32 = 3
    /// CPU seconds and bytes of address space the process may use: a
    /// thumbnail of the largest image allowed takes well under both.
    static let cpuSecondsMax: rlim_t = 20
    static let addressSpaceMax: rlim_t = 4 << 30

    @Option(help: "The image file.") var input: String
    @Option(help: "Where the thumbnail goes.") var output: String
    @Option(help: "The box's width.") var width: Int
    @Option(help: "The box's height.") var height: Int
    @Option(help: "scale (fit inside the box) or crop (fill it).") var method: String = "scale"

    func run() throws {
        var cpu = rlimit(rlim_cur: Self.cpuSecondsMax, rlim_max: Self.cpuSecondsMax)
        var space = rlimit(rlim_cur: Self.addressSpaceMax, rlim_max: Self.addressSpaceMax)
        setrlimit(Int32(RLIMIT_CPU.rawValue), &cpu)
        setrlimit(Int32(RLIMIT_AS.rawValue), &space)
        guard let method = Thumbnail.Method(rawValue: method), width > 0, height > 0 else {
            throw OperatorError("--method scale|crop and a positive --width and --height")
        }
        let image = try [UInt8](Data(contentsOf: URL(fileURLWithPath: input)))
        guard let made = try Thumbnail.make(image, box: (width, height), method: method) else { throw ExitCode(Self.noLargerStatus) }
        try Data(made.bytes).write(to: URL(fileURLWithPath: output))
    }
}

/// Thumbnails made by `postduif thumbnail` in a child process of this
/// executable (`/proc/self/exe`, the binary running even if a newer one was
/// installed since), through files in a private temporary folder; a child
/// that runs longer than `timeout` is killed.
struct ChildProcessThumbnails: ThumbnailMaker {
    var timeout: Duration = .seconds(15)

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    func thumbnail(of image: [UInt8], width: Int, height: Int, method: Thumbnail.Method) async throws -> (bytes: [UInt8], contentType: String)? {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("postduif-thumbnail-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: folder) }
        let input = folder.appendingPathComponent("image")
        let output = folder.appendingPathComponent("thumbnail")
        let errors = folder.appendingPathComponent("errors")
        try Data(image).write(to: input)
        try Data().write(to: errors)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        process.arguments = ["thumbnail", "--input", input.path, "--output", output.path, "--width", String(width), "--height", String(height), "--method", method.rawValue]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: errors)
        let status = try await run(process)
        if status == ThumbnailCommand.noLargerStatus { return nil }
        guard status == 0 else {
            let said = (try? String(contentsOf: errors, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            throw Failure(description: "postduif thumbnail ended with status \(status)\(said.isEmpty ? "" : ": \(said)")")
        }
        let bytes = try [UInt8](Data(contentsOf: output))
        // JPEG stays JPEG; PNG and GIF become PNG (Thumbnail.make).
        return (bytes, bytes.starts(with: [0xFF, 0xD8]) ? "image/jpeg" : "image/png")
    }

    /// Runs `process` to its end, killing it past `timeout`; its exit status.
    private func run(_ process: Process) async throws -> Int32 {
        try await withThrowingTaskGroup(of: Int32?.self) { group in
            group.addTask {
                try await withCheckedThrowingContinuation { (done: CheckedContinuation<Int32?, any Error>) in
                    process.terminationHandler = { ended in done.resume(returning: ended.terminationStatus) }
                    do {
                        try process.run()
                    } catch {
                        process.terminationHandler = nil
                        done.resume(throwing: error)
                    }
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            while let finished = try await group.next() {
                if let status = finished {
                    group.cancelAll()
                    return status
                }
                // The timeout came first (a pid of 0 would name our own group).
                if process.processIdentifier > 0 { kill(process.processIdentifier, SIGKILL) }
            }
            throw Failure(description: "postduif thumbnail did not end")
        }
    }
}
