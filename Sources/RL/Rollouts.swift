import Eval
import Foundation
import Model
import Reasoning
import Tensors
import Train

/// How rollouts are drawn and scored (the `rqat rl` sampling and reward options).
package struct RolloutSettings: Codable, Sendable, Equatable {
    /// Prompts per rollout batch (one optimizer step's worth, before `updatesPerBatch`).
    package var prompts = 16
    /// Completions sampled per prompt (G >= 2: advantages are relative to the group).
    package var groupSize = 8
    /// Sampling temperature; the policy of the loss is softmax(logits / temperature).
    package var temperature: Float = 1
    /// Nucleus truncation of the sampler. Below 1 the behaviour policy is the truncated one, while
    /// the loss's old and new policies are the untruncated softmax at the temperature.
    package var topP: Float = 1
    package var maxNewTokens = 64
    package var scaling: RewardScaling = .group
    package var aggregation: LossAggregation = .tokenMean
    /// Truncated completions (no stop token within `maxNewTokens`) carry no loss.
    package var maskTruncated = true
    /// Added to the reward of a completion whose final answer is in the task's format (`#### N`,
    /// lm-evaluation-harness's strict match), right or wrong. 0 = correctness only.
    package var formatReward = 0.0
    /// KL in the reward: each completion's reward loses this times its k1 estimate of
    /// KL(policy || reference), summed over its tokens (needs a reference). 0 = off.
    package var klReward = 0.0

    package init() {}

    enum CodingKeys: String, CodingKey {
        case prompts, temperature, scaling, aggregation
        case groupSize = "group_size", topP = "top_p", maxNewTokens = "max_new_tokens"
        case maskTruncated = "mask_truncated", formatReward = "format_reward", klReward = "kl_reward"
    }
}

/// What one rollout batch was: the reward and length figures a step's log line shows.
package struct RolloutBatchStats: Codable, Sendable, Equatable {
    package var completions: Int
    package var meanReward: Double
    /// Share of completions whose answer is right (the reward without the format term).
    package var accuracy: Double
    package var groups: Int
    /// Groups whose rewards are all equal: advantage 0, no gradient.
    package var zeroAdvantageGroups: Int
    package var meanLength: Double
    package var truncated: Int
    /// Mean over completions of what the KL in the reward took off (0 without it).
    package var meanKLPenalty: Double
    package var seconds: Double

    enum CodingKeys: String, CodingKey {
        case completions, accuracy, groups, truncated, seconds
        case meanReward = "mean_reward", zeroAdvantageGroups = "zero_advantage_groups", meanLength = "mean_length"
        case meanKLPenalty = "mean_kl_penalty"
    }
}

/// A reference policy run on a rollout batch (tokens, targets, mask: rows x seqLen): log pi_ref
/// of each position's target at the sampling temperature (for a KL term or the KL in the
/// reward), and, for a KD term, its top-k distribution at T 1 at every position.
package typealias ReferencePolicy = (_ tokens: [Int], _ targets: [Int], _ mask: [Float], _ rows: Int, _ seqLen: Int)
    -> (logProbs: [Float], teacher: (k: Int, ids: [Int32], logProbs: [Float], tailMass: [Float])?)

/// The reward of one completion: 1 when its final answer (the flexible verdict) equals the
/// gold answer, else 0; plus `formatReward` when the strict `#### N` extraction finds one.
package enum Reward {
    package static func of(completion: String, gold: String, formatReward: Double) -> (reward: Double, correct: Bool) {
        let verdict = AnswerChecker.check(completion: completion, gold: gold)
        return ((verdict.flexibleCorrect ? 1 : 0) + (verdict.strictAnswer != nil ? formatReward : 0), verdict.flexibleCorrect)
    }
}

