import Cluster
import Eval
import Foundation
import Formats
import Model
import Quant
import Reasoning
import RL
import Tensors
import Train

/// The RL stage's settings besides the trainer's (`rqat rl` options; the pipeline's `rl` section).
package struct RLSettings: Sendable, Equatable {
    package var rollout = RolloutSettings()
    package var loss = GRPOLoss.Options()
    /// Optimizer steps per rollout batch (PPO-style epochs; 1 = on-policy, the clip never acts).
    package var updatesPerBatch = 1
    /// Weight of a KD term on the rollout tokens (forward KL from the reference's top-64 at T 1).
    package var kdCoefficient = 0.0
    /// Cold-start gate: the policy's mean reward on the probe set must reach this, or the stage
    /// stops before any update (unless `force`).
    package var minStartReward = 0.0
    package var force = false
    /// Validation problems the gate samples (once each, at the rollout temperature).
    package var probeProblems = 100
    /// Collapse guard: stop when the batch's mean reward is below `collapseReward`, or the mean
    /// token entropy below `collapseEntropy`, for this many steps in a row (0 = off).
    package var collapseSteps = 5
    package var collapseReward = 0.0
    package var collapseEntropy = 0.0
    /// On-policy check: with `rollout.maxLag` 0 a step whose mean |sampler - trainer|
    /// log-probability gap over its rollout tokens exceeds this stops the run (the two disagree
    /// on the policy). 1e-4 for weight-only fake-quant and full-precision policies, where the
    /// mean is 1e-7 to 1e-6; the largest gap is reported, not checked: of a step's thousands of
    /// tokens, a few round apart by up to 2e-4 (docs/RL.md).
    package var maxLogProbGap = 1e-4

    /// 1e-4 for weight-only and full-precision policies: both sides run the same weights. With
    /// activation or KV-cache bits the two decoders' kernels round a few activations apart and a
    /// flipped code moves its token and the ones after it: at 4 bits, on arith's W4A4KV4 students
    /// at lag 0 (1,200 steps of 256 rollouts, docs/RL.md), the mean gap of a step reached 3.9e-2,
    /// so the bound is 0.1 there: it stops only a sampler far from the trainer's policy, no longer
    /// a one-update-stale one (0.08-0.12). 8-bit grids: 1e-2 (not measured).
    package static func defaultMaxLogProbGap(_ scheme: QuantScheme?) -> Double {
        guard let spec = scheme.flatMap({ ActivationQuantSpec(scheme: $0) }) else { return 1e-4 }
        let bits = [spec.activationBits, spec.kvBits].compactMap { $0 }.min() ?? 16
        return bits <= 4 ? 0.1 : 1e-2
    }
    /// Every rollout batch written to this file (JSON lines), or read from it in place of
    /// sampling; see `RecordingRollouts`, `ReplayedRollouts`.
    package var recordRollouts: URL?
    package var replayRollouts: URL?

    package init() {}
}

/// One line of RUN/rl-metrics.jsonl: what a GRPO step saw and did.
package struct RLStepRecord: Codable, Sendable, Equatable {
    package var step: Int
    package var loss: Double
    package var lr: Double
    package var gradNorm: Double
    /// The rollout batch the step trained on (the same for every update on one batch).
    package var rollouts: RolloutBatchStats
    /// Means over the step's completion tokens: entropy at the sampling temperature, the KL
    /// estimate to the reference (0 without one), and the share of clipped ratios.
    package var entropy: Double
    package var kl: Double
    package var clipFraction: Double
    /// |sampler log pi - trainer log pi| of the rollout tokens at the first update on a batch.
    package var logProbGapMax: Double
    package var logProbGapMean: Double
    /// The share of those tokens whose gap exceeds 1e-6, 1e-4, 1e-2 and 1 (`BehaviourGap.thresholds`);
    /// nil in metrics written before it was recorded.
    package var logProbGapAbove: [Double]?
    /// With `--tis-cap`: the mean importance weight of the step's tokens and the share the cap cut.
    package var tisWeight: Double?
    package var tisTruncated: Double?
    package var seconds: Double

    enum CodingKeys: String, CodingKey {
        case step, loss, lr, rollouts, entropy, kl, seconds
        case gradNorm = "grad_norm", clipFraction = "clip_fraction"
        case logProbGapMax = "logprob_gap_max", logProbGapMean = "logprob_gap_mean", logProbGapAbove = "logprob_gap_above"
        case tisWeight = "tis_weight", tisTruncated = "tis_truncated"
    }
}

