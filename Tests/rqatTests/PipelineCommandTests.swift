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
