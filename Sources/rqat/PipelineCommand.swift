import ArgumentParser
import Cluster
import Foundation
import Jobs
import Pipeline

struct PipelineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline",
        abstract: "Run the staged workflow of a config: teacher, traces, calibration, PTQ, QAT (KD and SFT), evaluation, report.",
        discussion: """
            Each stage writes its directory under the config's "out" with a manifest of its inputs; a \
            re-run skips unchanged stages, redoes those downstream of a change, and resumes an \
            interrupted one. Under mpirun (cluster/launch.sh) the teacher ranks serve KD and every rank \
            shares trace generation and evaluation. The result is OUT/report.md, OUT/report.html (open \
            it in a browser) and OUT/report.json. See docs/PIPELINE.md for the config keys.
            """)

    @Option(help: "The pipeline config (JSON).")
    var config: String
    @Option(help: "World ranks that serve the teacher during KD and the rollouts during RL (cluster/launch.sh passes it); overrides the config's \"teachers\".")
    var teachers: Int?
    @OptionGroup var assets: AssetOptions
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.apply()
        try reportingErrors {
            var pipeline = try PipelineRun(configFile: URL(fileURLWithPath: config), assets: assets.url)
            if let teachers { pipeline.config.teachers = teachers }
            let world = try MPI.initialize()
            defer { MPI.finalize() }
            do {
                if let report = try pipeline.run(world: world, log: printErr) {
                    print(report.tableLines.joined(separator: "\n"))
                    print("")
                    print(report.findingLines.joined(separator: "\n"))
                }
            } catch {
                if world.size > 1 { MPI.abort("error: rank \(world.rank): \(error)") }
                throw error
            }
        }
    }
}