/// The cold-start gate stopped the run: the policy's probe reward is below `--min-start-reward`.
package struct ColdStartRefused: UserFacingError {
    package let description: String
    package let startReward: Double
}

/// The run stopped itself part-way, by the on-policy check or the collapse guard: its metrics and
/// checkpoints so far are kept, no model is exported.
package struct RLRunStopped: UserFacingError {
    /// What stops an RL run (the gate before any step: `ColdStartRefused`).
    package enum Guard: String, Codable, Sendable {
        case coldStartGate = "cold-start gate", onPolicy = "on-policy check", collapse = "collapse guard"
    }
    package let description: String
    package let by: Guard
    package let step: Int
    /// The probe set's mean reward before RL (the gate's figure).
    package let startReward: Double
}

/// What `rqat rl` returns.
package struct RLSummary: Codable, Sendable, Equatable {
    /// The probe set's mean reward before RL (the gate's figure), and the gate.
    package var startReward: Double
    package var minStartReward: Double
    package var steps: [RLStepRecord]
    package var checkpoint: String?
    package var quantized: String?

    enum CodingKeys: String, CodingKey {
        case steps, checkpoint, quantized
        case startReward = "start_reward", minStartReward = "min_start_reward"
    }
}

/// `rqat rl`: GRPO on a (quantized) policy, one process; rollouts are sampled from the policy's
/// own fake-quant weights after every update.
package struct RLJob {
    package var policy: String
    /// When `policy` is a training checkpoint of a run from a QuaRot or FlatQuant init: that init
    /// (its online transforms and activation record, which checkpoints do not carry).
    package var initModel: String?
    /// KL reference policy (e.g. the KD student or the FP teacher); needed with a KL term.
    package var reference: String?
    package var task: any ReasoningTask
    /// Fake-quant scheme of the policy (its checkpoint's grid is kept), or nil for full precision.
    package var qat: QuantScheme?
    package var settings: RLSettings
    package var options: TrainOptions
    package var runDir: URL
    package var trainProblems = 2000
    package var dataSeed: UInt64 = 0
    /// World ranks that serve rollouts under mpirun (0: sampled in the training process).
    package var teachers = 0

    package init(policy: String, reference: String?, task: any ReasoningTask, qat: QuantScheme?, settings: RLSettings,
                 options: TrainOptions, runDir: URL) {
        self.policy = policy
        self.reference = reference
        self.task = task
        self.qat = qat
        self.settings = settings
        self.options = options
        self.runDir = runDir
    }

    /// Everything that can be refused without generating a token.
    func validate(student: StudentModel, reference: TrainableDecoder?, problems: [Problem]) throws {
        if settings.rollout.groupSize < 2 {
            throw JobError("--group-size \(settings.rollout.groupSize): GRPO's advantages compare completions within a group; use at least 2")
        }
        if settings.loss.klCoefficient != 0 && self.reference == nil {
            throw JobError("--kl-coef \(settings.loss.klCoefficient) needs --reference (the policy the KL is taken to)")
        }
        if settings.kdCoefficient != 0 && self.reference == nil {
            throw JobError("--kd-coef \(settings.kdCoefficient) needs --reference (the teacher whose distribution is mixed in)")
        }
        if settings.rollout.klReward != 0 && self.reference == nil {
            throw JobError("--kl-reward \(settings.rollout.klReward) needs --reference (the policy the KL is taken to)")
        }
        if let reference, reference.config.vocabSize != student.decoder.config.vocabSize {
            throw JobError("--reference \(self.reference!): its vocabulary has \(reference.config.vocabSize) tokens and the policy's \(student.decoder.config.vocabSize); use a reference with the policy's tokenizer")
        }
        if let bad = problems.first(where: { AnswerChecker.normalize($0.answer) == nil && $0.answer.isEmpty }) {
            throw JobError("--task \(task.name): problem \(bad.id) has an empty answer, which no completion can match; the reward needs checkable answers")
        }
        if let bad = problems.first(where: { AnswerChecker.normalize($0.answer) == nil }) {
            throw JobError("--task \(task.name): the answer \"\(bad.answer)\" of problem \(bad.id) is not a number the checker can compare; RL rewards need numeric answers")
        }
        if settings.rollout.maxLag < 0 {
            throw JobError("--max-lag \(settings.rollout.maxLag): the lag counts policy versions; use 0 (synchronous) or more")
        }
        if let cap = settings.loss.tisCap, !(cap > 0) {
            throw JobError("--tis-cap \(cap): the importance weights are capped at a positive value; use e.g. 2")
        }
        if settings.recordRollouts != nil && settings.replayRollouts != nil {
            throw JobError("--record-rollouts and --replay-rollouts: a run samples and records, or replays; pass one")
        }
        if options.gradAccumulation != 1 {
            throw JobError("--grad-accum \(options.gradAccumulation): an RL step trains on one rollout batch; size it with --prompts and --group-size")
        }
    }

    /// One process: rollouts sampled in it.
    package func run(log: @escaping (String) -> Void) throws -> RLSummary {
        try run(roles: nil, log: log)!
    }

    /// Under mpirun (`runRanks`): world ranks 0..<teachers serve rollouts from the policy the
    /// lead student sends them after each update; the students train data-parallel on the same
    /// rollout batches. Returns the summary on the students (nil on serving ranks); only the
    /// lead student logs, writes metrics and exports.
    package func run(roles: Roles?, log: @escaping (String) -> Void) throws -> RLSummary? {
        // Serving ranks, students and the reference all run the init's transforms.
        let initModel = try self.initModel ?? InitRecord.read(checkpoint: policy)?.initModel
        if let roles, roles.role == .teacher {
            let lm = try LanguageModel(path: policy)
            let service = TeacherService(decoder: lm.decoder, options: SignalOptions(), stopTokens: lm.stopTokens)
            service.acceptsPolicy = true
            service.policyScheme = qat
            let origin = try initModel.map { try Checkpoint.open($0) } ?? lm.checkpoint
            service.policyTransforms = try OnlineTransforms(origin)
            service.policyInitActivation = origin.activationQuant
            let start = Date()
            try service.serve(world: roles.world, students: roles.students)
            log(String(format: "serving rank %d: %d tokens generated in %.1f s busy of %.1f s; %.1f MB of policy received, %.2f s to load it",
                       roles.world.rank, service.tokensProcessed, service.busySeconds, Date().timeIntervalSince(start),
                       Double(service.policyBytes) / 1e6, service.policySeconds))
            return nil
        }
        let lead = roles.map { $0.group.rank == 0 } ?? true
        let say: (String) -> Void = { if lead { log($0) } }
        let student = try StudentModel(model: policy, qat: qat, lsq: false, initModel: initModel, log: say)
        let referenceModel = try reference.map { path -> TrainableDecoder in
            let opened = try Checkpoint.open(path)
            // The start as reference: a training checkpoint takes its init's transforms, as the policy does.
            let origin = try (path == policy ? initModel.map { try Checkpoint.open($0) } : nil) ?? opened
            let decoder = try TrainableDecoder(config: opened.config, source: opened.weights)
            try decoder.installRunTimeTransforms(try OnlineTransforms(origin)?.updating(from: opened.weights), activation: origin.activationQuant)
            return decoder
        }
        let problems = try task.problems(split: .train, count: trainProblems, seed: dataSeed)
        try validate(student: student, reference: referenceModel, problems: problems)
        let stops = LanguageModel.stopTokens(tokenizer: student.tokenizer, config: student.checkpoint.config)
        let format = PromptedModel(decoder: Decoder(weights: student.decoder.inferenceWeights()), tokenizer: student.tokenizer,
                                   chatTemplate: student.template, stopTokens: stops,
                                   chat: student.tokenizer.id(of: "<|im_end|>") != nil)
        let startReward = try probeReward(format: format, log: say)
        if startReward < settings.minStartReward {
            let message = String(format: "the policy's mean reward on %d validation problems is %.3f, below --min-start-reward %.3f: the start is not viable for RL; train it with KD-QAT first (rqat pipeline / rqat distill), or pass --force to run anyway",
                                 settings.probeProblems, startReward, settings.minStartReward)
            guard settings.force else {
                // Every student measured the same probe; each lets the serving ranks go.
                if let roles, roles.remoteTeachers { try releaseTeachers(world: roles.world, teacherRanks: roles.teacherRanks) }
                throw ColdStartRefused(description: message, startReward: startReward)
            }
            say("warning: \(message) (--force given: running)")
        }

        var source: RolloutSource?
        let rollout = settings.rollout, temperature = settings.loss.temperature
        let kdCoefficient = settings.kdCoefficient
        let referenceLogProbs: ReferencePolicy? = referenceModel.map { ref in
            { tokens, targets, mask, rows, seqLen in
                let logits = ref.forward(tokens: tokens, batch: rows, length: seqLen)
                defer { ref.releaseActivations() }
                let logProbs = GRPOLoss.logProbs(logits: logits.ptr, vocab: ref.config.vocabSize, targets: targets, mask: mask,
                                                 temperature: temperature)
                guard kdCoefficient != 0,
                      case .topK(let k, let ids, let lp, let tail) = TeacherSignal.make(logits: logits.ptr, rows: rows * seqLen, vocab: ref.config.vocabSize,
                                                                                       encoding: .topK(min(64, ref.config.vocabSize)), temperature: 1,
                                                                                       seed: { _ in 0 })
                else { return (logProbs, nil) }
                return (logProbs, (k, ids, lp, tail))
            }
        }
        let served = roles.flatMap { roles -> ServedRollouts? in
            guard roles.remoteTeachers else { return nil }
            return ServedRollouts(world: roles.world, students: roles.group, teacherRanks: roles.teacherRanks,
                                  vocab: student.decoder.config.vocabSize) { version in student.policySnapshot(version: version) }
        }
        // The lead records what every student trains on; a replay reads it instead of sampling.
        let generator: RolloutGenerator
        if let replay = settings.replayRollouts {
            generator = try ReplayedRollouts(from: replay)
        } else {
            let sampler: RolloutGenerator = served ?? LocalRollouts(policy: student.decoder, stopTokens: stops)
            generator = try settings.recordRollouts.map { lead ? try RecordingRollouts(sampler, to: $0) : sampler } ?? sampler
        }
        let group = roles.flatMap { $0.students > 1 ? StudentGroup(comm: $0.group) : nil }
        let objective = GRPOObjective(options: settings.loss, updatesPerBatch: settings.updatesPerBatch, kdCoefficient: settings.kdCoefficient)
        let trainer = try Trainer(model: student.decoder, batches: { seed, position in
            let s = try RolloutSource(problems: problems, policy: student.decoder, format: format, settings: rollout,
                                      seed: seed, position: position, padId: student.padId, generator: generator,
                                      reference: referenceLogProbs)
            source = s
            return s
        }, options: options, runDir: runDir, quantizer: student.quantizer, objective: objective, group: group)
        trainer.extraCheckpointFiles = try student.checkpointFiles(in: runDir, write: lead)

        let metrics = runDir.appendingPathComponent("rl-metrics.jsonl")
        var records: [RLStepRecord] = []
        var lowSteps = 0, lastGoodStep = 0
        var stepStart = Date()
        var stop: RLRunStopped?
        do {
            try trainer.run { r in
                let (mine, gap) = objective.takeStepStats()
                // Sums over every student's share of the batch (the largest gap: the maximum).
                let local = [Double(mine.tokens), Double(mine.clipped), mine.entropy, mine.kl, gap.sum, Double(gap.tokens),
                             mine.tisWeight, Double(mine.tisTruncated)] + gap.above.map(Double.init)
                let sums = try group?.sum(local) ?? local
                let gapMax = try roles.map { try $0.group.allGather(withUnsafeBytes(of: gap.max) { Array($0) }) }?
                    .map { $0.withUnsafeBytes { $0.load(as: Double.self) } }.max() ?? gap.max
                let tokens = max(1, sums[0])
                let record = RLStepRecord(step: r.step, loss: r.loss, lr: r.lr, gradNorm: r.gradNorm, rollouts: source!.lastStats!,
                                          entropy: sums[2] / tokens, kl: sums[3] / tokens, clipFraction: sums[1] / tokens,
                                          logProbGapMax: gapMax, logProbGapMean: sums[5] > 0 ? sums[4] / sums[5] : 0,
                                          logProbGapAbove: sums[8...].map { $0 / max(1, sums[5]) },
                                          tisWeight: settings.loss.tisCap == nil ? nil : sums[6] / tokens,
                                          tisTruncated: settings.loss.tisCap == nil ? nil : sums[7] / tokens,
                                          seconds: Date().timeIntervalSince(stepStart))
                stepStart = Date()
                records.append(record)
                if lead { try JobJSON.writeLines(records, to: metrics) }
                let lag = settings.rollout.maxLag > 0 ? String(format: "  lag %d dropped %d", record.rollouts.lag, record.rollouts.droppedStale) : ""
                let tis = record.tisWeight.map { String(format: "  tis %.3f cut %.3f", $0, record.tisTruncated ?? 0) } ?? ""
                say(String(format: "rl step %d/%d  reward %.3f  acc %.3f  zero-adv groups %d/%d  len %.1f  entropy %.3f  kl %.4f  clip %.3f  gap %.1e%@%@  loss %.4f  |g| %.3f  %.1fs",
                           r.step, options.steps, record.rollouts.meanReward, record.rollouts.accuracy,
                           record.rollouts.zeroAdvantageGroups, record.rollouts.groups, record.rollouts.meanLength,
                           record.entropy, record.kl, record.clipFraction, record.logProbGapMax, lag, tis, r.loss, r.gradNorm, record.seconds))
                if settings.rollout.maxLag == 0 && record.logProbGapMean > settings.maxLogProbGap {
                    throw RLRunStopped(description: String(format: "step %d: the sampler's and the trainer's log-probabilities of the rollout tokens differ by %.2e on average (up to %.2e), above --max-logprob-gap %.0e: they do not run the same policy (a stale or mismatched policy on the serving ranks, or a scheme whose kernels round apart); the run stops, its last checkpoint kept",
                                                              r.step, record.logProbGapMean, record.logProbGapMax, settings.maxLogProbGap),
                                       by: .onPolicy, step: r.step, startReward: startReward)
                }
                let low = record.rollouts.meanReward < settings.collapseReward || record.entropy < settings.collapseEntropy
                lowSteps = low ? lowSteps + 1 : 0
                if !low { lastGoodStep = r.step }
                if settings.collapseSteps > 0 && lowSteps >= settings.collapseSteps {
                    let good = TrainCheckpoint.checkpoints(in: runDir).filter { $0.step <= lastGoodStep }.max { $0.step < $1.step }
                    throw RLRunStopped(description: String(format: "the policy collapsed at step %d: mean reward below %.3f or token entropy below %.3f for %d steps in a row; stopping. Last good checkpoint: %@",
                                                              r.step, settings.collapseReward, settings.collapseEntropy, lowSteps, good?.url.path ?? "none"),
                                       by: .collapse, step: r.step, startReward: startReward)
                }
            }
        } catch let stopped as RLRunStopped { stop = stopped }
        // A stopped run, too, takes the serving ranks' answers in flight and lets them go, so that
        // a pipeline can go on to its next stage.
        try served?.drain()
        if let served {
            say(String(format: "policy sync: %d syncs, %.1f MB each, %.3f s each to encode and send",
                       served.syncs, Double(served.syncBytes) / Double(max(1, served.syncs)) / 1e6,
                       served.syncSeconds / Double(max(1, served.syncs))))
        }
        if let roles, roles.remoteTeachers { try releaseTeachers(world: roles.world, teacherRanks: roles.teacherRanks) }
        if let stop { throw stop }
        if lead { try student.exportQuantized(runDir: runDir, extraFiles: trainer.extraCheckpointFiles, log: say) }
        return RLSummary(startReward: startReward, minStartReward: settings.minStartReward, steps: records,
                         checkpoint: TrainCheckpoint.latestCheckpoint(in: runDir)?.path,
                         quantized: student.quantizer == nil ? nil : runDir.appendingPathComponent("quantized").path)
    }

    /// Mean reward of the policy on `probeProblems` validation problems, one sample each at the
    /// rollout temperature and top-p (the validation split is disjoint from test and train).
    func probeReward(format: PromptedModel, log: (String) -> Void) throws -> Double {
        let probe = try task.problems(split: .validation, count: settings.probeProblems, seed: dataSeed)
        let accuracy = AccuracySettings(seeds: [1], temperature: settings.rollout.temperature, topP: settings.rollout.topP,
                                        maxTokens: settings.rollout.maxNewTokens, batch: 64)
        let outcomes = AccuracyEval.run(problems: probe, settings: accuracy, model: format)
        let reward = outcomes.reduce(0.0) { sum, o in
            sum + Reward.of(completion: o.completion, gold: o.gold, formatReward: settings.rollout.formatReward).reward
        } / Double(max(1, outcomes.count))
        log(String(format: "probe: mean reward %.3f on %d validation problems (gate: --min-start-reward %.3f)",
                   reward, probe.count, settings.minStartReward))
        return reward
    }
}

