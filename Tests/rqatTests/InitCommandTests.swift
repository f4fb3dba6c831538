import Foundation
import XCTest
import TestSupport

/// `rqat init` as a user runs it: a checkpoint `rqat sft` can start from, or one line naming
/// the bad option and nothing written.
final class InitCommandTests: XCTestCase {
    private func run(_ arguments: [String]) throws -> ProcessResult {
        try runProcess(try BuiltProducts.executable("rqat"), arguments)
    }

    func testInitWithTheArithTokenizerWritesACheckpointSFTTrains() throws {
        let dir = try makeScratchDirectory("rqat-init")
        let out = dir.appendingPathComponent("init")
        let r = try run(["init", "--arch", "llama", "--hidden", "32", "--layers", "1", "--intermediate", "128", "--heads", "2",
                         "--tokenizer", "arith", "--max-positions", "128", "--out", out.path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let summary = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let config = summary["config"] as! [String: Any]
        XCTAssertEqual(config["hidden_size"] as? Int, 32)
        XCTAssertEqual(config["vocab_size"] as? Int, 364)
        XCTAssertEqual(summary["tokenizer"] as? String, "arith")
        for file in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path), file)
        }
        // Two optimizer steps of plain-format SFT on task text run from it.
        let data = dir.appendingPathComponent("train.jsonl")
        try #"{"prompt": "Ann has 7 apples. Ann gets 5 more. How many apples does Ann have now?\n", "completion": "7+5=12\n#### 12"}"#
            .appending("\n").write(to: data, atomically: true, encoding: .utf8)
        let sft = try run(["sft", "--model", out.path, "--data", data.path, "--out", dir.appendingPathComponent("run").path,
                           "--format", "plain", "--steps", "2", "--batch-tokens", "128", "--seq-len", "64", "--lr", "1e-3"])
        XCTAssertEqual(sft.status, 0, sft.stderr)
    }

    func testASizeWithoutAHadamardTransformIsOneLineAndWritesNothing() throws {
        let out = try makeScratchDirectory("rqat-init-bad").appendingPathComponent("init")
        let r = try run(["init", "--hidden", "100", "--layers", "1", "--heads", "1", "--tokenizer", "arith", "--out", out.path])
        XCTAssertFalse(r.crashed, r.stderr)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("--hidden 100 has no Hadamard transform"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
        let missing = try run(["init", "--hidden", "64", "--layers", "1", "--tokenizer", "/nonexistent/tokenizer.json", "--out", out.path])
        XCTAssertEqual(missing.status, 1, missing.stderr)
        XCTAssertTrue(missing.stderr.contains("/nonexistent/tokenizer.json"), missing.stderr)
    }
}
