import Bench
import Eval
import Foundation
import Reasoning
import TestSupport
import XCTest

final class EvalBenchTests: XCTestCase {
    func testRecordIsTheRatioOfTheMediansAndPrintsAsJSON() throws {
        let dir = try makeScratchDirectory("rqat-evalbench")
        try TinyModels.writeModel(at: dir, seed: 2, maxPositions: 256)
        let problems = (0..<3).map { Problem(id: "\($0)", prompt: "What is \($0) + 1?", completion: "", answer: "\($0 + 1)") }
        var options = EvalBench.Options()
        options.settings = AccuracySettings(seeds: [1], temperature: 1, topP: 0.95, maxTokens: 4, batch: 2)
        options.repeats = 2
        options.decodeTokens = 4
        let r = try EvalBench(model: dir.path, problems: problems).run(options)
        XCTAssertEqual(r.problems, 3)
        XCTAssertEqual(r.seeds, "1")
        XCTAssertEqual(r.ratio, r.evalTokensPerS / r.decodeBatch1TokensPerS, accuracy: 1e-9)
        XCTAssertLessThanOrEqual(r.evalTokensPerSMin, r.evalTokensPerS)
        XCTAssertGreaterThan(r.meanCompletionTokens, 0)
        XCTAssertLessThanOrEqual(r.meanCompletionTokens, 4)
        let line = try JSONSerialization.jsonObject(with: Data(r.jsonLine().utf8)) as! [String: Any]
        XCTAssertEqual(line["name"] as? String, "eval_speed")
        XCTAssertNotNil(line["decode_batch1_tokens_per_s"])
    }
}
