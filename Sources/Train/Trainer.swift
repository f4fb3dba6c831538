import Foundation
import Formats
import Model
import Tensors

/// Settings of a training run (what `rqat sft` and `rqat train` expose).
package struct TrainOptions: Codable, Equatable, Sendable {
    package var steps = 100
    /// Tokens per micro-batch (rows x seqLen).
    package var batchTokens = 2048
    package var seqLen = 256
    /// Micro-batches whose gradients are summed into one optimizer step.
    package var gradAccumulation = 1
    package var packing = false
    package var lr = 1e-4
    package var warmupSteps = 0
    package var minLRRatio = 0.1
    package var cosine = true
    package var weightDecay = 0.01
    package var beta1 = 0.9
    package var beta2 = 0.95
    package var eps = 1e-8
    /// Global gradient-norm clip (nil = off).
    package var maxGradNorm: Double? = 1.0
    package var seed: UInt64 = 0
    /// Save a checkpoint every this many steps (0 = only at the end).
    package var saveEvery = 0
    package var keepLast = 2
    package var freeze: [String] = []
    /// Consecutive skipped (non-finite) steps that stop the run.
    package var maxBadSteps = 3

    package init() {}
}

/// What one optimizer step did; also the line written to `metrics.jsonl`.
package struct StepReport: Codable, Sendable {
    package var step: Int
    package var loss: Double
    package var lr: Double
    package var gradNorm: Double
    package var tokens: Int
    package var tokensPerSecond: Double
    package var elapsedSeconds: Double
    package var skipped: Bool

    enum CodingKeys: String, CodingKey {
        case step, loss, lr, tokens, skipped
        case gradNorm = "grad_norm"
        case tokensPerSecond = "tokens_per_s"
        case elapsedSeconds = "elapsed_s"
    }
}

/// Where a run's micro-batches come from, in order: supervised examples (`SFTBatcher`), or
/// rollouts scored by a reward (RL). The trainer shards each batch over data-parallel ranks.
package protocol BatchSource: AnyObject {
    /// Rows of every micro-batch (before sharding).
    var rowsPerBatch: Int { get }
    /// The position after the last batch drawn: what a checkpoint records to resume from.
    var position: DataPosition { get }
    func nextBatch() throws -> SFTBatch
}

/// Where RL rollouts are sampled: in this process from the policy's own weights, or on serving
/// ranks that receive the policy first. Batches are first in, first out: `submit` starts one
/// from the policy as it is now, numbered `version` (the rollout batches it has been trained
/// on); `collect` waits for the oldest one submitted and returns each completion with the
/// version of the policy that sampled it. Collecting right after submitting is synchronous
/// (lag 0); submitting the next batch before training on this one lets sampling overlap training.
package protocol RolloutGenerator: AnyObject {
    func submit(_ requests: [GenerationRequest], version: Int) throws
    func collect() throws -> [SampledCompletion]
}

/// A completion and the version of the policy that sampled it.
package struct SampledCompletion: Sendable {
    package var result: GenerationResult
    package var version: Int
    package init(result: GenerationResult, version: Int) {
        self.result = result
        self.version = version
    }
}

/// Makes the run's batch source, starting at a data position drawn from a seed (a new run's,
/// or the ones a resumed checkpoint recorded).
package typealias BatchSourceFactory = (_ seed: UInt64, _ position: DataPosition) throws -> any BatchSource

/// What a training step minimises on one micro-batch: cross-entropy on the data (SFT) or a
/// divergence to a teacher (KD), or a policy-gradient surrogate (GRPO). The objective sees every
/// micro-batch `lookahead` micro-batches before it is trained on, so a remote teacher can work
/// ahead; it may ask for several optimizer updates on the same micro-batches (PPO-style epochs).
package protocol TrainingObjective: AnyObject {
    /// How many micro-batches ahead of their use `prepare` is called (0 = just in time).
    var lookahead: Int { get }
    /// Optimizer steps made on each drawn set of micro-batches (1 = every step draws new ones).
    /// `lossAndGradient` is called again with the same batch and id on each of them.
    var updatesPerBatch: Int { get }
    /// Called once per micro-batch, in order, `lookahead` micro-batches before `lossAndGradient`.
    func prepare(_ batch: SFTBatch, id: Int) throws
    /// Loss of micro-batch `id` (weighted sum / `normalizer`); its gradient with respect to the
    /// logits (rows x V) overwrites `logits` in place.
    func lossAndGradient(_ batch: SFTBatch, id: Int, logits: Tensor, vocab: Int, normalizer: Double) throws -> Double
}

extension TrainingObjective {
    package var updatesPerBatch: Int { 1 }
}

