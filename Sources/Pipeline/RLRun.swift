import Formats
import Foundation
import Jobs
import Quant
import Reasoning
import RL
import Tensors
import Train

/// One RL run of the pipeline: `RLJob` (GRPO, on rank 0 with every core) from a QAT run's last
/// checkpoint (its latent weights and grid) or from a PTQ init. A start the cold-start gate
/// refuses is not an error of the pipeline: the stage records the refusal (`gate.json`) and
/// the run has no model to evaluate.
struct RLRun {
    let policy: String
    let scheme: QuantScheme
    let options: PipelineConfig.RLOptions
    /// The reference's path when the KL term names one.
    let reference: String?
    let task: any ReasoningTask
    let dataSeed: UInt64
    let dir: URL

    /// What the stage leaves besides the RL run's own files.
    struct Gate: Codable, Equatable {
        var stopped: String
    }

    var job: RLJob {
        var s = RLSettings()
        let o = options
        s.rollout.prompts = o.prompts ?? s.rollout.prompts
        s.rollout.groupSize = o.groupSize ?? s.rollout.groupSize
        s.rollout.temperature = o.temperature ?? s.rollout.temperature
        s.rollout.topP = o.topP ?? s.rollout.topP
        s.rollout.maxNewTokens = o.maxNewTokens ?? s.rollout.maxNewTokens
        s.rollout.scaling = o.scaleRewards.flatMap(RewardScaling.init(rawValue:)) ?? s.rollout.scaling
        s.rollout.aggregation = o.lossAgg.flatMap(LossAggregation.init(rawValue:)) ?? s.rollout.aggregation
        s.rollout.maskTruncated = o.maskTruncated ?? s.rollout.maskTruncated
        s.rollout.formatReward = o.formatReward ?? s.rollout.formatReward
        s.rollout.klReward = o.klReward ?? 0
        s.loss.temperature = s.rollout.temperature
        s.loss.clipLow = o.clipLow ?? s.loss.clipLow
        s.loss.clipHigh = o.clipHigh ?? s.loss.clipHigh
        s.loss.klCoefficient = o.klCoef ?? 0
        s.loss.klEstimator = o.klEstimator.flatMap(KLEstimator.init(rawValue:)) ?? s.loss.klEstimator
        s.updatesPerBatch = o.updatesPerBatch ?? s.updatesPerBatch
        s.kdCoefficient = o.kdCoef ?? 0
        s.minStartReward = o.minStartReward ?? s.minStartReward
        s.force = o.force ?? false
        s.probeProblems = o.probe ?? s.probeProblems
        s.collapseSteps = o.collapseSteps ?? s.collapseSteps
        s.collapseReward = o.collapseReward ?? s.collapseReward
        s.collapseEntropy = o.collapseEntropy ?? s.collapseEntropy
        var t = TrainOptions()
        t.steps = o.steps ?? 50
        t.lr = o.lr ?? 1e-5
        t.warmupSteps = o.warmup ?? 0
        t.seed = o.seed ?? 0
        t.weightDecay = 0
        t.saveEvery = o.saveEvery ?? 10
        t.keepLast = t.saveEvery > 0 ? t.steps / t.saveEvery + 2 : 2
        var job = RLJob(policy: policy, reference: reference, task: task, qat: scheme, settings: s, options: t, runDir: dir)
        job.trainProblems = o.trainProblems ?? job.trainProblems
        job.dataSeed = dataSeed
        return job
    }

    /// Runs the job; a refusal by the gate is written to `gate.json` and returned.
    func run(log: @escaping (String) -> Void) throws -> Gate? {
        let job = self.job
        do {
            let summary = try job.run(log: log)
            try JobJSON.write(summary, to: dir.appendingPathComponent("rl-summary.json"))
            return nil
        } catch let error as ColdStartRefused {
            let gate = Gate(stopped: error.description)
            try JobJSON.write(gate, to: dir.appendingPathComponent("gate.json"))
            log("stopped by the cold-start gate: \(error.description)")
            return gate
        }
    }
}
