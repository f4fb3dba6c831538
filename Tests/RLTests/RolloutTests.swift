import Eval
import Formats
import Foundation
import Model
import Quant
import Reasoning
import RL
import Tensors
import TestSupport
import Train
import XCTest

/// Rollout batches from a tiny random policy under fake quantization: the layout the loss reads,
/// the on-policy check (the sampler's log-probabilities equal the trainer's recomputed ones), and
/// GRPO's first update (ratio 1, nothing clipped).
final class RolloutTests: XCTestCase {
    struct Policy {
        let decoder: TrainableDecoder
        let format: PromptedModel
    }

    func makePolicy(scheme: String? = "w4g16") throws -> Policy {
        let tokenizer = try BPETokenizer(tokenizerJSON: TestPaths.fixture("tiny-tokenizer/tokenizer.json"))
        let config = ModelConfig(modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: tokenizer.vocabSize,
                                 maxPositionEmbeddings: 256, tieWordEmbeddings: true)
        let decoder = TrainableDecoder(config: config, seed: 21)
        if let scheme {
            decoder.weightQuantizer = try FakeQuantizer(decoder: decoder, scheme: try QuantScheme.parse(scheme), mode: .ste)
        }
        let format = PromptedModel(decoder: Decoder(weights: decoder.inferenceWeights()), tokenizer: tokenizer,
                                   chatTemplate: .chatML, stopTokens: LanguageModel.stopTokens(tokenizer: tokenizer, config: config),
                                   chat: false)
        return Policy(decoder: decoder, format: format)
    }

    static let problems = (0..<6).map { i in
        Problem(id: "p\(i)", prompt: "Tom has \(i + 2) apples and gets \(i + 1) more. How many now?\n",
                completion: "\(i + 2)+\(i + 1)=\(2 * i + 3)\n#### \(2 * i + 3)", answer: "\(2 * i + 3)")
    }

    func settings() -> RolloutSettings {
        var s = RolloutSettings()
        s.prompts = 2
        s.groupSize = 3
        s.temperature = 0.9
        s.maxNewTokens = 12
        // A random policy rarely stops within 12 tokens: let truncated completions count.
        s.maskTruncated = false
        return s
    }

    func testBatchLayoutAndOnPolicyLogProbs() throws {
        let policy = try makePolicy()
        let source = try RolloutSource(problems: Self.problems, policy: policy.decoder, format: policy.format,
                                       settings: settings(), seed: 5, position: DataPosition(), padId: 0)
        let batch = try source.nextBatch()
        let rollout = try XCTUnwrap(batch.rollout)
        XCTAssertEqual(batch.rows, 6)
        XCTAssertEqual(source.position, DataPosition(epoch: 0, index: 2))
        let stats = try XCTUnwrap(source.lastStats)
        XCTAssertEqual(stats.groups, 2)
        XCTAssertEqual(stats.completions, 6)

        // Masked positions are exactly the completion's predictions, row by row, and carry their
        // completion's coefficient (token-mean: 1 / all loss tokens).
        let n = batch.rows * batch.seqLen
        let lossTokens = batch.lossMask.reduce(0) { $0 + Int($1) }
        XCTAssertGreaterThan(lossTokens, 0)
        for t in 0..<n where batch.lossMask[t] > 0 {
            XCTAssertEqual(batch.targets[t], batch.tokens[t + 1])
            XCTAssertEqual(rollout.coefficients[t], 1 / Float(lossTokens), accuracy: 1e-7)
        }
        for row in 0..<batch.rows {
            let masked = (0..<batch.seqLen).filter { batch.lossMask[row * batch.seqLen + $0] > 0 }
            XCTAssertEqual(masked.count, 12, "row \(row): every completion token, the last one included")
            if let first = masked.first { XCTAssertEqual(masked, Array(first..<first + masked.count), "row \(row): contiguous") }
        }

        // The sampler's log-probabilities (decode kernels, KV cache) against the training forward's
        // on the same fake-quant weights: the on-policy check of the issue, within 1e-4.
        let logits = policy.decoder.forward(tokens: batch.tokens, batch: batch.rows, length: batch.seqLen)
        let recomputed = GRPOLoss.logProbs(logits: logits.ptr, vocab: policy.decoder.config.vocabSize, targets: batch.targets,
                                           mask: batch.lossMask, temperature: 0.9)
        var worst: Float = 0
        for t in 0..<n where batch.lossMask[t] > 0 { worst = max(worst, abs(recomputed[t] - rollout.behaviourLogProbs[t])) }
        XCTAssertLessThan(worst, 1e-4, "largest |sampler - trainer| log-prob gap")
    }

