import Foundation
import TestSupport
import XCTest

/// `rqat pipeline` as cluster/launch.sh runs it: 1 teacher + 2 student ranks, then the same
/// command again, which finds every stage unchanged.
final class PipelineCommandTests: XCTestCase {
    func testThreeRanksRunEveryStageAndARerunSkipsThem() throws {
        try TestPaths.require(TestPaths.gsmTemplates)
        let dir = try makeScratchDirectory("rqat-pipeline-cli")
        let file = try TinyModels.writePipeline(in: dir, batchTokens: 2048)
        // One RL run the on-policy check stops after its first step (a tolerance below any
        // rounding): the serving rank is let go and the pipeline goes on to evaluate the rest.
        let rl = """
            "rl": [{"from": "gptq-w4g32+kd", "tag": "stopped", "settings": {"max_logprob_gap": 1e-12}}],
            "rl_train": {"steps": 2, "prompts": 2, "group_size": 2, "max_new_tokens": 6, "mask_truncated": false, "probe": 2,
                         "train_problems": 4},
            "eval": {
            """
        try String(contentsOf: file, encoding: .utf8).replacingOccurrences(of: "\"eval\": {", with: rl)
            .write(to: file, atomically: true, encoding: .utf8)
        let arguments = ["pipeline", "--config", file.path, "--teachers", "1", "--threads", "1", "--assets", TestPaths.assets.path]
        let first = try MPIRun.run(executable: "rqat", ranks: 3, arguments: arguments)
        XCTAssertEqual(first.status, 0, first.output)
        XCTAssertTrue(first.stderr.contains("rank 0 vm teacher") || first.stderr.contains("teacher 0/1"), first.stderr)
        XCTAssertTrue(first.stdout.contains("| gptq-w4g32+kd | w4g32 |"), first.stdout)
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("run/report.json"))) as! [String: Any]
        XCTAssertEqual((report["models"] as? [Any])?.count, 4)
        let curves = try XCTUnwrap(report["rl_curves"] as? [[String: Any]])
        XCTAssertEqual(curves.first?["stopped_by"] as? String, "on-policy check", "\(curves)")
        XCTAssertEqual((curves.first?["steps"] as? [Any])?.count, 1)
        let second = try MPIRun.run(executable: "rqat", ranks: 3, arguments: arguments)
        XCTAssertEqual(second.status, 0, second.output)
        XCTAssertFalse(second.stderr.contains(": running"), second.stderr)
        XCTAssertTrue(second.stderr.contains("stage eval-gptq-w4g32+sft: unchanged, skipped"), second.stderr)
    }
}
