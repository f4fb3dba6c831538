import Foundation
@testable import Pipeline
import TestSupport
import XCTest

/// The whole pipeline in one process (`rqat pipeline`, as a user runs it: MPI must not be
/// initialised inside the test process) on a tiny random teacher. Its answers are nonsense; what
/// is checked is that every stage runs and writes what the next reads, and that a re-run skips
/// them all.
final class PipelineRunTests: XCTestCase {
    func testTheStagesRunAndAnUnchangedRerunSkipsThem() throws {
        try TestPaths.require(TestPaths.gsmTemplates)
        let dir = try makeScratchDirectory("rqat-pipeline")
        let file = try TinyModels.writePipeline(in: dir, extraPTQ: ", {\"method\": \"rtn\", \"scheme\": \"w4g32\", \"evaluate\": false}")
        let arguments = ["pipeline", "--config", file.path, "--threads", "1", "--assets", TestPaths.assets.path]
        func run() throws -> PipelineReport {
            let result = try MPIRun.run(executable: "rqat", ranks: nil, arguments: arguments)
            XCTAssertEqual(result.status, 0, result.output)
            return try JSONDecoder().decode(PipelineReport.self, from: Data(contentsOf: dir.appendingPathComponent("run/report.json")))
        }
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
            XCTAssertEqual(try XCTUnwrap(a.heldoutKL), try XCTUnwrap(b.heldoutKL), accuracy: 1e-9 * max(a.heldoutKL!, 1e-12), name)
        }
        XCTAssertGreaterThan(try XCTUnwrap(reports[1].models.first { $0.name == "gptq-w4g32" }?.heldoutKL), 0)
    }
}