/// Masked cross-entropy on the batch's targets: supervised fine-tuning.
package final class CrossEntropyObjective: TrainingObjective {
    package init() {}
    package var lookahead: Int { 0 }
    package func prepare(_ batch: SFTBatch, id: Int) {}
    package func lossAndGradient(_ batch: SFTBatch, id: Int, logits: Tensor, vocab: Int, normalizer: Double) -> Double {
        CrossEntropy.forwardBackward(logits: logits.ptr, vocab: vocab, targets: batch.targets, weights: batch.lossMask,
                                     normalizer: normalizer, gradient: logits.ptr)
    }
}

/// How a rank takes part in data-parallel training: which rows of every micro-batch it trains
/// on, and how gradients and scalars are summed over the ranks. The trainer calls `reduce`
/// after the last backward of a step; after it every rank holds the same gradient.
package protocol DataParallelGroup: AnyObject {
    /// This rank's index among the ranks that train, and their number.
    var index: Int { get }
    var count: Int { get }
    /// Called before the last micro-batch's backward of a step, so the group can start
    /// reducing gradients while backward still runs.
    func beginReduction(_ parameters: [Parameter], model: TrainableDecoder) throws
    /// Sums the parameters' gradients over the ranks (in place).
    func finishReduction(_ parameters: [Parameter]) throws
    /// Sums scalars over the ranks.
    func sum(_ values: [Double]) throws -> [Double]
    /// Stops the run when the ranks' weights differ (called every `syncCheckEvery` steps).
    func checkIdentical(_ parameters: [Parameter], step: Int) throws
    /// Only one rank writes checkpoints and metrics.
    var writesCheckpoints: Bool { get }
}

extension SFTBatch {
    /// Rows [rows.lowerBound, rows.upperBound) of the batch.
    package func rows(_ range: Range<Int>) -> SFTBatch {
        let t = range.lowerBound * seqLen..<range.upperBound * seqLen
        var shard = SFTBatch(rows: range.count, seqLen: seqLen, tokens: Array(tokens[t]), targets: Array(targets[t]),
                             lossMask: Array(lossMask[t]), documentStarts: Array(documentStarts[range]),
                             exampleCount: exampleCount, wholeBatchPredictedTokens: globalPredictedTokens,
                             firstRow: firstRow + range.lowerBound)
        shard.rollout = rollout?.slice(t)
        return shard
    }

    /// The rows rank `index` of `count` trains on: a contiguous, near-equal share.
    package func shard(_ index: Int, of count: Int) -> SFTBatch {
        rows(rows * index / count..<rows * (index + 1) / count)
    }
}