/// Rollout batches sampled from the policy as it is being trained (its fake-quant weights
/// through `TrainableDecoder.inferenceWeights()`), scored by the answer checker: the trainer's
/// batch source for GRPO.
///
/// Each batch takes the next `prompts` problems of a seeded order (an epoch's permutation, as
/// `SFTBatcher`) and samples `groupSize` completions of each; completion k of the problem with
/// id `p` draws with a seed from (run seed, p, epoch, k), so rollouts do not depend on which
/// process makes them or what else is in the batch. Rows are prompt + completion, padded to
/// `seqLen`; the mask covers the positions that predict completion tokens (the stop token
/// included).
package final class RolloutSource: BatchSource {
    package let problems: [Problem]
    package let settings: RolloutSettings
    package let seqLen: Int
    package var rowsPerBatch: Int { settings.prompts * settings.groupSize }
    package private(set) var position: DataPosition
    /// The figures of the last batch drawn.
    package private(set) var lastStats: RolloutBatchStats?

    private let generator: RolloutGenerator
    private var version = 0
    private let prompted: PromptedModel
    private let prompts: [[Int]]
    private let padId: Int
    private let seed: UInt64
    private let reference: ReferencePolicy?

    /// `format`: the tokenizer, chat template and stop tokens prompts and completions go through
    /// (its decoder is not used: rollouts come from `policy`).
    /// `generator`: where completions are sampled (default: in this process, from `policy`).
    package init(problems: [Problem], policy: TrainableDecoder, format: PromptedModel, settings: RolloutSettings,
                seed: UInt64, position: DataPosition, padId: Int, generator: RolloutGenerator? = nil,
                reference: ReferencePolicy? = nil) throws {
        guard settings.groupSize >= 2 else {
            throw TrainError("--group-size \(settings.groupSize): GRPO compares completions within a group, so it needs at least 2")
        }
        guard !problems.isEmpty else { throw TrainError("no prompts to sample rollouts from") }
        self.problems = problems
        self.generator = generator ?? LocalRollouts(policy: policy, stopTokens: format.stopTokens)
        prompted = format
        prompts = problems.map { format.encode(prompt: $0.prompt) }
        self.settings = settings
        seqLen = prompts.map(\.count).max()! + settings.maxNewTokens
        guard seqLen <= policy.config.maxPositionEmbeddings else {
            throw TrainError("the longest prompt (\(seqLen - settings.maxNewTokens) tokens) plus --max-new-tokens \(settings.maxNewTokens) exceeds the model's \(policy.config.maxPositionEmbeddings) positions; lower --max-new-tokens")
        }
        self.seed = seed
        self.position = position
        self.padId = padId
        self.reference = reference
    }

    /// The sampler's seed of completion `k` of a problem in an epoch.
    package static func samplingSeed(runSeed: UInt64, problemID: String, epoch: Int, sample k: Int) -> UInt64 {
        AccuracyEval.samplingSeed(problemID: problemID, seed: runSeed &+ UInt64(epoch) &* 0x1_0000_0001 &+ UInt64(k) &* 0x9E37)
    }

    package func nextBatch() throws -> SFTBatch {
        let start = Date()
        // The problems of this batch, continuing the epoch's order.
        var chosen: [(index: Int, epoch: Int)] = []
        var order = SFTBatcher.permutation(count: problems.count, seed: seed, epoch: position.epoch)
        while chosen.count < settings.prompts {
            if position.index == problems.count {
                position = DataPosition(epoch: position.epoch + 1, index: 0)
                order = SFTBatcher.permutation(count: problems.count, seed: seed, epoch: position.epoch)
            }
            chosen.append((order[position.index], position.epoch))
            position.index += 1
        }

        let g = settings.groupSize
        let requests = chosen.flatMap { item in
            (0..<g).map { k in
                GenerationRequest(prompt: prompts[item.index], maxNewTokens: settings.maxNewTokens,
                                  sampling: SamplingParams(temperature: settings.temperature, topP: settings.topP,
                                                           seed: Self.samplingSeed(runSeed: seed, problemID: problems[item.index].id,
                                                                                   epoch: item.epoch, sample: k)))
            }
        }
        version += 1
        let results = try generator.generate(requests, version: version)

        let lengths = results.map { settings.maskTruncated && $0.finish == .length ? 0 : $0.tokens.count }
        let rows = requests.count, n = rows * seqLen
        var tokens = [Int](repeating: padId, count: n), targets = [Int](repeating: padId, count: n)
        var mask = [Float](repeating: 0, count: n), behaviour = [Float](repeating: 0, count: n)
        for (row, result) in results.enumerated() {
            let prompt = requests[row].prompt, base = row * seqLen
            for (k, token) in (prompt + result.tokens).enumerated() { tokens[base + k] = token }
            for t in 0..<seqLen - 1 { targets[base + t] = tokens[base + t + 1] }
            guard lengths[row] > 0 else { continue }
            // Position prompt.count - 1 + k predicts completion token k.
            for (k, logProb) in result.logprobs.enumerated() {
                mask[base + prompt.count - 1 + k] = 1
                behaviour[base + prompt.count - 1 + k] = logProb
            }
        }
        let referenced = reference?(tokens, targets, mask, rows, seqLen)
        let referenceLogProbs = referenced?.logProbs

        var rewards: [Double] = [], correct = 0, truncated = 0, penalty = 0.0
        for (row, result) in results.enumerated() {
            let problem = problems[chosen[row / g].index]
            let verdict = Reward.of(completion: prompted.completionText(result.tokens), gold: problem.answer,
                                    formatReward: settings.formatReward)
            var reward = verdict.reward
            // KL in the reward: the completion's k1 estimate of KL(policy || reference), summed
            // over its tokens, costs klReward per nat (a constant of the sample: no gradient).
            if settings.klReward != 0, let ref = referenceLogProbs {
                let kl = (row * seqLen..<(row + 1) * seqLen).reduce(0.0) { $0 + (mask[$1] > 0 ? Double(behaviour[$1] - ref[$1]) : 0) }
                reward -= settings.klReward * kl
                penalty += settings.klReward * kl
            }
            rewards.append(reward)
            if verdict.correct { correct += 1 }
            if result.finish == .length { truncated += 1 }
        }
        let (advantages, zeroGroups) = Advantages.compute(rewards: rewards, groupSize: g, scaling: settings.scaling)
        let perRow = settings.aggregation.coefficients(lengths: lengths, budget: settings.maxNewTokens)
        var advantage = [Float](repeating: 0, count: n), coefficient = [Float](repeating: 0, count: n)
        for t in 0..<n where mask[t] > 0 {
            advantage[t] = Float(advantages[t / seqLen])
            coefficient[t] = Float(perRow[t / seqLen])
        }
        var batch = SFTBatch(rows: rows, seqLen: seqLen, tokens: tokens, targets: targets, lossMask: mask,
                             documentStarts: Array(repeating: [0], count: rows), exampleCount: rows)
        batch.rollout = RolloutTokens(advantages: advantage, coefficients: coefficient, behaviourLogProbs: behaviour,
                                      referenceLogProbs: referenceLogProbs, teacher: referenced?.teacher)
        lastStats = RolloutBatchStats(completions: rows, meanReward: rewards.reduce(0, +) / Double(rows),
                                      accuracy: Double(correct) / Double(rows), groups: chosen.count,
                                      zeroAdvantageGroups: zeroGroups,
                                      meanLength: Double(results.reduce(0) { $0 + $1.tokens.count }) / Double(rows),
                                      truncated: truncated, meanKLPenalty: penalty / Double(rows),
                                      seconds: Date().timeIntervalSince(start))
        return batch
    }
}

/// Rollouts sampled in this process from the policy's current weights (its fake-quant view).
package final class LocalRollouts: RolloutGenerator {
    private let policy: TrainableDecoder
    private let decoder: Decoder
    private let stopTokens: Set<Int>

    package init(policy: TrainableDecoder, stopTokens: Set<Int>) {
        self.policy = policy
        decoder = Decoder(weights: policy.inferenceWeights())
        self.stopTokens = stopTokens
    }

    package func generate(_ requests: [GenerationRequest], version: Int) throws -> [GenerationResult] {
        policy.syncInferenceWeights()
        return Generator(decoder: decoder, stopTokens: stopTokens).generate(requests, maxBatch: requests.count)
    }
}
