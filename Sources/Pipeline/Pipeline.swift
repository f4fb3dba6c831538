import Cluster
import Eval
import Foundation
import Formats
import Jobs
import Model
import Quant
import Reasoning
import RL
import Tensors
import Train

/// `rqat pipeline`: the workflow the paper consolidates, stage by stage, each in a directory of
/// the run with a manifest (`StageRunner`):
///
///     data -> teacher -> traces -> calibration-<name> -> ptq-<method>-<scheme>
///          -> qat-<ptq>+<kd|sft> (-> curve-...) -> eval-<model> -> report
///
/// Under mpirun every rank runs this; the stages spread their work over the ranks where it
/// pays (traces, evaluation: shares of the problems; KD: teacher ranks serve, students train
/// data-parallel) and run on rank 0 alone otherwise.
package struct PipelineRun {
    package var config: PipelineConfig
    /// The config file's folder: relative paths in the config are relative to it.
    package let base: URL
    package let assets: URL

    package init(config: PipelineConfig, base: URL, assets: URL) {
        self.config = config
        self.base = base
        self.assets = assets
    }

    package init(configFile: URL, assets: URL) throws {
        self.init(config: try PipelineConfig.load(configFile), base: configFile.deletingLastPathComponent(), assets: assets)
    }

    func resolve(_ path: String) -> URL {
        path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)
    }

    package var root: URL { resolve(config.out) }

    var evalSettings: AccuracySettings {
        let e = config.eval
        return AccuracySettings(seeds: e.seeds ?? [42, 43, 44], temperature: (e.greedy ?? true) ? 0 : (e.temperature ?? 0.6),
                                topP: e.topP ?? 0.95, maxTokens: e.maxTokens, batch: e.batch ?? 32)
    }

    var sampledSettings: AccuracySettings {
        var s = evalSettings
        s.temperature = config.eval.temperature ?? 0.6
        return s
    }

    /// Runs every stage (skipping unchanged ones) and writes the report; returns it on rank 0.
    @discardableResult
    package func run(world: Communicator, log: @escaping (String) -> Void) throws -> PipelineReport? {
        let start = Date()
        let runner = StageRunner(root: root, world: world, log: log)
        let lead = world.rank == 0
        let seed = config.task.seed ?? 0

        // data: the problems every later stage reads.
        let dataDir = runner.directory("data")
        let dataDigest = try runner.run("data", inputs: config.task) { dir in
            try runner.rank0Only { try writeData(dir, seed: seed, log: log) }
        }

        // teacher: an existing model, or one trained from scratch on the task's worked solutions.
        // Only what the teacher trains on is its input, so a change of the other sets keeps it.
        var teacherInputs: [String: String] = ["task": config.task.name, "seed": "\(seed)",
                                               "teacher_train": "\(config.task.teacherTrain ?? 0)",
                                               "levels": try StageRunner.digest(config.task.teacherLevels ?? config.task.level.map { [$0] } ?? []).canonical]
        if let model = config.teacher.model {
            teacherInputs["model"] = model
            teacherInputs["fingerprint"] = try Self.fingerprint(resolve(model))
        } else {
            teacherInputs["teacher"] = try StageRunner.digest(config.teacher).canonical
        }
        let teacherDigest = try runner.run("teacher", inputs: teacherInputs) { dir in
            guard config.teacher.model == nil else { return }
            try runner.rank0Only {
                try TeacherTraining(config: config.teacher, task: try TaskRegistry.task(named: config.task.name, assets: assets), data: dataDir.appendingPathComponent("teacher-train.jsonl"), dir: dir)
                    .run(log: log)
            }
        }
        let teacherPath = try config.teacher.model.map { resolve($0).path } ?? TeacherTraining.modelPath(in: runner.directory("teacher"))
        let teacher = try LanguageModel(path: teacherPath)
        let prompted = PromptedModel(teacher)
        let format: SFTFormat = prompted.chat ? .chat : .plain

        // traces: the teacher answers the training prompts (QAT data, calibration) and the
        // held-out ones (KL, perplexity), each trace kept with its correctness.
        let tracesDir = runner.directory("traces")
        // Ranks change batching (hence rounding) and data-parallel sums, so they are an input too.
        let layout = "\(world.size) ranks, \(config.teachers ?? 1) teachers"
        let tracesDigest = try runner.run("traces", inputs: ["teacher": teacherDigest, "data": dataDigest, "layout": layout,
                                                            "settings": try StageRunner.digest(config.traces).canonical]) { dir in
            let settings = AccuracySettings(seeds: [seed], temperature: config.traces.temperature, topP: config.traces.topP ?? 1,
                                            maxTokens: config.traces.maxTokens, batch: config.traces.batch ?? 32)
            for (input, output) in [("trace-prompts", "traces"), ("heldout", "heldout-traces")] {
                let problems = try Self.readProblems(dataDir.appendingPathComponent("\(input).jsonl"))
                let outcomes = try EvalJob.outcomes(problems: problems, model: prompted, modelName: teacherPath, settings: settings, world: world, log: log)
                if lead {
                    let kept = outcomes.filter { config.traces.keep != "correct" || $0.flexibleCorrect }
                    try JobJSON.writeLines(kept.map(Trace.init), to: dir.appendingPathComponent("\(output).jsonl"))
                    let right = outcomes.filter(\.flexibleCorrect).count
                    log(String(format: "traces: %@: %d of %d teacher answers correct (%.1f%%), %d kept", input, right, outcomes.count,
                               100 * Double(right) / Double(max(outcomes.count, 1)), kept.count))
                }
            }
        }

        // calibration sets.
        var calibrationDigests: [String: String] = [:]
        for c in config.calibration {
            calibrationDigests[c.name] = try runner.run("calibration-\(c.name)", inputs: ["traces": tracesDigest, "settings": try StageRunner.digest(c).canonical]) { dir in
                try runner.rank0Only {
                    let texts: [String]
                    if c.source == "traces" {
                        texts = try Self.readTraces(tracesDir.appendingPathComponent("traces.jsonl")).map { trace in
                            prompted.chatTemplate.prompt(trace.prompt, chat: prompted.chat) + trace.completion
                        }
                    } else {
                        texts = try TextRecords.read(resolve(c.source).path, field: "text", what: "calibration source")
                    }
                    try JobJSON.writeLines(texts.map { ["text": $0] }, to: dir.appendingPathComponent("calibration.jsonl"))
                }
            }
        }

        // PTQ inits.
        let defaultCalibration = config.calibration.first?.name
        var ptqDigests: [String: (digest: String, scheme: QuantScheme, dir: URL)] = [:]
        for p in config.ptq {
            let name = p.stageName(defaultCalibration: defaultCalibration)
            let calibrationName = p.method == "rtn" ? nil : (p.calibration ?? defaultCalibration)
            let calibration = config.calibration.first { $0.name == calibrationName }
            let scheme = try QuantScheme.parse(p.scheme)
            let digest = try runner.run("ptq-\(name)", inputs: ["teacher": teacherDigest, "ptq": try StageRunner.digest(p.withoutEvaluate).canonical,
                                                               "calibration": calibrationName.flatMap { calibrationDigests[$0] } ?? "-"]) { dir in
                try runner.rank0Only {
                    // quarot, flatquant: the transform, then RTN on the transformed weights.
                    let transform = PTQTransform(rawValue: p.method)
                    var job = PTQJob(model: teacherPath, scheme: scheme, method: transform != nil ? .rtn : PTQMethod(rawValue: p.method)!,
                                     calibration: calibration.map { runner.directory("calibration-\($0.name)").appendingPathComponent("calibration.jsonl").path },
                                     calibrationSamples: calibration?.windows ?? 0, seqLen: calibration?.length ?? 256,
                                     clip: true, actOrder: true, damp: 0.01, out: dir.appendingPathComponent("model").path)
                    job.transform = transform
                    _ = try job.run(log: { log("ptq-\(name): " + $0) })
                }
            }
            ptqDigests[name] = (digest, scheme, runner.directory("ptq-\(name)"))
        }

        // Held-out traces scored by every model (built on rank 0, once, when first needed).
        var heldoutCache: HeldoutSet?
        func heldout() throws -> HeldoutSet {
            if let h = heldoutCache { return h }
            let h = HeldoutSet(traces: try Self.readTraces(tracesDir.appendingPathComponent("heldout-traces.jsonl")), teacher: teacher, format: format, world: world)
            heldoutCache = h
            return h
        }
        let curveProblems = try Self.readProblems(dataDir.appendingPathComponent("curve.jsonl"))
        var curveSettings = evalSettings
        curveSettings.temperature = 0

        // QAT runs from the PTQ inits.
        var qatRuns: [(name: String, digest: String, dir: URL, from: String, objective: String, evaluate: Bool)] = []
        for q in config.qat {
            let from = ptqDigests[q.from]!
            let train = (q.train ?? PipelineConfig.TrainSection()).over(config.qatTrain)
            let digest = try runner.run("qat-\(q.stageName)", inputs: ["ptq": from.digest, "traces": tracesDigest, "layout": layout,
                                                                       "qat": try StageRunner.digest(q.withoutEvaluate).canonical,
                                                                       "train": try StageRunner.digest(train).canonical]) { dir in
                try QATRun(teacher: teacherPath, student: from.dir.appendingPathComponent("model").path, scheme: from.scheme,
                           objective: q.objective, train: train, data: tracesDir.appendingPathComponent("traces.jsonl").path,
                           format: format, teachers: config.teachers ?? 1, dir: dir, trainTransforms: q.trainTransforms ?? false)
                    .run(world: world, log: { log("qat-\(q.stageName): " + $0) })
                guard (train.curveEvery ?? 0) > 0 else { return }
                // The lead student writes the checkpoints; every rank lists them after it has.
                try world.barrier()
                // The curve: the PTQ init (step 0) and every saved checkpoint.
                var points: [CurvePoint] = []
                let initModel = try Checkpoint.open(from.dir.appendingPathComponent("model").path)
                var stages: [(Int, () throws -> (TrainableDecoder, LanguageModel?))] = [(0, {
                    let lm = try LanguageModel(checkpoint: initModel)
                    let student = try TrainableDecoder(config: lm.config, source: lm.checkpoint.weights)
                    try student.installRunTimeTransforms(try OnlineTransforms(initModel), activation: initModel.activationQuant)
                    return (student, lm)
                })]
                for c in QATRun.checkpoints(in: dir) {
                    stages.append((c.step, { (try QATRun.quantizedModel(checkpoint: c.url, scheme: from.scheme, initModel: initModel).0, nil) }))
                }
                for (step, load) in stages {
                    let (student, lm) = try load()
                    let decoder = lm?.decoder ?? Decoder(weights: student.inferenceWeights())
                    var point = CurvePoint(step: step)
                    if !curveProblems.isEmpty {
                        let model = PromptedModel(decoder: decoder, tokenizer: teacher.tokenizer, chatTemplate: teacher.chatTemplate,
                                                  stopTokens: teacher.stopTokens, chat: prompted.chat)
                        let outcomes = try EvalJob.outcomes(problems: curveProblems, model: model, settings: curveSettings, world: world, log: { _ in })
                        point.accuracy = Double(outcomes.filter(\.flexibleCorrect).count) / Double(outcomes.count)
                    }
                    point.heldoutKL = try heldout().kl(student: student)
                    points.append(point)
                    if lead {
                        log(String(format: "qat-%@: curve at step %d: accuracy %@, held-out KL %@", q.stageName, step,
                                   point.accuracy.map { String(format: "%.1f%%", 100 * $0) } ?? "-",
                                   point.heldoutKL.map { String(format: "%.4f", $0) } ?? "-"))
                    }
                }
                if lead {
                    let curve = QATCurve(run: q.stageName, from: q.from, objective: q.objective, points: points,
                                         loss: try Self.lossCurve(dir.appendingPathComponent("metrics.jsonl")))
                    try JobJSON.write(curve, to: dir.appendingPathComponent("curve.json"))
                }
            }
            qatRuns.append((q.stageName, digest, runner.directory("qat-\(q.stageName)"), q.from, q.objective, q.evaluate ?? true))
        }

        // RL (GRPO) runs from QAT results or PTQ inits: teacher ranks serve the rollouts.
        var rlRuns: [(name: String, digest: String, dir: URL, from: String, scheme: String, evaluate: Bool)] = []
        for r in config.rl ?? [] {
            let options = try (r.settings ?? PipelineConfig.RLOptions()).over(config.rlTrain)
            let start: (policy: String, digest: String, ptq: String)
            if let q = qatRuns.first(where: { $0.name == r.from }) {
                guard let last = TrainCheckpoint.latestCheckpoint(in: q.dir) else {
                    throw JobError("\(q.dir.path) has no checkpoint for rl \(r.stageName) to start from; delete the directory and re-run")
                }
                start = (last.path, q.digest, q.from)
            } else {
                start = (ptqDigests[r.from]!.dir.appendingPathComponent("model").path, ptqDigests[r.from]!.digest, r.from)
            }
            let scheme = ptqDigests[start.ptq]!.scheme
            let reference = options.reference.map { $0 == "teacher" ? teacherPath : start.policy }
            let digest = try runner.run("rl-\(r.stageName)", inputs: ["from": start.digest, "rl": try StageRunner.digest(r.withoutEvaluate).canonical,
                                                                      "defaults": try StageRunner.digest(options).canonical, "data": dataDigest]) { dir in
                try RLRun(policy: start.policy, scheme: scheme, options: options, reference: reference, task: try mainTask(),
                          dataSeed: seed, teachers: config.teachers ?? 1, dir: dir,
                          initModel: ptqDigests[start.ptq]!.dir.appendingPathComponent("model").path)
                    .run(world: world, log: { log("rl-\(r.stageName): " + $0) })
            }
            let dir = runner.directory("rl-\(r.stageName)")
            let stopped = RLRun.Stop.read(in: dir) != nil
            rlRuns.append((r.stageName, digest, dir, r.from, config.ptq.first { $0.stageName(defaultCalibration: defaultCalibration) == start.ptq }!.scheme,
                           (r.evaluate ?? true) && !stopped))
        }

        // Evaluation of every model on the test problems.
        let test = try Self.readProblems(dataDir.appendingPathComponent("test.jsonl"))
        var models: [(name: String, path: String, method: String, scheme: String?, digest: String)] = [("teacher", teacherPath, "fp", nil, teacherDigest)]
        for p in config.ptq where p.evaluate ?? true {
            let name = p.stageName(defaultCalibration: defaultCalibration)
            models.append((name, ptqDigests[name]!.dir.appendingPathComponent("model").path, p.method, p.scheme, ptqDigests[name]!.digest))
        }
        for q in qatRuns where q.evaluate {
            models.append((q.name, q.dir.appendingPathComponent("quantized").path, "\(q.from.split(separator: "-")[0])+\(q.objective)",
                           config.ptq.first { $0.stageName(defaultCalibration: defaultCalibration) == q.from }?.scheme, q.digest))
        }
        for r in rlRuns where r.evaluate {
            models.append((r.name, r.dir.appendingPathComponent("quantized").path, "\(r.from)+rl", r.scheme, r.digest))
        }
        var evaluations: [ModelEvaluation] = []
        for m in models {
            let settingsList = [evalSettings] + ((config.eval.sampled ?? false) && evalSettings.greedy ? [sampledSettings] : [])
            try runner.run("eval-\(m.name)", inputs: ["model": m.digest, "data": dataDigest, "layout": layout,
                                                      "eval": try StageRunner.digest(config.eval).canonical]) { dir in
                var evaluation = ModelEvaluation(name: m.name, path: m.path, method: m.method, scheme: m.scheme)
                let lm = m.name == "teacher" ? teacher : try LanguageModel(path: m.path)
                let model = PromptedModel(lm, chat: prompted.chat)
                for (i, settings) in settingsList.enumerated() {
                    let t0 = Date()
                    let outcomes = try EvalJob.outcomes(problems: test, model: model, modelName: m.path, settings: settings, world: world, log: log)
                    let summary = AccuracyEval.summarize(outcomes, problems: test, settings: settings, model: m.name,
                                                         task: config.task.testTask ?? config.task.name,
                                                         split: config.task.split ?? "test", seconds: Date().timeIntervalSince(t0))
                    if i == 0 { evaluation.accuracy = summary } else { evaluation.sampledAccuracy = summary }
                    if lead { try JobJSON.writeLines(outcomes, to: dir.appendingPathComponent(i == 0 ? "outcomes.jsonl" : "outcomes-sampled.jsonl")) }
                    if lead {
                        log(String(format: "eval-%@: strict %.1f%%, flexible %.1f%% on %d problems", m.name,
                                   100 * summary.strict.mean, 100 * summary.flexible.mean, test.count))
                    }
                }
                let measured = try heldout().measure(lm, isTeacher: m.name == "teacher")
                if lead {
                    evaluation.heldoutKL = measured.kl
                    evaluation.perplexity = measured.perplexity
                    evaluation.bitsPerWeight = m.scheme.flatMap { try? QuantScheme.parse($0) }.map(Self.bitsPerWeight) ?? 32
                    evaluation.sizeBytes = Self.weightBytes(URL(fileURLWithPath: m.path))
                    try JobJSON.write(evaluation, to: dir.appendingPathComponent("evaluation.json"))
                }
            }
            if lead {
                evaluations.append(try JobJSON.read(ModelEvaluation.self, from: runner.directory("eval-\(m.name)").appendingPathComponent("evaluation.json"),
                                                    missing: "the eval-\(m.name) stage writes it; delete its directory and re-run"))
            }
        }
        guard lead else { return nil }
        let report = try PipelineReport.build(config: config, root: root, evaluations: evaluations,
                                              qatRuns: qatRuns.map { ($0.name, $0.dir, $0.from, $0.objective) },
                                              rlRuns: rlRuns.map { ($0.name, $0.dir, $0.from) },
                                              stagesRun: runner.ran, stagesSkipped: runner.skipped,
                                              seconds: Date().timeIntervalSince(start))
        try report.write(to: root)
        log("pipeline: report written to \(root.appendingPathComponent("report.md").path) and report.html")
        return report
    }

    // MARK: - Data

    /// The task of every set but the teacher's training data (arith at `task.level`).
    func mainTask() throws -> any ReasoningTask {
        let t = config.task
        if t.name == "arith", let level = t.level { return ArithTask(levels: [level]) }
        return try TaskRegistry.task(named: t.name, assets: assets)
    }

    func writeData(_ dir: URL, seed: UInt64, log: (String) -> Void) throws {
        let t = config.task
        if t.name != "arith" && (t.level != nil || t.teacherLevels != nil) {
            throw ConfigError("task.level and task.teacher_levels apply to the arith task only; remove them")
        }
        let task = try mainTask()
        let teacherTask = t.name == "arith" ? (t.teacherLevels.map { ArithTask(levels: $0) } ?? task) : task
        let testTask = try t.testTask.map { try TaskRegistry.task(named: $0, assets: assets) } ?? task
        let testSplit = Split(rawValue: t.split ?? "test") ?? .test
        var sets: [(String, [Problem])] = [
            ("trace-prompts", try task.problems(split: .train, count: t.tracePrompts, seed: seed &+ 1)),
            ("heldout", try task.problems(split: .validation, count: t.heldout, seed: seed)),
            ("test", try testTask.problems(split: testSplit, count: t.test, seed: seed)),
            ("curve", try task.problems(split: .validation, count: config.eval.curveProblems ?? 0, seed: seed &+ 2)),
        ]
        if let n = t.teacherTrain { sets.append(("teacher-train", try teacherTask.problems(split: .train, count: n, seed: seed))) }
        for (name, problems) in sets {
            try JobJSON.writeLines(problems, to: dir.appendingPathComponent("\(name).jsonl"))
            log("data: \(problems.count) \(name) problems")
        }
    }

    /// (step, loss) of every line of a run's metrics.jsonl.
    static func lossCurve(_ url: URL) throws -> [[Double]] {
        try readLines(url).compactMap { line in
            guard let r = try? JSONSerialization.jsonObject(with: line) as? [String: Any],
                  let step = r["step"] as? Double, let loss = r["loss"] as? Double else { return nil }
            return [step, loss]
        }
    }

    static func readProblems(_ url: URL) throws -> [Problem] {
        try readLines(url).map { try JSONDecoder().decode(Problem.self, from: $0) }
    }

    static func readTraces(_ url: URL) throws -> [Trace] {
        try readLines(url).map { try JSONDecoder().decode(Trace.self, from: $0) }
    }

    static func readLines(_ url: URL) throws -> [Data] {
        guard let data = try? Data(contentsOf: url) else {
            throw JobError("\(url.path) is missing; delete the stage directory it belongs to and re-run")
        }
        return data.split(separator: 0x0A).map { Data($0) }
    }

    /// Size and modification time of a model's files, so a replaced model file reruns its stages.
    static func fingerprint(_ url: URL) throws -> String {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw ConfigError("teacher.model \(url.path) does not exist; give a GGUF file or a Hugging Face directory")
        }
        let files = isDirectory.boolValue ? (try fm.contentsOfDirectory(atPath: url.path)).sorted().map { url.appendingPathComponent($0) } : [url]
        return try files.map { f in
            let a = try fm.attributesOfItem(atPath: f.path)
            return "\(f.lastPathComponent):\((a[.size] as? Int) ?? 0):\(Int((a[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0))"
        }.joined(separator: ",")
    }

    /// Storage of the quantized linear weights per weight: codes, plus an fp16 scale and a
    /// `bits`-bit zero point per group (asymmetric) as the packed format stores them.
    static func bitsPerWeight(_ scheme: QuantScheme) -> Double {
        guard let bits = scheme.weightBits else { return 32 }
        guard let group = scheme.groupSize else { return Double(bits) }
        return Double(bits) + Double(16 + (scheme.symmetric ? 0 : bits)) / Double(group)
    }

    /// Bytes of the model's weight files on disk.
    static func weightBytes(_ url: URL) -> Int {
        let fm = FileManager.default
        let files = (try? fm.contentsOfDirectory(atPath: url.path))?.map { url.appendingPathComponent($0) } ?? [url]
        return files.filter { $0.pathExtension == "safetensors" || $0.pathExtension == "gguf" }
            .compactMap { try? fm.attributesOfItem(atPath: $0.path)[.size] as? Int }.reduce(0, +)
    }
}

