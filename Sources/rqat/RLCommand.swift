import ArgumentParser
import Formats
import Foundation
import Jobs
import Quant
import Reasoning
import RL
import Train

extension RewardScaling: ExpressibleByArgument {}
extension LossAggregation: ExpressibleByArgument {}
extension KLEstimator: ExpressibleByArgument {}

struct RLCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rl",
        abstract: "GRPO on a (quantized) policy with verifiable rewards on a reasoning task.",
        discussion: """
            Each step samples --group-size completions of --prompts training problems from the \
            policy as it is deployed (its fake-quant weights under --qat), rewards a right final \
            answer with 1, normalises the rewards within each group (--scale-rewards), and makes \
            --updates-per-batch optimizer steps on the clipped surrogate. The old policy of the \
            ratio is the policy's own log-probabilities at the first update on a batch, so with one \
            update per batch the ratio is 1 and the clip never acts. The policy of the loss is \
            softmax(logits / --temperature), untruncated; with --top-p below 1 the sampler draws from \
            the truncated one. Before training, the mean reward on --probe validation problems must \
            reach --min-start-reward (else the run stops: train the student with KD-QAT first, or \
            pass --force). One JSON line per step goes to OUT/rl-metrics.jsonl (reward, accuracy, \
            zero-advantage groups, length, entropy, KL, clip fraction, log-prob gap, lag); the \
            command prints the summary as JSON. Under mpirun with --teachers, serving ranks sample \
            the rollouts from the policy the lead student sends them; --max-lag N samples N batches \
            ahead so that sampling overlaps training.
            """)

    @Option(help: "The policy to train: a checkpoint (e.g. a KD-QAT run's, with its grid) or a model directory.")
    var policy: String
    @Option(help: "Reference policy of the KL term (e.g. the KD student or the FP teacher).")
    var reference: String?
    @Option(help: "When --policy is a training checkpoint of a run from a QuaRot or FlatQuant init: that init (its online transforms and activation record).")
    var initModel: String?
    @Option(help: "arith, gsm8k or gsm-symbolic.")
    var task: String
    @Option(help: "Run directory for checkpoints, metrics.jsonl and rl-metrics.jsonl.")
    var out: String
    @Option(help: "Fake-quant scheme of the policy (its checkpoint's grid is kept), e.g. w3g128.")
    var qat: String?
    @Option(help: "Training problems rollouts are drawn from.") var trainProblems = 2000
    @Option(help: "Optimizer steps.") var steps = 50
    @Option(help: "Peak learning rate.") var lr: Double = 1e-5
    @Option(help: "Linear warm-up steps.") var warmup = 0
    @Option(help: "Global gradient-norm clip (0 = off).") var maxGradNorm: Double = 1.0
    @Option(help: "Decoupled weight decay.") var weightDecay: Double = 0
    @Option(help: "Seed of the prompt order and of the rollouts.") var seed: UInt64 = 0
    @Option(help: "Save a checkpoint every N steps (0 = at the end only).") var saveEvery = 10
    @Option(help: "Prompts per rollout batch.") var prompts = 16
    @Option(help: "Completions per prompt (at least 2).") var groupSize = 8
    @Option(help: "Sampling temperature (the loss's policy is at it too).") var temperature: Float = 1
    @Option(help: "Nucleus mass of the sampler (1 = off).") var topP: Float = 1
    @Option(help: "Maximum new tokens per completion.") var maxNewTokens = 64
    @Option(help: "group, batch or none: what centred rewards are divided by.") var scaleRewards: RewardScaling = .group
    @Option(help: "token-mean, seq-mean or dr-grpo.") var lossAgg: LossAggregation = .tokenMean
    @Flag(inversion: .prefixedNo, help: "Truncated completions carry no loss.") var maskTruncated = true
    @Option(help: "Reward added for a final answer in the task's format (#### N).") var formatReward: Double = 0
    @Option(help: "Lower clip of the ratio.") var clipLow: Double = 0.2
    @Option(help: "Upper clip of the ratio.") var clipHigh: Double = 0.28
    @Option(help: "Optimizer steps per rollout batch.") var updatesPerBatch = 1
    @Option(help: "beta of the KL term to --reference in the loss (0 = none).") var klCoef: Double = 0
    @Option(help: "k1, k2 or k3: the per-token KL estimator.") var klEstimator: KLEstimator = .k3
    @Option(help: "Weight of a KD term on the rollout tokens: forward KL from --reference's distribution (top-64, T 1).") var kdCoef: Double = 0
    @Option(help: "KL in the reward instead: each completion's reward loses this times its k1 estimate of KL(policy || --reference).") var klReward: Double = 0
    @Option(help: "Cold-start gate: the lowest mean reward on the probe set RL may start from.") var minStartReward: Double = 0
    @Flag(help: "Run even when the probe reward is below --min-start-reward.") var force = false
    @Option(help: "Validation problems the gate samples.") var probe = 100
    @Option(help: "Collapse guard: stop after this many steps in a row below --collapse-reward or --collapse-entropy (0 = off).") var collapseSteps = 5
    @Option(help: "Collapse guard: batch mean reward floor.") var collapseReward: Double = 0
    @Option(help: "Collapse guard: mean token entropy floor.") var collapseEntropy: Double = 0
    @Option(help: "Asynchronous rollouts: batches sampled this many policy versions ahead, overlapping training (0 = on-policy).") var maxLag = 0
    @Option(help: "Truncated importance sampling: weight each token's surrogate by min(pi_old / pi_sampler, CAP) (for --max-lag above 0).") var tisCap: Double?
    @Option(help: "On-policy check (--max-lag 0): stop when the sampler's and the trainer's log-probabilities of a step's tokens differ by more on average (default 1e-4; 0.1 with 4-bit activations or KV, 1e-2 with 8-bit).") var maxLogprobGap: Double?
    @Option(help: "Write every rollout batch to this file (JSON lines).") var recordRollouts: String?
    @Option(help: "Train on the rollouts of a --record-rollouts file instead of sampling.") var replayRollouts: String?
    @Option(help: "Under mpirun: world ranks that serve rollouts (they receive the policy after every update); the others train data-parallel.") var teachers = 0
    @OptionGroup var assets: AssetOptions
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if let qat {
            guard let s = try? QuantScheme.parse(qat), s.weightBits != nil else {
                throw ValidationError("--qat: invalid scheme. Valid: \(QuantScheme.validForms)")
            }
        }
        guard groupSize >= 2 else { throw ValidationError("--group-size \(groupSize): GRPO compares completions within a group; use at least 2") }
        guard prompts > 0 else { throw ValidationError("--prompts must be positive") }
        guard steps > 0 else { throw ValidationError("--steps must be positive") }
        guard lr > 0 && lr.isFinite else { throw ValidationError("--lr must be positive") }
        guard temperature > 0 else { throw ValidationError("--temperature must be positive: the policy is softmax(logits / temperature)") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard updatesPerBatch > 0 else { throw ValidationError("--updates-per-batch must be positive") }
        guard clipLow >= 0 && clipLow < 1 && clipHigh >= 0 else { throw ValidationError("--clip-low must be in [0, 1) and --clip-high non-negative") }
        if klCoef != 0 && reference == nil { throw ValidationError("--kl-coef \(klCoef) needs --reference (the policy the KL is taken to)") }
        if kdCoef != 0 && reference == nil { throw ValidationError("--kd-coef \(kdCoef) needs --reference (the teacher whose distribution is mixed in)") }
        if klReward != 0 && reference == nil { throw ValidationError("--kl-reward \(klReward) needs --reference (the policy the KL is taken to)") }
        guard maxLag >= 0 else { throw ValidationError("--max-lag \(maxLag): use 0 (on-policy) or more") }
        if let tisCap, !(tisCap > 0) { throw ValidationError("--tis-cap \(tisCap): the cap is a positive weight, e.g. 2") }
        if let maxLogprobGap, !(maxLogprobGap > 0) { throw ValidationError("--max-logprob-gap must be positive") }
        if recordRollouts != nil && replayRollouts != nil { throw ValidationError("--record-rollouts and --replay-rollouts: pass one") }
    }

    func run() throws {
        runtime.apply()
        try reportingErrors {
            var o = RLOptions()
            o.steps = steps; o.lr = lr; o.warmup = warmup; o.seed = seed; o.maxGradNorm = maxGradNorm; o.weightDecay = weightDecay
            o.saveEvery = saveEvery; o.trainProblems = trainProblems
            o.prompts = prompts; o.groupSize = groupSize; o.temperature = temperature; o.topP = topP; o.maxNewTokens = maxNewTokens
            o.scaleRewards = scaleRewards.rawValue; o.lossAgg = lossAgg.rawValue; o.maskTruncated = maskTruncated
            o.formatReward = formatReward; o.klReward = klReward
            o.clipLow = clipLow; o.clipHigh = clipHigh; o.updatesPerBatch = updatesPerBatch
            o.klCoef = klCoef; o.klEstimator = klEstimator.rawValue; o.kdCoef = kdCoef
            o.minStartReward = minStartReward; o.force = force; o.probe = probe
            o.collapseSteps = collapseSteps; o.collapseReward = collapseReward; o.collapseEntropy = collapseEntropy
            o.maxLag = maxLag; o.tisCap = tisCap; o.maxLogprobGap = maxLogprobGap
            var job = o.job(policy: policy, reference: reference, task: try TaskRegistry.task(named: task, assets: assets.url),
                            qat: qat.map { try! QuantScheme.parse($0) }, runDir: URL(fileURLWithPath: out), teachers: teachers)
            job.initModel = initModel
            job.settings.recordRollouts = recordRollouts.map { URL(fileURLWithPath: $0) }
            job.settings.replayRollouts = replayRollouts.map { URL(fileURLWithPath: $0) }
            let status = runRanks(teachers: teachers, printLine: printErr) { roles in
                guard let summary = try job.run(roles: roles, log: { printErr("rl: " + $0) }), roles.group.rank == 0 else { return }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
                print(String(decoding: try encoder.encode(summary), as: UTF8.self))
            }
            if status != 0 { throw ExitCode(status) }
        }
    }
}
