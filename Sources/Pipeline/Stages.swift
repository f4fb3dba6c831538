import Cluster
import Foundation
import Jobs
import Tensors

/// What a stage directory records about the run that filled it.
package struct StageManifest: Codable, Sendable, Equatable {
    package var stage: String
    /// Digest of everything the stage's result depends on: its settings and its upstream
    /// stages' digests, so a change anywhere upstream changes it.
    package var digest: String
    /// The same inputs, readable (canonical JSON), to see what changed between two runs.
    package var inputs: String
    package var completed: Bool
    package var seconds: Double

    package static func url(_ directory: URL) -> URL { directory.appendingPathComponent("manifest.json") }
}

/// What the stage runner needs of the MPI world; `Communicator` is one, and tests use a world of
/// one rank without MPI (initialising MPI inside a test process would break the `mpirun`
/// children of later tests, which inherit its environment).
package protocol StageWorld: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    func broadcast(_ bytes: inout [UInt8], root: Int) throws
    func barrier() throws
    func send(_ bytes: [UInt8], to destination: Int, tag: Int) throws
    func poll(from source: Int?, tag: Int?) throws -> (bytes: [UInt8], source: Int, tag: Int)?
}

extension Communicator: StageWorld {}

/// Runs stages in their directories under `root`, skipping those whose inputs are unchanged.
///
/// A stage is (name, inputs, body). Its directory holds `manifest.json`:
/// - completed with the same digest: skipped;
/// - not completed with the same digest (interrupted): the body runs again in the same
///   directory, where the jobs resume (training from its last checkpoint);
/// - another digest: the directory is emptied and the stage redone, and so is everything
///   downstream, whose inputs include this digest.
///
/// Under mpirun every rank calls `run` in the same order; rank 0 decides and writes manifests,
/// and the body runs on every rank (stages that use one rank let the others wait without
/// spinning on a core: `StageRunner.rank0Only`).
package final class StageRunner {
    package let root: URL
    package let world: any StageWorld
    package let log: (String) -> Void
    package private(set) var ran: [String] = []
    package private(set) var skipped: [String] = []

    package init(root: URL, world: any StageWorld, log: @escaping (String) -> Void) {
        self.root = root
        self.world = world
        self.log = log
    }

    package func directory(_ stage: String) -> URL { root.appendingPathComponent(stage) }

    /// Digest of `inputs` (FNV-1a 64 of its canonical JSON, sorted keys).
    package static func digest<I: Encodable>(_ inputs: I) throws -> (digest: String, canonical: String) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let canonical = String(decoding: try encoder.encode(inputs), as: UTF8.self)
        return (String(format: "%016llx", StableHash.fnv1a(canonical)), canonical)
    }

    /// Runs (or skips) one stage; returns its digest for the stages that depend on it.
    @discardableResult
    package func run<I: Encodable>(_ stage: String, inputs: I, _ body: (URL) throws -> Void) throws -> String {
        let (digest, canonical) = try Self.digest(inputs)
        let dir = directory(stage)
        var decision: [UInt8] = []
        if world.rank == 0 {
            let previous = try? JSONDecoder().decode(StageManifest.self, from: Data(contentsOf: StageManifest.url(dir)))
            if previous?.digest == digest && previous?.completed == true {
                decision = [0]
            } else if previous?.digest == digest {
                decision = [1]
            } else {
                if FileManager.default.fileExists(atPath: dir.path) {
                    if previous != nil { log("stage \(stage): inputs changed, redoing it") }
                    try FileManager.default.removeItem(at: dir)
                }
                decision = [2]
            }
        }
        try world.broadcast(&decision, root: 0)
        switch decision[0] {
        case 0:
            skipped.append(stage)
            if world.rank == 0 { log("stage \(stage): unchanged, skipped") }
            return digest
        case 1:
            if world.rank == 0 { log("stage \(stage): resuming an interrupted run") }
        default:
            if world.rank == 0 { log("stage \(stage): running") }
        }
        let start = Date()
        var manifest = StageManifest(stage: stage, digest: digest, inputs: canonical, completed: false, seconds: 0)
        if world.rank == 0 { try JobJSON.write(manifest, to: StageManifest.url(dir)) }
        try world.barrier()
        try body(dir)
        try world.barrier()
        manifest.completed = true
        manifest.seconds = Date().timeIntervalSince(start)
        if world.rank == 0 {
            try JobJSON.write(manifest, to: StageManifest.url(dir))
            log(String(format: "stage %@: done in %@", stage, formatDuration(manifest.seconds)))
        }
        ran.append(stage)
        return digest
    }

    /// Runs `body` on rank 0 while the other ranks wait for it by polling with sleeps (an MPI
    /// barrier spins, which would take a core from rank 0 on a shared machine). Meanwhile rank 0
    /// uses every core of its machine (launchers give each rank a share of them). An error on
    /// rank 0 stops every rank.
    package func rank0Only(_ body: () throws -> Void) throws {
        let tag = 7_001
        if world.rank == 0 {
            let threads = Threads.count
            if world.size > 1 { Threads.set(ProcessInfo.processInfo.activeProcessorCount) }
            defer { Threads.set(threads) }
            do {
                try body()
            } catch {
                if world.size > 1 { MPI.abort("error: rank 0: \(error)") }
                throw error
            }
            for r in 1..<max(world.size, 1) { try world.send([1], to: r, tag: tag) }
        } else {
            while try world.poll(from: 0, tag: tag) == nil { usleep(50_000) }
        }
    }
}
