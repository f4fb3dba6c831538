import Foundation
import TestSupport
import XCTest

/// `rqat eval` and `rqat data` as a user runs them: results under mpirun equal one process that
/// forms the same batches (`--shares`), and bad input gets one line and a non-zero exit.
final class EvalCommandTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        try TestPaths.require(TestPaths.gsmTemplates)
        dir = try makeScratchDirectory("rqat-eval")
        try TinyModels.writeModel(at: dir.appendingPathComponent("model"), seed: 5, maxPositions: 1024)
    }

    func evalArguments(out: String, extra: [String] = []) -> [String] {
        ["eval", "--model", dir.appendingPathComponent("model").path, "--task", "gsm8k", "--limit", "5", "--seeds", "1,2",
         "--temperature", "1", "--max-tokens", "6", "--batch", "2", "--threads", "1", "--assets", TestPaths.assets.path,
         "--out", dir.appendingPathComponent(out).path, "--json"] + extra
    }

    func testUnderMPIEqualsOneProcessWithTheSameShares() throws {
        let one = try MPIRun.run(executable: "rqat", ranks: nil, arguments: evalArguments(out: "one.jsonl", extra: ["--shares", "2"]))
        XCTAssertEqual(one.status, 0, one.output)
        let two = try MPIRun.run(executable: "rqat", ranks: 2, arguments: evalArguments(out: "two.jsonl"))
        XCTAssertEqual(two.status, 0, two.output)
        let a = try Data(contentsOf: dir.appendingPathComponent("one.jsonl")), b = try Data(contentsOf: dir.appendingPathComponent("two.jsonl"))
        XCTAssertEqual(a.split(separator: 0x0A).count, 10, "5 problems x 2 seeds")
        XCTAssertEqual(a, b, "the same jobs in the same batches give the same file")
        let summary = try JSONSerialization.jsonObject(with: Data(one.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(summary["problems"] as? Int, 5)
        XCTAssertNotNil((summary["strict"] as? [String: Any])?["per_seed"])
    }

    func testBadInputGetsOneLine() throws {
        func failure(_ arguments: [String]) throws -> String {
            let r = try MPIRun.run(executable: "rqat", ranks: nil, arguments: arguments)
            XCTAssertNotEqual(r.status, 0, r.output)
            let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("error") }
            XCTAssertEqual(lines.count, 1, r.stderr)
            return String(lines.first ?? "")
        }
        var args = evalArguments(out: "x.jsonl")
        args[args.firstIndex(of: "gsm8k")!] = "gsm9k"
        XCTAssertTrue(try failure(args).contains("unknown task \"gsm9k\"; the tasks are"))
        let unwritable = evalArguments(out: "x.jsonl").map { $0.hasSuffix("x.jsonl") ? "/proc/rqat/x.jsonl" : $0 }
        XCTAssertTrue(try failure(unwritable).contains("/proc/rqat/x.jsonl cannot be written"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("x.jsonl").path))
        // A vocabulary smaller than the tokenizer's ids: embeddings the prompts need do not exist.
        try TinyModels.writeModel(at: dir.appendingPathComponent("small"), seed: 5, vocabOverride: 40, maxPositions: 1024)
        let small = evalArguments(out: "y.jsonl").map { $0.hasSuffix("/model") ? dir.appendingPathComponent("small").path : $0 }
        let message = try failure(small)
        XCTAssertTrue(message.contains("beyond the model's vocabulary") || message.contains("vocab"), message)
    }

    func testDataWritesTheRecords() throws {
        let out = dir.appendingPathComponent("d.jsonl")
        let r = try MPIRun.run(executable: "rqat", ranks: nil, arguments: ["data", "gsm-symbolic", "--split", "train", "--count", "3",
                                                                            "--seed", "4", "--out", out.path, "--assets", TestPaths.assets.path])
        XCTAssertEqual(r.status, 0, r.output)
        let lines = try Data(contentsOf: out).split(separator: 0x0A)
        XCTAssertEqual(lines.count, 3)
        let first = try JSONSerialization.jsonObject(with: Data(lines[0])) as! [String: Any]
        for key in ["id", "prompt", "completion", "answer", "template", "bindings"] { XCTAssertNotNil(first[key], key) }
    }
}