/// The training loop: micro-batches -> forward -> objective (loss and dL/dlogits) -> backward,
/// summed over `gradAccumulation` micro-batches (and over data-parallel ranks), clipped, AdamW
/// with warmup + cosine; checkpoints that resume bit for bit (weights, moments, data position,
/// RNG).
///
/// Data parallel: every rank draws the same global micro-batches (same seed) and trains on its
/// shard of rows; the loss is normalised by the global count of predicted tokens, so the summed
/// gradient equals the single-process gradient of the whole batch.
package final class Trainer {
    package let model: TrainableDecoder
    /// Fake-quant of the block linears for QAT (nil = full-precision training).
    package let quantizer: TrainingWeightQuantizer?
    /// What the optimizer updates and checkpoints hold: the model's weights, its input
    /// transforms' parameters, then the quantizer's learnable step sizes and zero points (LSQ).
    package let parameters: [Parameter]
    package let options: TrainOptions
    package let runDir: URL
    package let optimizer: AdamW
    package let objective: TrainingObjective
    package let group: DataParallelGroup?
    /// Check that all data-parallel ranks hold identical weights every this many steps.
    package var syncCheckEvery = 10
    package private(set) var state: TrainerState
    /// Files copied into every checkpoint (tokenizer.json, tokenizer_config.json), so a
    /// checkpoint directory runs on its own.
    package var extraCheckpointFiles: [URL] = []
    private let batches: any BatchSource
    private let metricsURL: URL
    /// Micro-batches drawn and handed to the objective but not trained on yet, with the data
    /// position after each (what a checkpoint records once it is consumed).
    private var upcoming: [(batch: SFTBatch, id: Int, position: DataPosition)] = []
    private var nextBatchId = 0
    /// The micro-batches of the current step while the objective makes more updates on them.
    private var reused: (batches: [(batch: SFTBatch, id: Int, position: DataPosition)], updatesLeft: Int)?

    /// Supervised data: batches of `dataset` cut by `options` (sequence length, token budget,
    /// packing), padded with `padId`.
    package convenience init(model: TrainableDecoder, dataset: SFTDataset, padId: Int, options: TrainOptions, runDir: URL,
                            quantizer: TrainingWeightQuantizer? = nil, objective: TrainingObjective = CrossEntropyObjective(),
                            group: DataParallelGroup? = nil) throws {
        try self.init(model: model, batches: { seed, position in
            try SFTBatcher(dataset: dataset, seqLen: options.seqLen, batchTokens: options.batchTokens,
                           packing: options.packing, padId: padId, seed: seed, position: position)
        }, options: options, runDir: runDir, quantizer: quantizer, objective: objective, group: group)
    }

    /// Starts a run in `runDir`, or resumes it from its latest checkpoint when there is one.
    package init(model: TrainableDecoder, batches makeBatches: BatchSourceFactory, options: TrainOptions, runDir: URL,
                quantizer: TrainingWeightQuantizer? = nil, objective: TrainingObjective = CrossEntropyObjective(),
                group: DataParallelGroup? = nil) throws {
        self.model = model
        self.quantizer = quantizer
        self.objective = objective
        self.group = group
        model.weightQuantizer = quantizer
        let parameters = model.parameters + model.transformParameters + (quantizer?.parameters ?? [])
        self.parameters = parameters
        self.options = options
        self.runDir = runDir
        metricsURL = runDir.appendingPathComponent("metrics.jsonl")
        if group?.writesCheckpoints ?? true {
            try FileManager.default.createDirectory(at: runDir, withIntermediateDirectories: true)
            _ = try TrainCheckpoint.cleanStale(runDir)
        }
        freeze(parameters, matching: options.freeze)

        let schedule = options.cosine
            ? LRSchedule.cosine(peak: options.lr, warmupSteps: options.warmupSteps, totalSteps: options.steps,
                                minLRRatio: options.minLRRatio)
            : LRSchedule.constant(options.lr, warmupSteps: options.warmupSteps)
        optimizer = AdamW(parameters: parameters, beta1: options.beta1, beta2: options.beta2,
                          eps: options.eps, weightDecay: options.weightDecay)
        var state = TrainerState(step: 0, schedule: schedule, dataPosition: DataPosition(), dataSeed: options.seed,
                                 rng: SeededRNG(seed: options.seed), optimizer: optimizer,
                                 maxGradNorm: options.maxGradNorm)
        if let latest = TrainCheckpoint.latestCheckpoint(in: runDir) {
            let (config, saved) = try TrainCheckpoint.load(from: latest, into: parameters, optimizer: optimizer)
            quantizer?.refresh()
            guard config == model.config else {
                throw FormatError(latest.path, "the checkpoint's config.json differs from the model being trained; use a new --out directory")
            }
            state = saved
        }
        self.state = state
        batches = try makeBatches(state.dataSeed, state.dataPosition)
        if let group, batches.rowsPerBatch < group.count {
            throw TrainError("a micro-batch has \(batches.rowsPerBatch) rows but there are \(group.count) data-parallel ranks; raise --batch-tokens to at least \(group.count) x --seq-len")
        }
        // Batch ids continue across a resume so a teacher's seeds (sampled encoding) do not repeat.
        nextBatchId = state.step * options.gradAccumulation
        if let group {
            // Every student must start from the same checkpoint, or the run would silently diverge.
            let steps = try group.sum([Double(state.step)])[0]
            guard steps == Double(state.step * group.count) else {
                throw TrainError("the data-parallel ranks start at different steps (rank \(group.index) at step \(state.step)): every machine must see the same run directory \(runDir.path) (a shared filesystem, or copy it to each machine before resuming)")
            }
            try group.checkIdentical(parameters, step: state.step)
        }
    }

    package var step: Int { state.step }

    /// Runs until `options.steps` (or `untilStep`), calling `report` after every step; an error
    /// `report` throws stops the run before that step is checkpointed.
    package func run(untilStep: Int? = nil, report: (StepReport) throws -> Void = { _ in }) throws {
        let last = min(untilStep ?? options.steps, options.steps)
        let start = Date()
        var badSteps = 0
        while state.step < last {
            let stepStart = Date()
            let result = try trainStep(prefetchUntil: last)
            badSteps = result.skipped ? badSteps + 1 : 0
            state.step += 1
            state.appendLoss(LossRecord(step: state.step, loss: result.loss, lr: result.lr, gradNorm: result.gradNorm))
            let seconds = Date().timeIntervalSince(stepStart)
            let line = StepReport(step: state.step, loss: result.loss, lr: result.lr, gradNorm: result.gradNorm,
                                  tokens: result.tokens, tokensPerSecond: Double(result.tokens) / seconds,
                                  elapsedSeconds: Date().timeIntervalSince(start), skipped: result.skipped)
            if group?.writesCheckpoints ?? true { try appendMetrics(line) }
            try report(line)
            if badSteps >= options.maxBadSteps {
                let good = TrainCheckpoint.latestCheckpoint(in: runDir)?.path ?? "none written yet"
                throw TrainError("\(badSteps) steps in a row had a non-finite loss or gradient (the last was step \(state.step)); stopping. Last good checkpoint: \(good). Lower --lr or check the data.")
            }
            if let group, syncCheckEvery > 0, state.step % syncCheckEvery == 0 || state.step == last {
                try group.checkIdentical(parameters, step: state.step)
            }
            // Never checkpoint during a run of skipped steps: the last good checkpoint must survive
            // pruning if the run is about to stop. Nor between the updates an objective makes on
            // one set of micro-batches: a resume starts from newly drawn batches.
            let betweenUpdates = (reused?.updatesLeft ?? 0) > 0 && state.step < options.steps
            if badSteps == 0 && !betweenUpdates && ((options.saveEvery > 0 && state.step % options.saveEvery == 0) || state.step == options.steps) {
                try saveCheckpoint()
            }
        }
    }

    /// The next micro-batch (this rank's shard), topping up the objective's look-ahead window
    /// without drawing past the last step of the run.
    private func nextMicroBatch(prefetchUntil lastStep: Int) throws -> (batch: SFTBatch, id: Int, position: DataPosition) {
        let available = lastStep * options.gradAccumulation
        while upcoming.count <= objective.lookahead && nextBatchId < available {
            var batch = try batches.nextBatch()
            if let group { batch = batch.shard(group.index, of: group.count) }
            try objective.prepare(batch, id: nextBatchId)
            upcoming.append((batch, nextBatchId, batches.position))
            nextBatchId += 1
        }
        return upcoming.removeFirst()
    }

    /// One optimizer step over `gradAccumulation` micro-batches.
    private func trainStep(prefetchUntil lastStep: Int) throws -> (loss: Double, lr: Double, gradNorm: Double, tokens: Int, skipped: Bool) {
        let batches: [(batch: SFTBatch, id: Int, position: DataPosition)]
        if let r = reused, r.updatesLeft > 0 {
            batches = r.batches
            reused = (r.batches, r.updatesLeft - 1)
        } else {
            batches = try (0..<options.gradAccumulation).map { _ in try nextMicroBatch(prefetchUntil: lastStep) }
            reused = objective.updatesPerBatch > 1 ? (batches, objective.updatesPerBatch - 1) : nil
        }
        state.dataPosition = batches.last!.position
        // Normalise by the predicted tokens of the whole step (all micro-batches, all ranks), so
        // accumulated micro-batches and data-parallel shards give the gradient of one large batch.
        let predicted = max(1, batches.reduce(0) { $0 + $1.batch.globalPredictedTokens })
        var loss = 0.0, tokens = 0
        for (i, (batch, id, _)) in batches.enumerated() {
            // The gradient overwrites the logits in place: (B*T, V) is the largest buffer of a step.
            let logits = model.forward(tokens: batch.tokens, batch: batch.rows, length: batch.seqLen)
            loss += try objective.lossAndGradient(batch, id: id, logits: logits, vocab: model.config.vocabSize,
                                                  normalizer: Double(predicted))
            if i == batches.count - 1 { try group?.beginReduction(parameters, model: model) }
            model.backward(dLogits: logits)
            tokens += batch.rows * batch.seqLen
        }
        if let group {
            try group.finishReduction(parameters)
            let sums = try group.sum([loss, Double(tokens)])
            loss = sums[0]
            tokens = Int(sums[1])
        }
        let lr = state.schedule.lr(step: state.step)
        // Every rank sees the same summed loss and gradients, so every rank skips alike.
        if !loss.isFinite || Gradients.hasNonFinite(parameters) {
            optimizer.zeroGrad()
            return (loss, lr, .nan, tokens, true)
        }
        let norm = options.maxGradNorm.map { Gradients.clipGlobalNorm(parameters, maxNorm: $0) }
            ?? Gradients.globalNorm(parameters)
        optimizer.step(lr: lr)
        optimizer.zeroGrad()
        quantizer?.refresh()   // quantize once per optimizer step, not per micro-batch
        return (loss, lr, norm, tokens, false)
    }

    package func saveCheckpoint() throws {
        guard group?.writesCheckpoints ?? true else { return }
        let dir = runDir.appendingPathComponent(TrainCheckpoint.name(step: state.step))
        try TrainCheckpoint.save(to: dir, parameters: parameters, config: model.config,
                                 optimizer: optimizer, state: state, extraFiles: extraCheckpointFiles)
        _ = try TrainCheckpoint.prune(runDir, keepLast: options.keepLast)
    }

    private func appendMetrics(_ line: StepReport) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // JSON has no NaN: a skipped step's loss and norm are written as the strings "nan"/"inf".
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        var data = try encoder.encode(line)
        data.append(0x0A)
        if let handle = try? FileHandle(forWritingTo: metricsURL) {
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: data)
        } else {
            try data.write(to: metricsURL)
        }
    }
}