/// One teacher answer kept for training: what `rqat sft`/`train` read ("prompt", "completion").
package struct Trace: Codable, Sendable, Equatable {
    package var id: String
    package var prompt: String
    package var completion: String
    package var correct: Bool

    init(_ o: ProblemOutcome) {
        id = o.id
        prompt = o.prompt
        completion = o.completion
        correct = o.flexibleCorrect
    }
}

/// Held-out traces scored by every model: KL to the teacher at the completion tokens, and
/// perplexity of the whole traces. Every rank scores its share of the traces (trace i on rank
/// i mod size) and the sums are added over the world, so all ranks work and all get the figures.
struct HeldoutSet {
    let examples: [SFTExample]
    let distillation: HeldoutDistillation
    let world: Communicator

    init(traces: [Trace], teacher: LanguageModel, format: SFTFormat, world: Communicator) {
        examples = traces.enumerated().filter { $0.offset % world.size == world.rank }.map { i, t in
            SFTDataset.tokenize(prompt: t.prompt, completion: t.completion, line: i + 1, tokenizer: teacher.tokenizer,
                                format: format, template: teacher.chatTemplate)
        }
        distillation = HeldoutDistillation(teacher: teacher.decoder, examples: examples)
        self.world = world
    }

    /// Mean KL per completion position over all ranks' traces.
    func kl(student: TrainableDecoder) throws -> Double {
        let part = distillation.evaluate(student: student)
        let total = try world.allReduceSum([part.sums.reduce(0, +), Double(part.positions)])
        return total[0] / max(total[1], 1)
    }

    /// Perplexity of the completion tokens (the reasoning the model writes; the prompts' names
    /// and numbers are random and would swamp it), and the KL at the same positions.
    func measure(_ lm: LanguageModel, isTeacher: Bool) throws -> (kl: Double?, perplexity: Double) {
        let part = lm.decoder.perplexity(of: examples.map(\.tokens), positions: examples.map(HeldoutDistillation.completionPositions))
        let total = try world.allReduceSum([part.totalNLL, Double(part.predictedTokens)])
        let perplexity = total[1] > 0 ? exp(total[0] / total[1]) : .nan
        guard !isTeacher else { return (0, perplexity) }
        // Through the training decoder, with the model's own online transforms and quantizers.
        let student = try TrainableDecoder(config: lm.config, source: lm.checkpoint.weights)
        try student.installRunTimeTransforms(try OnlineTransforms(lm.checkpoint), activation: lm.checkpoint.activationQuant)
        return (try kl(student: student), perplexity)
    }
}
