import Foundation
import TestSupport
import XCTest

/// `rqat pipeline` as cluster/launch.sh runs it: 1 teacher + 2 student ranks, then the same
/// command again, which finds every stage unchanged.
final class PipelineCommandTests: XCTestCase {
    func testThreeRanksRunEveryStageAndARerunSkipsThem() throws {
        try TestPaths.require(TestPaths.gsmTemplates)
        let dir = try makeScratchDirectory("rqat-pipeline-cli")
        try TinyModels.writeModel(at: dir.appendingPathComponent("teacher"), seed: 11, headDim: 32, maxPositions: 1024)
        let config = """
            {"out": "run", "task": {"name": "gsm8k", "trace_prompts": 6, "heldout": 3, "test": 4},
             "teacher": {"model": "teacher"},
             "traces": {"temperature": 0, "max_tokens": 6},
             "calibration": [{"name": "traces", "source": "traces", "windows": 4, "length": 32}],
             "ptq": [{"method": "gptq", "scheme": "w4g32"}],
             "qat": [{"from": "gptq-w4g32", "objective": "kd"}, {"from": "gptq-w4g32", "objective": "sft"}],
             "qat_train": {"steps": 2, "batch_tokens": 2048, "seq_len": 1024, "lr": 1e-3, "curve_every": 1},
             "eval": {"max_tokens": 6, "batch": 2, "curve_problems": 2}}
            """
        let file = dir.appendingPathComponent("config.json")
        try Data(config.utf8).write(to: file)
        let arguments = ["pipeline", "--config", file.path, "--teachers", "1", "--threads", "1", "--assets", TestPaths.assets.path]
        let first = try MPIRun.run(executable: "rqat", ranks: 3, arguments: arguments)
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.stderr.contains("rank 0 vm teacher") || first.stderr.contains("teacher 0/1"), first.stderr)
        XCTAssertTrue(first.stdout.contains("| gptq-w4g32+kd | w4g32 |"), first.stdout)
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("run/report.json"))) as! [String: Any]
        XCTAssertEqual((report["models"] as? [Any])?.count, 4)
        let second = try MPIRun.run(executable: "rqat", ranks: 3, arguments: arguments)
        XCTAssertEqual(second.status, 0, second.output)
        XCTAssertFalse(second.stderr.contains(": running"), second.stderr)
        XCTAssertTrue(second.stderr.contains("stage eval-gptq-w4g32+sft: unchanged, skipped"), second.stderr)
    }
}
