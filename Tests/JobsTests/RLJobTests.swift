import Foundation
import Formats
@testable import Jobs
import Quant
import Reasoning
import RL
import Tensors
import TestSupport
import Train
import XCTest

/// `rqat rl` as a library job on a tiny random Qwen3 (which answers nothing right): the
/// cold-start gate, `--force`, the per-step records and the refusals before any work.
final class RLJobTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try makeScratchDirectory("rqat-rl-job")
        try TinyModels.writeModel(at: dir.appendingPathComponent("policy"), seed: 3, headDim: 32, maxPositions: 256)
    }

    /// A task whose answers are words: no completion's number can match them.
    struct WordTask: ReasoningTask {
        var name: String { "words" }
        func problems(split: Split, count: Int, seed: UInt64) throws -> [Problem] {
            (0..<count).map { Problem(id: "w\($0)", prompt: "Name a fruit.\n", completion: "banana", answer: "banana") }
        }
    }

    func job(task: any ReasoningTask = ArithTask.default, reference: String? = nil, out: String = "rl",
             configure: (inout RLSettings) -> Void = { _ in }) -> RLJob {
        var settings = RLSettings()
        settings.rollout.prompts = 2
        settings.rollout.groupSize = 2
        settings.rollout.maxNewTokens = 8
        // A random policy rarely stops within 8 tokens: let truncated completions count.
        settings.rollout.maskTruncated = false
        settings.probeProblems = 4
        configure(&settings)
        var options = TrainOptions()
        options.steps = 2
        options.lr = 1e-3
        options.saveEvery = 1
        options.keepLast = 4
        var job = RLJob(policy: dir.appendingPathComponent("policy").path, reference: reference, task: task,
                        qat: try! QuantScheme.parse("w4g32"), settings: settings, options: options,
                        runDir: dir.appendingPathComponent(out))
        job.trainProblems = 8
        return job
    }

    func testGateStopsANonViableStartBeforeAnyUpdate() throws {
        let gated = job { $0.minStartReward = 0.5 }
        XCTAssertThrowsError(try gated.run { _ in }) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("--min-start-reward 0.500") && text.contains("KD-QAT") && text.contains("--force"), text)
        }
        XCTAssertTrue(TrainCheckpoint.checkpoints(in: dir.appendingPathComponent("rl")).isEmpty, "no update was made")
    }

    func testForcedRunRecordsEveryStepAndExportsThePolicy() throws {
        var lines: [String] = []
        let summary = try job { $0.minStartReward = 0.5; $0.force = true }.run { lines.append($0) }
        XCTAssertEqual(summary.steps.map(\.step), [1, 2])
        XCTAssertEqual(summary.startReward, 0)
        XCTAssertTrue(lines.contains { $0.hasPrefix("warning: ") && $0.contains("--force given") }, "\(lines)")
        for record in summary.steps {
            XCTAssertEqual(record.rollouts.completions, 4)
            XCTAssertEqual(record.rollouts.groups, 2)
            XCTAssertLessThan(record.logProbGapMax, 1e-4, "rollouts are sampled from the policy's own fake-quant weights")
            let above = try XCTUnwrap(record.logProbGapAbove)
            XCTAssertEqual(above.count, BehaviourGap.thresholds.count)
            XCTAssertEqual(above[1...].max(), 0, "no token's gap passes 1e-4 when the largest does not")
            XCTAssertTrue(above.allSatisfy { (0...1).contains($0) }, "\(above)")
            XCTAssertGreaterThan(record.entropy, 0)
            XCTAssertEqual(record.clipFraction, 0, "one update per batch: ratio 1")
        }
        let metrics = try String(contentsOf: dir.appendingPathComponent("rl/rl-metrics.jsonl"), encoding: .utf8)
        XCTAssertEqual(metrics.split(separator: "\n").count, 2)
        XCTAssertNotNil(try Checkpoint.open(dir.appendingPathComponent("rl/quantized").path))
    }

    func testBadInputsAreRefusedBeforeAnyWork() throws {
        try TinyModels.writeModel(at: dir.appendingPathComponent("other-vocab"), seed: 4, vocabOverride: 300, headDim: 32, maxPositions: 256)
        let cases: [(RLJob, String)] = [
            (job(reference: dir.appendingPathComponent("other-vocab").path, configure: { $0.loss.klCoefficient = 0.1 }), "--reference"),
            (job { $0.rollout.groupSize = 1 }, "--group-size 1"),
            (job(task: WordTask()), "--task words"),
            (job { $0.loss.klCoefficient = 0.1 }, "--kl-coef"),
            (job { $0.rollout.klReward = 0.1 }, "--kl-reward"),
            (job { $0.kdCoefficient = 0.1 }, "--kd-coef"),
            (job { $0.rollout.maxLag = -1 }, "--max-lag -1"),
            (job { $0.loss.tisCap = 0 }, "--tis-cap"),
        ]
        for (bad, option) in cases {
            var lines: [String] = []
            XCTAssertThrowsError(try bad.run { lines.append($0) }) { error in
                XCTAssertTrue("\(error)".contains(option), "\(option): \(error)")
            }
            XCTAssertFalse(lines.contains { $0.hasPrefix("probe:") }, "\(option): refused before the probe")
        }
    }

    /// The on-policy check stops the run when the sampler and the trainer disagree by more than
    /// the tolerance (here set below the rounding of the two paths, so it trips).
    func testALogProbGapAboveTheToleranceStopsTheRun() throws {
        XCTAssertThrowsError(try job { $0.maxLogProbGap = 1e-12 }.run { _ in }) { error in
            XCTAssertTrue("\(error)".contains("--max-logprob-gap 1e-12"), "\(error)")
            XCTAssertEqual((error as? RLRunStopped)?.by, .onPolicy, "\(error)")
            XCTAssertEqual((error as? RLRunStopped)?.step, 1)
        }
        let lagged = try job { $0.maxLogProbGap = 1e-12; $0.rollout.maxLag = 1 }.run { _ in }
        XCTAssertEqual(lagged.steps.map(\.rollouts.lag), [0, 1], "with a lag the gap measures the update, not a mismatch")
    }

    /// The on-policy tolerance's default follows the scheme: activation or KV bits loosen it, 4-bit more.
    func testTheGapToleranceDefaultFollowsTheScheme() throws {
        XCTAssertEqual(RLSettings.defaultMaxLogProbGap(nil), 1e-4)
        XCTAssertEqual(RLSettings.defaultMaxLogProbGap(try QuantScheme.parse("w3g128")), 1e-4)
        XCTAssertEqual(RLSettings.defaultMaxLogProbGap(try QuantScheme.parse("w4a4kv4")), 0.1)
        XCTAssertEqual(RLSettings.defaultMaxLogProbGap(try QuantScheme.parse("w3g128a8")), 1e-2)
        let options = RLOptions()
        XCTAssertEqual(options.job(policy: "p", reference: nil, task: ArithTask.default, qat: try QuantScheme.parse("w4a8kv8"),
                                   runDir: dir).settings.maxLogProbGap, 1e-2)
    }
}
