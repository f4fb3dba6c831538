import Foundation
import XCTest

/// Executables built next to the test bundle (`swift build --build-tests` builds them all).
package enum BuiltProducts {
    package static func executable(_ name: String) throws -> URL {
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
package struct ProcessResult {
    package let status: Int32
    package let stdout: String
    package let stderr: String
    package let crashed: Bool
    package var output: String { stdout + stderr }
}

/// Runs a program to completion and captures both streams (through files, so neither can fill
/// up and block the child). `environment` replaces the inherited one when given; after `timeout`
/// seconds the program is terminated and the test fails.
package func runProcess(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil,
                       directory: URL? = nil, timeout: TimeInterval = 600,
                       file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    if let environment { process.environment = environment }
    if let directory { process.currentDirectoryURL = directory }
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-run-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let out = scratch.appendingPathComponent("stdout"), err = scratch.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    if process.isRunning {
        process.terminate()
        XCTFail("\(executable.lastPathComponent) \(arguments) did not finish in \(timeout) s", file: file, line: line)
    }
    process.waitUntilExit()
    return ProcessResult(status: process.terminationStatus,
                         stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "",
                         crashed: process.terminationReason == .uncaughtSignal)
}

/// Starts built executables under `mpirun` on this machine, the way the multi-rank tests need:
/// oversubscribed, unbound, one OpenBLAS thread per rank, as root only with --allow-run-as-root.
package enum MPIRun {
    package static var mpirun: URL? {
        ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].map(URL.init(fileURLWithPath:))
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    /// The arguments that precede the program on an mpirun line.
    package static func launcherArguments(ranks: Int) -> [String] {
        var args = ["-np", "\(ranks)", "--oversubscribe", "--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS=1"]
        if getuid() == 0 { args.insert("--allow-run-as-root", at: 0) }
        return args
    }

    /// `ranks` nil runs the program directly (a one-rank world without mpirun).
    package static func run(executable name: String, ranks: Int?, arguments: [String]) throws -> ProcessResult {
        let program = try BuiltProducts.executable(name)
        guard let ranks else {
            let environment = ProcessInfo.processInfo.environment.merging(["OPENBLAS_NUM_THREADS": "1"]) { $1 }
            return try runProcess(program, arguments, environment: environment)
        }
        guard let mpirun else { throw XCTSkip("mpirun not installed (scripts/setup.sh installs openmpi-bin)") }
        return try runProcess(mpirun, launcherArguments(ranks: ranks) + [program.path] + arguments, environment: cleanEnvironment)
    }

    /// This process's environment without the variables an MPI job sets (a test process that
    /// initialised MPI would otherwise make every mpirun it starts think it runs inside that job).
    package static var cleanEnvironment: [String: String] {
        ProcessInfo.processInfo.environment.filter { key, _ in !["OMPI_", "PMIX_", "ORTE_", "OPAL_"].contains { key.hasPrefix($0) } }
    }
}