/// The options of an RL run, as `rqat rl` takes them and a pipeline config spells them
/// (snake_case keys); unset fields take `rl_train`'s, then `rqat rl`'s defaults (`job`).
package struct RLOptions: Codable, Sendable, Equatable {
    package var steps: Int?
    package var lr: Double?
    package var warmup: Int?
    package var seed: UInt64?
    package var maxGradNorm: Double?
    package var weightDecay: Double?
    package var saveEvery: Int?
    package var trainProblems: Int?
    package var prompts: Int?
    package var groupSize: Int?
    package var temperature: Float?
    package var topP: Float?
    package var maxNewTokens: Int?
    package var scaleRewards: String?
    package var lossAgg: String?
    package var maskTruncated: Bool?
    package var formatReward: Double?
    package var clipLow: Double?
    package var clipHigh: Double?
    package var updatesPerBatch: Int?
    /// KL term to "teacher" (the FP teacher) or "start" (the policy RL starts from).
    package var reference: String?
    package var klCoef: Double?
    package var klEstimator: String?
    package var klReward: Double?
    package var kdCoef: Double?
    package var minStartReward: Double?
    package var force: Bool?
    package var probe: Int?
    package var collapseSteps: Int?
    package var collapseReward: Double?
    package var collapseEntropy: Double?
    package var maxLag: Int?
    package var tisCap: Double?
    package var maxLogprobGap: Double?

    package init() {}

    enum CodingKeys: String, CodingKey {
        case steps, lr, warmup, seed, prompts, temperature, reference, force, probe
        case maxGradNorm = "max_grad_norm", weightDecay = "weight_decay"
        case saveEvery = "save_every", trainProblems = "train_problems", groupSize = "group_size", topP = "top_p"
        case maxNewTokens = "max_new_tokens", scaleRewards = "scale_rewards", lossAgg = "loss_agg"
        case maskTruncated = "mask_truncated", formatReward = "format_reward", clipLow = "clip_low", clipHigh = "clip_high"
        case updatesPerBatch = "updates_per_batch", klCoef = "kl_coef", klEstimator = "kl_estimator", klReward = "kl_reward"
        case kdCoef = "kd_coef"
        case minStartReward = "min_start_reward", collapseSteps = "collapse_steps", collapseReward = "collapse_reward"
        case collapseEntropy = "collapse_entropy"
        case maxLag = "max_lag", tisCap = "tis_cap", maxLogprobGap = "max_logprob_gap"
    }

    /// `self` with unset fields taken from `defaults` (merged key by key as JSON objects).
    package func over(_ defaults: RLOptions?) throws -> RLOptions {
        guard let defaults else { return self }
        let encoder = JSONEncoder()
        var merged = try JSONSerialization.jsonObject(with: encoder.encode(defaults)) as! [String: Any]
        for (k, v) in try JSONSerialization.jsonObject(with: encoder.encode(self)) as! [String: Any] { merged[k] = v }
        return try JSONDecoder().decode(RLOptions.self, from: JSONSerialization.data(withJSONObject: merged))
    }

    /// The job these options describe: every unset field at `rqat rl`'s default.
    package func job(policy: String, reference: String?, task: any ReasoningTask, qat: QuantScheme?, runDir: URL,
                     dataSeed: UInt64 = 0, teachers: Int = 0) -> RLJob {
        var s = RLSettings()
        s.rollout.prompts = prompts ?? s.rollout.prompts
        s.rollout.groupSize = groupSize ?? s.rollout.groupSize
        s.rollout.temperature = temperature ?? s.rollout.temperature
        s.rollout.topP = topP ?? s.rollout.topP
        s.rollout.maxNewTokens = maxNewTokens ?? s.rollout.maxNewTokens
        s.rollout.scaling = scaleRewards.flatMap(RewardScaling.init(rawValue:)) ?? s.rollout.scaling
        s.rollout.aggregation = lossAgg.flatMap(LossAggregation.init(rawValue:)) ?? s.rollout.aggregation
        s.rollout.maskTruncated = maskTruncated ?? s.rollout.maskTruncated
        s.rollout.formatReward = formatReward ?? s.rollout.formatReward
        s.rollout.klReward = klReward ?? 0
        s.loss.temperature = s.rollout.temperature
        s.loss.clipLow = clipLow ?? s.loss.clipLow
        s.loss.clipHigh = clipHigh ?? s.loss.clipHigh
        s.loss.klCoefficient = klCoef ?? 0
        s.loss.klEstimator = klEstimator.flatMap(KLEstimator.init(rawValue:)) ?? s.loss.klEstimator
        s.updatesPerBatch = updatesPerBatch ?? s.updatesPerBatch
        s.kdCoefficient = kdCoef ?? 0
        s.minStartReward = minStartReward ?? s.minStartReward
        s.force = force ?? false
        s.probeProblems = probe ?? s.probeProblems
        s.collapseSteps = collapseSteps ?? s.collapseSteps
        s.collapseReward = collapseReward ?? s.collapseReward
        s.collapseEntropy = collapseEntropy ?? s.collapseEntropy
        s.rollout.maxLag = maxLag ?? 0
        s.loss.tisCap = tisCap
        s.maxLogProbGap = maxLogprobGap ?? RLSettings.defaultMaxLogProbGap(qat)
        var t = TrainOptions()
        t.steps = steps ?? 50
        t.lr = lr ?? 1e-5
        t.warmupSteps = warmup ?? 0
        t.seed = seed ?? 0
        t.maxGradNorm = (maxGradNorm ?? 1) > 0 ? (maxGradNorm ?? 1) : nil
        t.weightDecay = weightDecay ?? 0
        t.saveEvery = saveEvery ?? 10
        t.keepLast = t.saveEvery > 0 ? t.steps / t.saveEvery + 2 : 2
        var job = RLJob(policy: policy, reference: reference, task: task, qat: qat, settings: s, options: t, runDir: runDir)
        job.trainProblems = trainProblems ?? job.trainProblems
        job.dataSeed = dataSeed
        job.teachers = teachers
        return job
    }
}