    func testRolloutsDependOnlyOnSeedProblemAndSample() throws {
        let a = try makePolicy(), b = try makePolicy()
        var wide = settings()
        wide.prompts = 4
        let one = try RolloutSource(problems: Self.problems, policy: a.decoder, format: a.format, settings: wide,
                                    seed: 5, position: DataPosition(), padId: 0).nextBatch()
        // Two batches of 2 prompts: the same problems in the same order, so the same rows.
        let source = try RolloutSource(problems: Self.problems, policy: b.decoder, format: b.format, settings: settings(),
                                       seed: 5, position: DataPosition(), padId: 0)
        let first = try source.nextBatch(), second = try source.nextBatch()
        let rows = (first.tokens + second.tokens)
        XCTAssertEqual(first.seqLen, one.seqLen)
        XCTAssertEqual(rows, one.tokens, "a completion's tokens depend on its seed, problem and sample index alone")
    }

    func testFirstUpdateHasRatioOneAndGroupsWithOneRewardAddNothing() throws {
        let policy = try makePolicy()
        let source = try RolloutSource(problems: Self.problems, policy: policy.decoder, format: policy.format,
                                       settings: settings(), seed: 5, position: DataPosition(), padId: 0)
        let batch = try source.nextBatch()
        var options = GRPOLoss.Options()
        options.temperature = 0.9   // the sampler's: the gap below would show a mismatch
        let objective = GRPOObjective(options: options, updatesPerBatch: 2)
        let logits = policy.decoder.forward(tokens: batch.tokens, batch: batch.rows, length: batch.seqLen)
        _ = try objective.lossAndGradient(batch, id: 0, logits: logits, vocab: policy.decoder.config.vocabSize, normalizer: 1)
        let (stats, gap) = objective.takeStepStats()
        XCTAssertEqual(stats.clipped, 0)
        XCTAssertEqual(stats.maxRatioGap, 0, "the old policy of the first update is the policy itself")
        XCTAssertLessThan(gap.max, 1e-4)
        XCTAssertEqual(gap.above[1], 0)
        var counted = BehaviourGap()
        for g in [0, 5e-5, 0.5, 2] { counted.add(g) }
        XCTAssertEqual(counted.above, [3, 2, 2, 1], "tokens past 1e-6, 1e-4, 1e-2, 1")
        XCTAssertEqual(counted.max, 2)
        XCTAssertEqual(counted.tokens, 4)
        // A position without advantage (its group's rewards all equal) or without loss gets a zero
        // gradient row.
        let rollout = try XCTUnwrap(batch.rollout), v = policy.decoder.config.vocabSize
        var zeroRows = 0
        for t in 0..<batch.rows * batch.seqLen where batch.lossMask[t] == 0 || rollout.advantages[t] == 0 {
            XCTAssertTrue((0..<v).allSatisfy { logits.ptr[t * v + $0] == 0 }, "position \(t)")
            zeroRows += 1
        }
        XCTAssertGreaterThan(zeroRows, 0)
    }

    /// KL in the reward: with a reference c nats below the policy on every sampled token, each
    /// completion's k1 sum is c x its length, and its reward (so, with `--scale-rewards none`,
    /// its advantage) loses klReward x c x length.
    func testKLInTheRewardCostsEachCompletionItsSummedKL() throws {
        let c: Float = 0.25, beta = 0.1
        func batch(klReward: Double) throws -> (SFTBatch, RolloutBatchStats) {
            let policy = try makePolicy()
            var s = settings()
            s.scaling = .none
            s.klReward = klReward
            let decoder = policy.decoder
            let source = try RolloutSource(problems: Self.problems, policy: decoder, format: policy.format, settings: s,
                                           seed: 5, position: DataPosition(), padId: 0,
                                           reference: { tokens, targets, mask, rows, seqLen in
                let logits = decoder.forward(tokens: tokens, batch: rows, length: seqLen)
                return (GRPOLoss.logProbs(logits: logits.ptr, vocab: decoder.config.vocabSize, targets: targets, mask: mask,
                                          temperature: 0.9).map { $0 - c }, nil)
            })
            return (try source.nextBatch(), try XCTUnwrap(source.lastStats))
        }
        let (plain, plainStats) = try batch(klReward: 0), (penalised, stats) = try batch(klReward: beta)
        XCTAssertEqual(plain.tokens, penalised.tokens, "the same rollouts")
        XCTAssertEqual(plainStats.meanKLPenalty, 0)
        XCTAssertEqual(stats.meanKLPenalty, beta * Double(c) * 12, accuracy: 1e-4, "12 tokens per completion")
        // Every completion has 12 tokens, so the penalty is the same within a group: the
        // advantages do not move.
        let a = try XCTUnwrap(plain.rollout).advantages, b = try XCTUnwrap(penalised.rollout).advantages
        for t in a.indices { XCTAssertEqual(a[t], b[t], accuracy: 1e-4) }
        XCTAssertEqual(stats.meanReward, plainStats.meanReward - beta * Double(c) * 12, accuracy: 1e-4)
    }

    func testGroupSizeBelowTwoIsRefused() throws {
        let policy = try makePolicy()
        var s = settings()
        s.groupSize = 1
        XCTAssertThrowsError(try RolloutSource(problems: Self.problems, policy: policy.decoder, format: policy.format,
                                               settings: s, seed: 5, position: DataPosition(), padId: 0)) { error in
            XCTAssertTrue("\(error)".contains("--group-size 1"), "\(error)")
        }
    }
}
