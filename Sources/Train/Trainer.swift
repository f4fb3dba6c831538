import Foundation
import Formats
import Model
import Tensors

/// Settings of a supervised fine-tuning run (what `rqat sft` exposes).
public struct SFTOptions: Codable, Equatable, Sendable {
    public var steps = 100
    /// Tokens per micro-batch (rows x seqLen).
    public var batchTokens = 2048
    public var seqLen = 256
    /// Micro-batches whose gradients are summed into one optimizer step.
    public var gradAccumulation = 1
    public var packing = false
    public var lr = 1e-4
    public var warmupSteps = 0
    public var minLRRatio = 0.1
    public var cosine = true
    public var weightDecay = 0.01
    public var beta1 = 0.9
    public var beta2 = 0.95
    public var eps = 1e-8
    /// Global gradient-norm clip (nil = off).
    public var maxGradNorm: Double? = 1.0
    public var seed: UInt64 = 0
    /// Save a checkpoint every this many steps (0 = only at the end).
    public var saveEvery = 0
    public var keepLast = 2
    public var freeze: [String] = []
    /// Consecutive skipped (non-finite) steps that stop the run.
    public var maxBadSteps = 3

    public init() {}
}

/// What one optimizer step did; also the line written to `metrics.jsonl`.
public struct StepReport: Codable, Sendable {
    public var step: Int
    public var loss: Double
    public var lr: Double
    public var gradNorm: Double
    public var tokens: Int
    public var tokensPerSecond: Double
    public var elapsedSeconds: Double
    public var skipped: Bool

    enum CodingKeys: String, CodingKey {
        case step, loss, lr, tokens, skipped
        case gradNorm = "grad_norm"
        case tokensPerSecond = "tokens_per_s"
        case elapsedSeconds = "elapsed_s"
    }
}

/// Single-process SFT: micro-batches -> forward -> masked cross-entropy -> backward, summed over
/// `gradAccumulation` micro-batches, clipped, AdamW with warmup + cosine; checkpoints that resume
/// bit for bit (weights, moments, data position, RNG).
public final class SFTTrainer {
    public let model: TrainableDecoder
    /// Fake-quant of the block linears for QAT (nil = full-precision training).
    public let quantizer: TrainingWeightQuantizer?
    /// What the optimizer updates and checkpoints hold: the model's weights, then the
    /// quantizer's learnable step sizes and zero points (LSQ).
    public let parameters: [Parameter]
    public let options: SFTOptions
    public let runDir: URL
    public let optimizer: AdamW
    public private(set) var state: TrainerState
    /// Files copied into every checkpoint (tokenizer.json, tokenizer_config.json), so a
    /// checkpoint directory runs on its own.
    public var extraCheckpointFiles: [URL] = []
    private let batcher: SFTBatcher
    private let metricsURL: URL

    /// Starts a run in `runDir`, or resumes it from its latest checkpoint when there is one.
    public init(model: TrainableDecoder, dataset: SFTDataset, padId: Int, options: SFTOptions, runDir: URL,
                quantizer: TrainingWeightQuantizer? = nil) throws {
        self.model = model
        self.quantizer = quantizer
        model.weightQuantizer = quantizer
        let parameters = model.parameters + (quantizer?.parameters ?? [])
        self.parameters = parameters
        self.options = options
        self.runDir = runDir
        metricsURL = runDir.appendingPathComponent("metrics.jsonl")
        try FileManager.default.createDirectory(at: runDir, withIntermediateDirectories: true)
        _ = try TrainCheckpoint.cleanStale(runDir)
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
        batcher = try SFTBatcher(dataset: dataset, seqLen: options.seqLen, batchTokens: options.batchTokens,
                                 packing: options.packing, padId: padId, seed: state.dataSeed,
                                 position: state.dataPosition)
    }

    public var step: Int { state.step }

    /// Runs until `options.steps` (or `untilStep`), calling `report` after every step.
    public func run(untilStep: Int? = nil, report: (StepReport) -> Void = { _ in }) throws {
        let last = min(untilStep ?? options.steps, options.steps)
        let start = Date()
        var badSteps = 0
        while state.step < last {
            let stepStart = Date()
            let result = trainStep()
            badSteps = result.skipped ? badSteps + 1 : 0
            state.step += 1
            state.dataPosition = batcher.position
            state.appendLoss(LossRecord(step: state.step, loss: result.loss, lr: result.lr, gradNorm: result.gradNorm))
            let seconds = Date().timeIntervalSince(stepStart)
            let line = StepReport(step: state.step, loss: result.loss, lr: result.lr, gradNorm: result.gradNorm,
                                  tokens: result.tokens, tokensPerSecond: Double(result.tokens) / seconds,
                                  elapsedSeconds: Date().timeIntervalSince(start), skipped: result.skipped)
            try appendMetrics(line)
            report(line)
            if badSteps >= options.maxBadSteps {
                let good = TrainCheckpoint.latestCheckpoint(in: runDir)?.path ?? "none written yet"
                throw TrainError("\(badSteps) steps in a row had a non-finite loss or gradient (the last was step \(state.step)); stopping. Last good checkpoint: \(good). Lower --lr or check the data.")
            }
            // Never checkpoint during a run of skipped steps: the last good checkpoint must survive
            // pruning if the run is about to stop.
            if badSteps == 0 && ((options.saveEvery > 0 && state.step % options.saveEvery == 0) || state.step == options.steps) {
                try saveCheckpoint()
            }
        }
    }

    /// One optimizer step over `gradAccumulation` micro-batches.
    private func trainStep() -> (loss: Double, lr: Double, gradNorm: Double, tokens: Int, skipped: Bool) {
        let batches = (0..<options.gradAccumulation).map { _ in batcher.nextBatch() }
        // Normalise by the predicted tokens of the whole step, so accumulated micro-batches
        // give the same gradient as one large batch.
        let predicted = max(1, batches.reduce(0) { $0 + $1.predictedTokens })
        var loss = 0.0, tokens = 0
        for batch in batches {
            // The gradient overwrites the logits in place: (B*T, V) is the largest buffer of a step.
            let logits = model.forward(tokens: batch.tokens, batch: batch.rows, length: batch.seqLen)
            loss += CrossEntropy.forwardBackward(logits: logits.ptr, vocab: model.config.vocabSize,
                                                 targets: batch.targets, weights: batch.lossMask,
                                                 normalizer: Double(predicted), gradient: logits.ptr)
            model.backward(dLogits: logits)
            tokens += batch.rows * batch.seqLen
        }
        let lr = state.schedule.lr(step: state.step)
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

    public func saveCheckpoint() throws {
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
