import Foundation
import Formats
import Tensors
import TestSupport
import XCTest

/// `rqat rl` under mpirun, as a user runs it: serving ranks sample the rollouts from the policy
/// the lead student sends them, students train data-parallel.
/// - Given the same rollouts (recorded by the served run, replayed by one process), 1 serving
///   rank + 2 students train the same weights after 3 steps as one process (1e-5 relative).
/// - Rollouts are seeded per problem and sample: one process sampling them itself, and 2 serving
///   ranks splitting each batch between them, make the same completions.
/// - The serving rank's log-probabilities equal the students' recomputed ones within 1e-4 (the
///   on-policy check).
/// - With `--max-lag 1` the serving ranks sample batch b+1 while the students train on b; one
///   process with the same lag trains the same weights.
final class DistributedRLTests: XCTestCase {
    var dir: URL!

    func rqat(_ arguments: [String], ranks: Int? = nil) throws -> ProcessResult {
        let result = try MPIRun.run(executable: "rqat", ranks: ranks, arguments: arguments)
        XCTAssertEqual(result.status, 0, result.output)
        return result
    }

    /// A tiny arith model that has seen the task's format (so some answers are right and some
    /// wrong), quantized by RTN at W4G32: the grid RL keeps. A completion that reaches `#### N`
    /// within the budget earns 0.5 (`--format-reward`), so groups differ even when no answer is right.
    override func setUpWithError() throws {
        continueAfterFailure = false
        dir = try makeScratchDirectory("rqat-rl-dist")
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        _ = try rqat(["init", "--arch", "llama", "--hidden", "32", "--layers", "1", "--intermediate", "128", "--heads", "2",
                      "--tokenizer", "arith", "--max-positions", "128", "--out", path("init")])
        _ = try rqat(["data", "arith", "--split", "train", "--count", "256", "--out", path("train.jsonl")])
        _ = try rqat(["sft", "--model", path("init"), "--data", path("train.jsonl"), "--out", path("sft"), "--format", "plain",
                      "--steps", "60", "--batch-tokens", "1024", "--seq-len", "128", "--lr", "3e-3", "--threads", "1"])
        _ = try rqat(["ptq", "--model", path("sft/checkpoint-000060"), "--scheme", "w4g32", "--method", "rtn", "--out", path("ptq"),
                      "--threads", "1"])
    }

    func rlArguments(out: String) -> [String] {
        ["rl", "--policy", dir.appendingPathComponent("ptq").path, "--qat", "w4g32", "--task", "arith",
         "--out", dir.appendingPathComponent(out).path, "--steps", "3", "--prompts", "4", "--group-size", "4",
         "--max-new-tokens", "24", "--no-mask-truncated", "--format-reward", "0.5", "--lr", "3e-3", "--probe", "4", "--train-problems", "16",
         "--save-every", "3", "--threads", "1"]
    }

    struct Step: Decodable {
        struct Rollouts: Decodable {
            let mean_reward: Double; let zero_advantage_groups: Int; let groups: Int; let mean_length: Double
            let lag: Int; let dropped_stale: Int
        }
        let step: Int
        let rollouts: Rollouts
        let logprob_gap_max: Double
    }

    func steps(_ out: String) throws -> [Step] {
        try String(contentsOf: dir.appendingPathComponent("\(out)/rl-metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n").map { try JSONDecoder().decode(Step.self, from: Data($0.utf8)) }
    }

    func weights(_ out: String) throws -> SafeTensorsFile {
        try SafeTensorsFile(url: dir.appendingPathComponent("\(out)/checkpoint-000003/model.safetensors"))
    }

    /// A line of a --record-rollouts file.
    struct Recorded: Decodable { let seeds: [UInt64]; let tokens: [[Int]]; let logprobs: [[Float]] }

    func recorded(_ name: String) throws -> [Recorded] {
        try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(Recorded.self, from: Data($0.utf8)) }
    }

    func testServedRolloutsMatchOneProcess() throws {
        let record = dir.appendingPathComponent("served.jsonl").path
        let served = try rqat(rlArguments(out: "served") + ["--teachers", "1", "--record-rollouts", record], ranks: 3)
        XCTAssertTrue(served.stderr.contains("policy sync: 3 syncs"), served.stderr)
        XCTAssertEqual(try recorded("served.jsonl").count, 3, "the lead recorded every batch")
        _ = try rqat(rlArguments(out: "replayed") + ["--replay-rollouts", record])
        _ = try rqat(rlArguments(out: "single"))
        let split = dir.appendingPathComponent("split.jsonl").path
        _ = try rqat(rlArguments(out: "split") + ["--teachers", "2", "--record-rollouts", split], ranks: 3)

        let one = try steps("single"), three = try steps("served")
        XCTAssertEqual(one.map(\.step), [1, 2, 3])
        XCTAssertTrue(one.contains { $0.rollouts.zero_advantage_groups < $0.rollouts.groups }, "some group has a gradient")
        for s in three { XCTAssertLessThan(s.logprob_gap_max, 1e-4, "step \(s.step): serving rank against students") }
        XCTAssertEqual(try steps("replayed").map(\.rollouts.mean_reward), three.map(\.rollouts.mean_reward))
        XCTAssertLessThan(try maxRelativeDifference(try weights("served"), try weights("replayed")), 1e-5,
                          "weights after 3 steps on the same rollouts: served and data-parallel against one process")

        // Where a completion is sampled does not change it.
        XCTAssertEqual(three.map(\.rollouts.mean_reward), one.map(\.rollouts.mean_reward), "one process sampling itself")
        XCTAssertEqual(three.map(\.rollouts.mean_length), one.map(\.rollouts.mean_length))
        for (a, b) in zip(try recorded("served.jsonl"), try recorded("split.jsonl")) {
            XCTAssertEqual(a.seeds, b.seeds)
            XCTAssertEqual(a.tokens, b.tokens, "2 serving ranks, each with half of the batch")
            for (x, y) in zip(a.logprobs.joined(), b.logprobs.joined()) { XCTAssertEqual(x, y, accuracy: 1e-4) }
        }
        XCTAssertLessThan(try maxRelativeDifference(try weights("split"), try weights("served")), 1e-5)
    }

    func testLaggedRolloutsOverlapTrainingAndMatchOneProcess() throws {
        _ = try rqat(rlArguments(out: "served-lag") + ["--teachers", "1", "--max-lag", "1"], ranks: 3)
        _ = try rqat(rlArguments(out: "single-lag") + ["--max-lag", "1"])
        let served = try steps("served-lag"), single = try steps("single-lag")
        XCTAssertEqual(served.map(\.rollouts.lag), [0, 1, 1], "batch b+1 is sampled before the update on b")
        XCTAssertEqual(served.map(\.rollouts.dropped_stale), [0, 0, 0])
        XCTAssertEqual(served.map(\.rollouts.mean_reward), single.map(\.rollouts.mean_reward))
        XCTAssertLessThan(try maxRelativeDifference(try weights("served-lag"), try weights("single-lag")), 1e-5)
    }
}
