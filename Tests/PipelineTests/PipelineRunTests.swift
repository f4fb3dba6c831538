import Foundation
@testable import Pipeline
import TestSupport
import XCTest

/// The whole pipeline in one process (`rqat pipeline`, as a user runs it: MPI must not be
/// initialised inside the test process) on a tiny random teacher. Its answers are nonsense; what
/// is checked is that every stage runs and writes what the next reads, and that a re-run skips
/// them all.
final class PipelineRunTests: XCTestCase {
    /// `rqat pipeline --config FILE` in one process; the report it leaves in DIR/run.
    func runPipeline(_ file: URL, in dir: URL) throws -> PipelineReport {
        let arguments = ["pipeline", "--config", file.path, "--threads", "1", "--assets", TestPaths.assets.path]
        let result = try MPIRun.run(executable: "rqat", ranks: nil, arguments: arguments)
        XCTAssertEqual(result.status, 0, result.output)
        return try JSONDecoder().decode(PipelineReport.self, from: Data(contentsOf: dir.appendingPathComponent("run/report.json")))
    }

    func testTheStagesRunAndAnUnchangedRerunSkipsThem() throws {
        try TestPaths.require(TestPaths.gsmTemplates)
        let dir = try makeScratchDirectory("rqat-pipeline")
        let file = try TinyModels.writePipeline(in: dir, extraPTQ: ", {\"method\": \"rtn\", \"scheme\": \"w4g32\", \"evaluate\": false}")
        func run() throws -> PipelineReport { try runPipeline(file, in: dir) }
        let report = try run()
        XCTAssertEqual(report.models.map(\.name), ["teacher", "gptq-w4g32", "gptq-w4g32+kd", "gptq-w4g32+sft"], "rtn-w4g32 is not evaluated")
        XCTAssertTrue(report.stagesRun.contains("ptq-rtn-w4g32"))
        XCTAssertTrue(report.models.allSatisfy { $0.accuracy?.problems == 4 })
        XCTAssertEqual(report.models[0].heldoutKL, 0)
        XCTAssertTrue(report.models.dropFirst().allSatisfy { ($0.heldoutKL ?? -1) > 0 }, "quantized models differ from the teacher")
        XCTAssertEqual(report.curves.map { $0.points.map(\.step) }, [[0, 1, 2], [0, 1, 2]])
        XCTAssertEqual(report.comparisons.first?.a, "gptq-w4g32+kd")
        for name in ["report.md", "report.html", "report.json", "plot-1.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/\(name)").path), name)
        }
        XCTAssertTrue(report.stagesSkipped.isEmpty)

        let again = try run()
        XCTAssertEqual(again.stagesRun, [], "nothing changed, nothing ran")
        XCTAssertEqual(again.models.map(\.accuracy), report.models.map(\.accuracy))

        // Asking for its evaluation evaluates it and reruns nothing else: "evaluate" is no input of a PTQ stage.
        let text = try String(contentsOf: file, encoding: .utf8)
        try text.replacingOccurrences(of: "\"evaluate\": false", with: "\"evaluate\": true").write(to: file, atomically: true, encoding: .utf8)
        XCTAssertEqual(try run().stagesRun, ["eval-rtn-w4g32"])
    }

    /// RL stages after QAT: one from the KD student runs and is evaluated (greedy and sampled,
    /// each compared with its start), one from the PTQ init is refused by the cold-start gate and
    /// one is stopped by the on-policy check after its first step, which the report records
    /// instead of failing; a re-run skips all three.
    func testRLStagesRunAndTheGateIsRecorded() throws {
        try TestPaths.require(TestPaths.gsmTemplates)
        let dir = try makeScratchDirectory("rqat-pipeline-rl")
        let file = try TinyModels.writePipeline(in: dir)
        let rl = """
            "rl": [{"from": "gptq-w4g32+kd"}, {"from": "gptq-w4g32", "tag": "gated", "settings": {"min_start_reward": 0.5}},
                   {"from": "gptq-w4g32+kd", "tag": "stopped", "settings": {"max_logprob_gap": 1e-12}}],
            "rl_train": {"steps": 2, "lr": 1e-3, "prompts": 2, "group_size": 2, "max_new_tokens": 6, "mask_truncated": false,
                         "probe": 2, "train_problems": 4, "save_every": 1},
            "eval": {"sampled": true, "seeds": [1, 2], 
            """
        let text = try String(contentsOf: file, encoding: .utf8).replacingOccurrences(of: "\"eval\": {", with: rl)
        try text.write(to: file, atomically: true, encoding: .utf8)
        func run() throws -> PipelineReport { try runPipeline(file, in: dir) }
        let report = try run()
        XCTAssertEqual(report.rlCurves.map(\.run), ["gptq-w4g32+kd+rl", "gptq-w4g32+rl-gated", "gptq-w4g32+kd+rl-stopped"])
        XCTAssertEqual(report.rlCurves[0].steps.map(\.step), [1, 2])
        XCTAssertNotNil(report.rlCurves[0].startReward)
        XCTAssertNil(report.rlCurves[0].stopped)
        XCTAssertTrue(report.rlCurves[1].stopped?.contains("--min-start-reward 0.500") ?? false, "\(report.rlCurves[1])")
        XCTAssertTrue(report.models.contains { $0.name == "gptq-w4g32+kd+rl" && $0.sampledAccuracy != nil })
        XCTAssertFalse(report.models.contains { $0.name == "gptq-w4g32+rl-gated" }, "a gated run has no model")
        XCTAssertTrue(report.comparisons.contains { $0.a == "gptq-w4g32+kd+rl" && $0.b == "gptq-w4g32+kd" && $0.sampled == true })
        XCTAssertEqual(report.rlCurves[1].stoppedBy, "cold-start gate")
        XCTAssertNotNil(report.rlCurves[1].startReward, "the gate's probe reward is kept")
        XCTAssertEqual(report.rlCurves[2].stoppedBy, "on-policy check")
        XCTAssertEqual(report.rlCurves[2].steps.map(\.step), [1], "the step that tripped the check is recorded")
        XCTAssertTrue(report.rlCurves[2].stopped?.contains("--max-logprob-gap 1e-12") ?? false, "\(report.rlCurves[2])")
        XCTAssertFalse(report.models.contains { $0.name == "gptq-w4g32+kd+rl-stopped" }, "a stopped run has no model")
        XCTAssertTrue(report.markdown.contains("stopped by the cold-start gate"))
        XCTAssertTrue(report.markdown.contains("gptq-w4g32+kd+rl-stopped: stopped by the on-policy check after 1 RL steps"), report.markdown)
        XCTAssertTrue(report.plots.contains { $0.title == "RL reward" })
        XCTAssertEqual(try run().stagesRun, [], "nothing changed, nothing ran")
    }

    /// On 3 ranks (1 teacher, 2 students) every rank scores its share of the held-out traces and
    /// the sums are added: the held-out KL and perplexity of the PTQ models (the same models on
    /// any layout) are those of the one-rank run.
    func testHeldoutFiguresDoNotDependOnTheRankCount() throws {
        try TestPaths.require(TestPaths.gsmTemplates)
        var reports: [PipelineReport] = []
        for ranks in [nil, 3] as [Int?] {
            let dir = try makeScratchDirectory("rqat-pipeline-ranks")
            let file = try TinyModels.writePipeline(in: dir, batchTokens: 2048)  // one row per student
            let result = try MPIRun.run(executable: "rqat", ranks: ranks, arguments: ["pipeline", "--config", file.path, "--threads", "1", "--assets", TestPaths.assets.path])
            XCTAssertEqual(result.status, 0, result.output)
            reports.append(try JSONDecoder().decode(PipelineReport.self, from: Data(contentsOf: dir.appendingPathComponent("run/report.json"))))
        }
        for name in ["teacher", "gptq-w4g32"] {
            let a = try XCTUnwrap(reports[0].models.first { $0.name == name }), b = try XCTUnwrap(reports[1].models.first { $0.name == name })
            XCTAssertEqual(try XCTUnwrap(a.perplexity), try XCTUnwrap(b.perplexity), accuracy: 1e-9 * a.perplexity!, name)
            // The KL runs the training decoder on each rank's share, batched by share: where OpenBLAS's
            // sgemm rounds by matrix shape (on this Intel machine's "Prescott" kernels, 1.7e-7
            // relative, also at fddb99f) the figure moves in its float digits, not by an example.
            XCTAssertEqual(try XCTUnwrap(a.heldoutKL), try XCTUnwrap(b.heldoutKL), accuracy: 1e-6 * max(a.heldoutKL!, 1e-12), name)
        }
        XCTAssertGreaterThan(try XCTUnwrap(reports[1].models.first { $0.name == "gptq-w4g32" }?.heldoutKL), 0)
    }
}
