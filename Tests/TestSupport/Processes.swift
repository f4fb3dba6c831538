import Foundation
import XCTest

/// Executables built next to the test bundle (`swift build --build-tests` builds them all).
public enum BuiltProducts {
    public static func executable(_ name: String) throws -> URL {
        let bundle = Bundle.main.bundleURL
        let candidates = [
            bundle.deletingLastPathComponent().appendingPathComponent(name),
            bundle.appendingPathComponent(name),
            TestPaths.root.appendingPathComponent(".build/debug/\(name)"),
        ]
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
            throw XCTSkip("\(name) not built next to the tests (run swift build --build-tests)")
        }
        return found
    }
}

/// The outcome of a finished child process.
public struct ProcessResult {
    public let status: Int32
    public let stdout: String
    public let stderr: String
    public let crashed: Bool
    public var output: String { stdout + stderr }
}

/// Runs a program to completion and captures both streams.
public func runProcess(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read stderr on another thread so neither pipe can fill up and block the child.
    nonisolated(unsafe) var errData = Data()
    let reader = Thread { errData = err.fileHandleForReading.readDataToEndOfFile() }
    reader.start()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while !reader.isFinished { usleep(1000) }
    return ProcessResult(status: process.terminationStatus,
                         stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errData, as: UTF8.self),
                         crashed: process.terminationReason == .uncaughtSignal)
}

/// Starts built executables under `mpirun` on this machine, the way the multi-rank tests need:
/// oversubscribed, unbound, one OpenBLAS thread per rank, as root only with --allow-run-as-root.
public enum MPIRun {
    public static var mpirun: URL? {
        ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].map(URL.init(fileURLWithPath:))
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// The arguments that precede the program on an mpirun line.
    public static func launcherArguments(ranks: Int) -> [String] {
        var args = ["-np", "\(ranks)", "--oversubscribe", "--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS=1"]
        if getuid() == 0 { args.insert("--allow-run-as-root", at: 0) }
        return args
    }

    /// `ranks` nil runs the program directly (a one-rank world without mpirun).
    public static func run(executable name: String, ranks: Int?, arguments: [String]) throws -> ProcessResult {
        let program = try BuiltProducts.executable(name)
        guard let ranks else { return try runProcess(program, arguments, environment: ["OPENBLAS_NUM_THREADS": "1"]) }
        guard let mpirun else { throw XCTSkip("mpirun not installed (scripts/setup.sh installs openmpi-bin)") }
        return try runProcess(mpirun, launcherArguments(ranks: ranks) + [program.path] + arguments)
    }
}
