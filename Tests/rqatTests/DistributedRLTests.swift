import Foundation
import Formats
import Tensors
import TestSupport
import XCTest

/// `rqat rl` under mpirun, as a user runs it: 1 serving rank samples the rollouts from the
/// policy the lead student sends it after every update, 2 students train data-parallel. With one
/// serving rank the rollout batches are formed as in one process (same requests, same batch,
/// seeds per problem and sample), so the runs see the same rollouts: the rewards agree step by
/// step, the serving rank's log-probabilities equal the students' recomputed ones within 1e-4
/// (the on-policy check), and the weights after 3 steps agree with one process within 1e-5.
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
        struct Rollouts: Decodable { let mean_reward: Double; let zero_advantage_groups: Int; let groups: Int; let mean_length: Double }
        let step: Int
        let rollouts: Rollouts
        let logprob_gap_max: Double
    }

    func steps(_ out: String) throws -> [Step] {
        try String(contentsOf: dir.appendingPathComponent("\(out)/rl-metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n").map { try JSONDecoder().decode(Step.self, from: Data($0.utf8)) }
    }

    func testServedRolloutsMatchOneProcess() throws {
        _ = try rqat(rlArguments(out: "single"))
        let served = try rqat(rlArguments(out: "served") + ["--teachers", "1"], ranks: 3)
        XCTAssertTrue(served.stderr.contains("policy sync: 3 syncs"), served.stderr)

        let one = try steps("single"), three = try steps("served")
        XCTAssertEqual(one.map(\.step), [1, 2, 3])
        XCTAssertEqual(three.map(\.rollouts.mean_reward), one.map(\.rollouts.mean_reward))
        XCTAssertEqual(three.map(\.rollouts.mean_length), one.map(\.rollouts.mean_length))
        XCTAssertTrue(one.contains { $0.rollouts.zero_advantage_groups < $0.rollouts.groups }, "some group has a gradient")
        for s in three { XCTAssertLessThan(s.logprob_gap_max, 1e-4, "step \(s.step): serving rank against students") }

        func weights(_ out: String) throws -> SafeTensorsFile {
            try SafeTensorsFile(url: dir.appendingPathComponent("\(out)/checkpoint-000003/model.safetensors"))
        }
        XCTAssertLessThan(try maxRelativeDifference(try weights("served"), try weights("single")), 1e-5,
                          "weights after 3 steps, served and data-parallel against one process")
    }
}
