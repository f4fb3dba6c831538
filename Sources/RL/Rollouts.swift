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
    /// Rollout batches sampled ahead of training (asynchronous rollouts): batch b is sampled by
    /// the policy `maxLag` versions before the one it trains, while the trainer works on the
    /// batches before it. A completion from an older policy than that is dropped with its group.
    /// 0 = synchronous (on-policy).
    package var maxLag = 0

    package init() {}

    enum CodingKeys: String, CodingKey {
        case prompts, temperature, scaling, aggregation
        case groupSize = "group_size", topP = "top_p", maxNewTokens = "max_new_tokens"
        case maskTruncated = "mask_truncated", formatReward = "format_reward", klReward = "kl_reward"
        case maxLag = "max_lag"
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
    /// The largest lag (policy versions between sampling and training) of the batch's completions.
    package var lag = 0
    /// Completions dropped, with their groups, for a lag above `maxLag` (they carry no loss).
    package var droppedStale = 0
    /// Seconds the trainer spent drawing the batch: the sampling it waited for, and the scoring.
    package var seconds: Double

    enum CodingKeys: String, CodingKey {
        case completions, accuracy, groups, truncated, seconds, lag
        case meanReward = "mean_reward", zeroAdvantageGroups = "zero_advantage_groups", meanLength = "mean_length"
        case meanKLPenalty = "mean_kl_penalty", droppedStale = "dropped_stale"
    }

    package init(completions: Int, meanReward: Double, accuracy: Double, groups: Int, zeroAdvantageGroups: Int,
                 meanLength: Double, truncated: Int, meanKLPenalty: Double, lag: Int = 0, droppedStale: Int = 0, seconds: Double) {
        self.completions = completions
        self.meanReward = meanReward
        self.accuracy = accuracy
        self.groups = groups
        self.zeroAdvantageGroups = zeroAdvantageGroups
        self.meanLength = meanLength
        self.truncated = truncated
        self.meanKLPenalty = meanKLPenalty
        self.lag = lag
        self.droppedStale = droppedStale
        self.seconds = seconds
    }

    /// Metrics written before the lag was recorded read as lag 0.
    package init(from decoder: any Swift.Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(completions: try c.decode(Int.self, forKey: .completions), meanReward: try c.decode(Double.self, forKey: .meanReward),
                  accuracy: try c.decode(Double.self, forKey: .accuracy), groups: try c.decode(Int.self, forKey: .groups),
                  zeroAdvantageGroups: try c.decode(Int.self, forKey: .zeroAdvantageGroups),
                  meanLength: try c.decode(Double.self, forKey: .meanLength), truncated: try c.decode(Int.self, forKey: .truncated),
                  meanKLPenalty: try c.decode(Double.self, forKey: .meanKLPenalty),
                  lag: try c.decodeIfPresent(Int.self, forKey: .lag) ?? 0,
                  droppedStale: try c.decodeIfPresent(Int.self, forKey: .droppedStale) ?? 0,
                  seconds: try c.decode(Double.self, forKey: .seconds))
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
///
/// With `maxLag` above 0 the source keeps `maxLag` batches in flight: after collecting batch b
/// it submits the next ones from the policy as it is before training on b, so the generator
/// samples while the trainer trains. `position` stays that of the last batch returned, so a
/// resumed run samples the in-flight batches again, from the resumed policy.
package final class RolloutSource: BatchSource {
    package let problems: [Problem]
    package let settings: RolloutSettings
    package let seqLen: Int
    package var rowsPerBatch: Int { settings.prompts * settings.groupSize }
    package private(set) var position: DataPosition
    /// The figures of the last batch drawn.
    package private(set) var lastStats: RolloutBatchStats?

    private let generator: RolloutGenerator
    /// The policy's version: rollout batches returned so far (the trainer trains each before
    /// drawing the next).
    private var version = 0
    /// Batches submitted and not yet collected, oldest first: their problems and requests, and
    /// the data position after them.
    private var inFlight: [(chosen: [(index: Int, epoch: Int)], requests: [GenerationRequest], end: DataPosition)] = []
    /// Where the next batch to submit starts (ahead of `position` by the batches in flight).
    private var submitPosition: DataPosition
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
        submitPosition = position
        self.padId = padId
        self.reference = reference
    }

    /// The sampler's seed of completion `k` of a problem in an epoch.
    package static func samplingSeed(runSeed: UInt64, problemID: String, epoch: Int, sample k: Int) -> UInt64 {
        AccuracyEval.samplingSeed(problemID: problemID, seed: runSeed &+ UInt64(epoch) &* 0x1_0000_0001 &+ UInt64(k) &* 0x9E37)
    }

    /// Chooses the next `prompts` problems of the epoch's order and submits their rollouts.
    private func submitNext() throws {
        var chosen: [(index: Int, epoch: Int)] = []
        var at = submitPosition
        var order = SFTBatcher.permutation(count: problems.count, seed: seed, epoch: at.epoch)
        while chosen.count < settings.prompts {
            if at.index == problems.count {
                at = DataPosition(epoch: at.epoch + 1, index: 0)
                order = SFTBatcher.permutation(count: problems.count, seed: seed, epoch: at.epoch)
            }
            chosen.append((order[at.index], at.epoch))
            at.index += 1
        }
        let requests = chosen.flatMap { item in
            (0..<settings.groupSize).map { k in
                GenerationRequest(prompt: prompts[item.index], maxNewTokens: settings.maxNewTokens,
                                  sampling: SamplingParams(temperature: settings.temperature, topP: settings.topP,
                                                           seed: Self.samplingSeed(runSeed: seed, problemID: problems[item.index].id,
                                                                                   epoch: item.epoch, sample: k)))
            }
        }
        try generator.submit(requests, version: version)
        inFlight.append((chosen, requests, at))
        submitPosition = at
    }

    package func nextBatch() throws -> SFTBatch {
        let start = Date()
        if inFlight.isEmpty { try submitNext() }
        let (chosen, requests, end) = inFlight.removeFirst()
        let sampled = try generator.collect()
        guard sampled.count == requests.count else {
            throw TrainError("the rollout generator returned \(sampled.count) completions for \(requests.count) requests")
        }
        position = end
        // Sample ahead from the policy as it is now, before this batch trains it.
        while inFlight.count < settings.maxLag { try submitNext() }

        let g = settings.groupSize
        let results = sampled.map(\.result)
        let lags = sampled.map { version - $0.version }
        version += 1
        // A group with a completion older than maxLag versions is dropped whole (its advantages
        // would compare samples of different policies).
        let staleGroups = Set(lags.indices.filter { lags[$0] > settings.maxLag }.map { $0 / g })
        let lengths = results.indices.map { row in
            staleGroups.contains(row / g) || (settings.maskTruncated && results[row].finish == .length) ? 0 : results[row].tokens.count
        }
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
        var (advantages, zeroGroups) = Advantages.compute(rewards: rewards, groupSize: g, scaling: settings.scaling)
        for group in staleGroups { for row in group * g..<(group + 1) * g { advantages[row] = 0 } }
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
                                      lag: lags.max() ?? 0, droppedStale: staleGroups.count * g, seconds: Date().timeIntervalSince(start))
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

    private var sampled: [[SampledCompletion]] = []

    /// Samples at once, from the weights as they are now (so a batch submitted before an update
    /// is the previous policy's, as on serving ranks).
    package func submit(_ requests: [GenerationRequest], version: Int) throws {
        policy.syncInferenceWeights()
        let results = Generator(decoder: decoder, stopTokens: stopTokens).generate(requests, maxBatch: requests.count)
        sampled.append(results.map { SampledCompletion(result: $0, version: version) })
    }

    package func collect() throws -> [SampledCompletion] {
        guard !sampled.isEmpty else { throw TrainError("no rollout batch was submitted to collect") }
        return sampled.removeFirst()
    }
}
