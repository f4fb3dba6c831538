import Foundation
import Jobs
import Reasoning
import RL
import Train

/// `rqat pipeline --config FILE.json`: every stage's settings. Keys are snake_case; a key the
/// config types do not have is refused (`StrictJSON`), so a misspelling cannot pass silently.
package struct PipelineConfig: Codable, Sendable, Equatable {
    /// Run directory; relative paths are relative to the config file.
    package var out: String
    package var task: TaskSection
    package var teacher: TeacherSection
    package var traces: TracesSection
    /// Calibration sets by name; PTQ entries pick one.
    package var calibration: [CalibrationSection]
    package var ptq: [PTQSection]
    package var qat: [QATSection]
    package var eval: EvalSection
    /// World ranks that serve the teacher during KD (the rest train data-parallel).
    package var teachers: Int?

    package struct TaskSection: Codable, Sendable, Equatable {
        /// gsm8k, gsm-symbolic or arith.
        package var name: String
        /// Problems (with their worked solutions) a from-scratch teacher trains on.
        package var teacherTrain: Int?
        /// Training prompts the teacher answers to make the traces QAT trains on.
        package var tracePrompts: Int
        /// Held-out traces for KL and perplexity, from the validation split.
        package var heldout: Int
        /// Problems of the split that accuracy is reported on.
        package var test: Int
        /// Split accuracy is reported on: test (the default), or validation while tuning.
        package var split: String?
        /// Test problems from another task (e.g. gsm8k originals of the test templates).
        package var testTask: String?
        package var seed: UInt64?
        /// arith: the levels the from-scratch teacher trains on, in turn (a curriculum, e.g. one
        /// step, then 2-4 steps); the other sets use the task's own level.
        package var teacherLevels: [ArithLevel]?
        /// arith: the level of every other set (default: `ArithTask.defaultLevel`).
        package var level: ArithLevel?

        enum CodingKeys: String, CodingKey {
            case name, heldout, test, split, seed, level
            case teacherTrain = "teacher_train", tracePrompts = "trace_prompts", testTask = "test_task"
            case teacherLevels = "teacher_levels"
        }
    }

    package struct TeacherSection: Codable, Sendable, Equatable {
        /// An existing full-precision model (GGUF file or Hugging Face directory)...
        package var model: String?
        /// ...or one trained from scratch: its shape (`rqat init`) and training (`rqat sft`).
        package var initialize: InitSection?
        package var train: TrainSection?
    }

    package struct InitSection: Codable, Sendable, Equatable {
        package var arch: String
        package var hidden: Int
        package var layers: Int
        package var heads: Int
        package var kvHeads: Int?
        package var intermediate: Int
        package var headDim: Int?
        package var maxPositions: Int?
        package var seed: UInt64?

        enum CodingKeys: String, CodingKey {
            case arch, hidden, layers, heads, intermediate, seed
            case kvHeads = "kv_heads", headDim = "head_dim", maxPositions = "max_positions"
        }
    }

    /// Optimizer and data settings of a training run (teacher SFT or a QAT run).
    package struct TrainSection: Codable, Sendable, Equatable {
        package var steps: Int?
        package var lr: Double?
        package var warmup: Int?
        package var minLRRatio: Double?
        package var batchTokens: Int?
        package var seqLen: Int?
        package var packing: Bool?
        package var weightDecay: Double?
        /// QAT runs: evaluate the curve (held-out KL, accuracy) every this many steps (0 = end only).
        package var curveEvery: Int?
        package var seed: UInt64?

        enum CodingKeys: String, CodingKey {
            case steps, lr, warmup, packing, seed
            case minLRRatio = "min_lr_ratio", batchTokens = "batch_tokens", seqLen = "seq_len"
            case weightDecay = "weight_decay", curveEvery = "curve_every"
        }

        /// The trainer's options: the fields set here over `defaults`.
        package func options(over defaults: TrainOptions) -> TrainOptions {
            var o = defaults
            o.steps = steps ?? o.steps
            o.lr = lr ?? o.lr
            o.warmupSteps = warmup ?? o.warmupSteps
            o.minLRRatio = minLRRatio ?? o.minLRRatio
            o.batchTokens = batchTokens ?? o.batchTokens
            o.seqLen = seqLen ?? o.seqLen
            o.packing = packing ?? o.packing
            o.weightDecay = weightDecay ?? o.weightDecay
            o.seed = seed ?? o.seed
            return o
        }

        /// `self` with unset fields taken from `defaults`.
        package func over(_ defaults: TrainSection?) -> TrainSection {
            guard let d = defaults else { return self }
            return TrainSection(steps: steps ?? d.steps, lr: lr ?? d.lr, warmup: warmup ?? d.warmup,
                                minLRRatio: minLRRatio ?? d.minLRRatio, batchTokens: batchTokens ?? d.batchTokens,
                                seqLen: seqLen ?? d.seqLen, packing: packing ?? d.packing,
                                weightDecay: weightDecay ?? d.weightDecay, curveEvery: curveEvery ?? d.curveEvery,
                                seed: seed ?? d.seed)
        }
    }

    package struct TracesSection: Codable, Sendable, Equatable {
        /// 0 = greedy.
        package var temperature: Float
        package var topP: Float?
        package var maxTokens: Int
        package var batch: Int?
        /// Keep only traces whose final answer is right ("correct"), or all of them ("all").
        package var keep: String?

        enum CodingKeys: String, CodingKey {
            case temperature, batch, keep
            case topP = "top_p", maxTokens = "max_tokens"
        }
    }

    package struct CalibrationSection: Codable, Sendable, Equatable {
        package var name: String
        /// "traces" (the teacher's own reasoning traces) or a text/JSONL file of prose.
        package var source: String
        package var windows: Int
        package var length: Int
    }

    package struct PTQSection: Codable, Sendable, Equatable {
        /// rtn or gptq.
        package var method: String
        package var scheme: String
        /// Name of a calibration set (GPTQ needs one; RTN ignores it).
        package var calibration: String?
        /// false: no accuracy evaluation of this init (it still seeds QAT runs), e.g. for an
        /// ablation read from the QAT runs' held-out KL curves alone.
        package var evaluate: Bool?

        /// The stage's name, also how QAT entries refer to it: "gptq-w3g128" (+ "-<calibration>"
        /// when the calibration is not the first one).
        package func stageName(defaultCalibration: String?) -> String {
            let base = "\(method)-\(scheme)"
            guard method != "rtn", let c = calibration, c != defaultCalibration else { return base }
            return "\(base)-\(c)"
        }

        /// The entry as its stage's input: whether it is evaluated does not change the model.
        var withoutEvaluate: PTQSection { var p = self; p.evaluate = nil; return p }
    }

    package struct QATSection: Codable, Sendable, Equatable {
        /// The PTQ stage it starts from ("gptq-w3g128").
        package var from: String
        /// kd (= kd-fkl, forward KL to the teacher's distribution), kd-rkl (reverse KL), kd-jsd
        /// (generalized JSD, beta 0.5) or sft (cross-entropy on the traces).
        package var objective: String
        package var train: TrainSection?
        /// false: no accuracy evaluation of the result (its curve is still measured).
        package var evaluate: Bool?
        /// From a FlatQuant init: train its transforms with the weights (default: fixed).
        package var trainTransforms: Bool?

        package var stageName: String { "\(from)+\(objective)" + (trainTransforms == true ? "+trained-transforms" : "") }

        /// The entry as its stage's input: whether it is evaluated does not change what it trains.
        var withoutEvaluate: QATSection { var q = self; q.evaluate = nil; return q }

        enum CodingKeys: String, CodingKey {
            case from, objective, train, evaluate
            case trainTransforms = "train_transforms"
        }
    }

    package struct EvalSection: Codable, Sendable, Equatable {
        package var greedy: Bool?
        package var seeds: [UInt64]?
        package var temperature: Float?
        package var topP: Float?
        package var maxTokens: Int
        package var batch: Int?
        /// Problems of the validation split asked at each point of the QAT curves.
        package var curveProblems: Int?
        /// Also report accuracy with sampling (the paper's setting) besides greedy.
        package var sampled: Bool?

        enum CodingKeys: String, CodingKey {
            case greedy, seeds, temperature, batch, sampled
            case topP = "top_p", maxTokens = "max_tokens", curveProblems = "curve_problems"
        }
    }

    /// Defaults every QAT run takes unless its entry overrides them.
    package var qatTrain: TrainSection?
    /// RL (GRPO) runs, after the QAT runs.
    package var rl: [RLSection]?
    /// Defaults every RL run takes unless its entry overrides them.
    package var rlTrain: RLOptions?

    enum CodingKeys: String, CodingKey {
        case out, task, teacher, traces, calibration, ptq, qat, eval, teachers, rl
        case qatTrain = "qat_train", rlTrain = "rl_train"
    }

    /// One RL run: GRPO from a QAT run's result or a PTQ init.
    package struct RLSection: Codable, Sendable, Equatable {
        /// A QAT run ("gptq-w3g128+kd") or a PTQ stage ("rtn-w2g64") to start from.
        package var from: String
        /// Distinguishes runs from the same start: the stage is "<from>+rl" or "<from>+rl-<tag>".
        package var tag: String?
        package var settings: RLOptions?
        /// false: no accuracy evaluation of the result.
        package var evaluate: Bool?

        package var stageName: String { "\(from)+rl" + (tag.map { "-\($0)" } ?? "") }
        var withoutEvaluate: RLSection { var r = self; r.evaluate = nil; return r }
    }

    /// The `rqat rl` options of a pipeline RL run (unset: `rl_train`'s, then rqat rl's defaults).
    package typealias RLOptions = Jobs.RLOptions

    package static func load(_ url: URL) throws -> PipelineConfig {
        guard let data = try? Data(contentsOf: url) else {
            throw ConfigError("\(url.path): cannot read the config; check the path")
        }
        let config = try StrictJSON.decode(PipelineConfig.self, from: data, file: url.path)
        try config.validate(file: url.path)
        return config
    }

    /// Cross-references a JSON schema cannot express.
    package func validate(file: String) throws {
        if (teacher.model == nil) == (teacher.initialize == nil) {
            throw ConfigError("\(file): teacher needs exactly one of \"model\" (an existing model) and \"initialize\" (train one from scratch)")
        }
        if teacher.initialize != nil && teacher.train == nil {
            throw ConfigError("\(file): teacher.initialize needs teacher.train (how to train it)")
        }
        let calibrations = calibration.map(\.name)
        if Set(calibrations).count != calibrations.count { throw ConfigError("\(file): calibration names repeat; give each a distinct name") }
        for (i, p) in ptq.enumerated() {
            guard ["rtn", "gptq", "quarot", "flatquant"].contains(p.method) else {
                throw ConfigError("\(file): ptq[\(i)].method \"\(p.method)\" is unknown; use rtn, gptq, quarot (rotation, then RTN) or flatquant (learned transforms, then RTN)")
            }
            if ["gptq", "flatquant"].contains(p.method) && calibrations.isEmpty { throw ConfigError("\(file): ptq[\(i)] is \(p.method == "gptq" ? "GPTQ" : "FlatQuant"), which needs a calibration set") }
            if let c = p.calibration, !calibrations.contains(c) {
                throw ConfigError("\(file): ptq[\(i)].calibration \"\(c)\" is not one of the calibration names (\(calibrations.joined(separator: ", ")))")
            }
        }
        let ptqNames = ptq.map { $0.stageName(defaultCalibration: calibrations.first) }
        for (i, q) in qat.enumerated() {
            guard ptqNames.contains(q.from) else {
                throw ConfigError("\(file): qat[\(i)].from \"\(q.from)\" names no PTQ stage; the PTQ stages are \(ptqNames.joined(separator: ", "))")
            }
            guard ["kd", "kd-fkl", "kd-rkl", "kd-jsd", "sft"].contains(q.objective) else {
                throw ConfigError("\(file): qat[\(i)].objective \"\(q.objective)\" is unknown; use kd (= kd-fkl), kd-rkl, kd-jsd or sft")
            }
        }
        let qatNames = qat.map(\.stageName)
        for (i, r) in (rl ?? []).enumerated() {
            guard qatNames.contains(r.from) || ptqNames.contains(r.from) else {
                throw ConfigError("\(file): rl[\(i)].from \"\(r.from)\" names no QAT run or PTQ stage; they are \((qatNames + ptqNames).joined(separator: ", "))")
            }
            let o = try (r.settings ?? RLOptions()).over(rlTrain)
            if let g = o.groupSize, g < 2 { throw ConfigError("\(file): rl[\(i)] group_size \(g): GRPO compares completions within a group; use at least 2") }
            if let v = o.scaleRewards, RewardScaling(rawValue: v) == nil { throw ConfigError("\(file): rl[\(i)] scale_rewards \"\(v)\" is unknown; use group, batch or none") }
            if let v = o.lossAgg, LossAggregation(rawValue: v) == nil { throw ConfigError("\(file): rl[\(i)] loss_agg \"\(v)\" is unknown; use token-mean, seq-mean or dr-grpo") }
            if let v = o.klEstimator, KLEstimator(rawValue: v) == nil { throw ConfigError("\(file): rl[\(i)] kl_estimator \"\(v)\" is unknown; use k1, k2 or k3") }
            if let v = o.reference, !["teacher", "start"].contains(v) { throw ConfigError("\(file): rl[\(i)] reference \"\(v)\" is unknown; use teacher or start") }
            if ((o.klCoef ?? 0) != 0 || (o.klReward ?? 0) != 0 || (o.kdCoef ?? 0) != 0) && o.reference == nil {
                throw ConfigError("\(file): rl[\(i)] kl_coef, kl_reward and kd_coef need reference (teacher or start)")
            }
        }
        let rlNames = (rl ?? []).map(\.stageName)
        if Set(rlNames).count != rlNames.count { throw ConfigError("\(file): two rl entries have the same from and tag; give each a distinct tag") }
        if let keep = traces.keep, !["all", "correct"].contains(keep) {
            throw ConfigError("\(file): traces.keep \"\(keep)\" is unknown; use all or correct")
        }
    }
}
