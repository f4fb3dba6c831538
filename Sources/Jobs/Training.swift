import Cluster
import Foundation
import Formats
import Model
import Quant
import Tensors
import Train

/// What a training job trains on and how: the data file, its format, QAT, the schedule and
/// optimizer (`TrainOptions`) and the run directory.
package struct TrainingSpec {
    package var data: String
    package var format: SFTFormat
    /// Skip examples longer than `options.seqLen` instead of stopping with an error.
    package var dropLong: Bool
    /// Fake-quantize the decoder-block linears with this scheme (QAT).
    package var qat: QuantScheme?
    /// LSQ (learnable step and zero per group) instead of STE over min/max grids.
    package var lsq: Bool
    /// From a FlatQuant init: train its transforms with the weights instead of keeping them fixed.
    package var trainTransforms = false
    package var options: TrainOptions
    package var runDir: URL

    package init(data: String, format: SFTFormat, dropLong: Bool, qat: QuantScheme?, lsq: Bool, options: TrainOptions, runDir: URL) {
        self.data = data
        self.format = format
        self.dropLong = dropLong
        self.qat = qat
        self.lsq = lsq
        self.options = options
        self.runDir = runDir
    }
}

/// A model made ready to train, with or without QAT: its checkpoint, tokenizer, decoder and
/// fake quantizer (installed on the decoder). From a PTQ init (or a QAT checkpoint) QAT keeps that model's grid, so step 0
/// is that model.
package struct StudentModel {
    package let checkpoint: Checkpoint
    package let tokenizer: BPETokenizer
    package let template: ChatTemplate
    package let decoder: TrainableDecoder
    package let quantizer: FakeQuantizer?
    /// The init's online transforms (QuaRot, FlatQuant), installed on the decoder and carried
    /// into every model this one exports.
    package let onlineTransforms: OnlineTransforms?
    /// The activation and KV quantization the decoder runs (nil: none).
    package let activationQuant: ActivationQuantSpec?
    /// Which init's transforms the decoder runs, written into every training checkpoint (which
    /// holds no transforms of its own) so that a run or stage resumed from it finds them.
    package let initRecord: InitRecord?

    /// `trainTransforms`: a FlatQuant init's transforms train with the weights (else they stay
    /// fixed). `initModel`: when `model` is a training checkpoint of a run from a QuaRot or
    /// FlatQuant init (which records neither), that init: its transforms (with the checkpoint's
    /// values of any that trained) and activation record.
    /// A training checkpoint without `initModel` takes the init its `InitRecord` names.
    package init(model: String, qat: QuantScheme?, lsq: Bool, trainTransforms: Bool = false, initModel: String? = nil,
                 log: (String) -> Void) throws {
        let checkpoint = try Checkpoint.open(model)
        let recorded = initModel == nil ? try InitRecord.read(checkpoint: model) : nil
        if let recorded { log("\(model): trained from the \(recorded.method) init \(recorded.initModel)") }
        let origin = try (initModel ?? recorded?.initModel).map { try Checkpoint.open($0) } ?? checkpoint
        onlineTransforms = try OnlineTransforms(origin)?.updating(from: checkpoint.weights)
        initRecord = onlineTransforms.map {
            InitRecord(initModel: URL(fileURLWithPath: origin.path).standardizedFileURL.path, method: $0.rotation.method)
        }
        self.checkpoint = checkpoint
        (tokenizer, template) = try checkpoint.loadTokenizer()
        let decoder = try TrainableDecoder(config: checkpoint.config, source: checkpoint.weights)
        self.decoder = decoder
        quantizer = try qat.map { scheme in
            let grids = try FakeQuantizer.savedGrids(in: checkpoint.weights, names: decoder.linearWeights.map(\.name), scheme: scheme)
            if !grids.isEmpty { log("QAT starts from the grids of \(grids.count) quantized matrices in \(model)") }
            return try FakeQuantizer(decoder: decoder, scheme: scheme, mode: lsq ? .lsq : .ste, initialGrids: grids)
        }
        // The decoder runs as QAT has it from the start (what an RL probe or rollout samples from),
        // not only once a Trainer installs the quantizer.
        decoder.weightQuantizer = quantizer
        activationQuant = .training(qat, from: origin.activationQuant)
        // The function the init's weights belong to: its online transforms, fixed, then the quantizers.
        try decoder.installRunTimeTransforms(onlineTransforms, activation: activationQuant, trainable: trainTransforms)
        if let transforms = onlineTransforms {
            let trained = trainTransforms && transforms.isFlatQuant
            log("\(model): \(transforms.rotation.method) init, its online transforms \(trained ? "trained with the weights" : "kept fixed in training")")
        }
        if let spec = activationQuant {
            log("activations quantized at run time: \(spec.activationQuantizer?.description ?? "none") at every linear input, KV cache \(spec.kvQuantizer(headDim: checkpoint.config.headDim)?.description ?? "full precision")")
        }
    }

    package var padId: Int { tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0 }

    /// Tokenizer files go into every checkpoint so `rqat generate --model <checkpoint>` works.
    package func tokenizerFiles(in runDir: URL, write: Bool) throws -> [URL] {
        let dir = runDir.appendingPathComponent("tokenizer")
        if write {
            try tokenizer.writeHuggingFaceFiles(to: dir, chatTemplate: template,
                                                modelMaxLength: checkpoint.config.maxPositionEmbeddings)
        }
        return ["tokenizer.json", "tokenizer_config.json"].map { dir.appendingPathComponent($0) }
    }

    /// What goes into every training checkpoint beside the weights: the tokenizer files and,
    /// from a QuaRot or FlatQuant init, the `InitRecord`.
    package func checkpointFiles(in runDir: URL, write: Bool) throws -> [URL] {
        var files = try tokenizerFiles(in: runDir, write: write)
        if let initRecord {
            let url = runDir.appendingPathComponent("tokenizer").appendingPathComponent(InitRecord.fileName)
            if write { try JobJSON.write(initRecord, to: url) }
            files.append(url)
        }
        return files
    }

    /// The weights the policy samples with, for serving ranks (`PolicySync`): the quantized
    /// matrices as exported (on a PTQ or QAT grid: exactly the fake-quant forward's), the rest
    /// as they are.
    package func policySnapshot(version: Int) -> PolicySnapshot {
        let quantized = quantizer?.exportQuantized() ?? [:]
        var full: [String: Tensor] = [:]
        // Trained transforms (FlatQuant's, when they train) go with the weights they belong to.
        for p in decoder.parameters + decoder.transformParameters where quantized[p.name] == nil { full[p.name] = p.value }
        return PolicySnapshot(version: version, quantized: quantized, fullPrecision: full)
    }

    /// After QAT: the result in the packed low-bit format, runnable by every rqat command, in
    /// RUN/quantized (nothing without a quantizer).
    package func exportQuantized(runDir: URL, extraFiles: [URL], log: (String) -> Void) throws {
        guard let quantizer else { return }
        let exportDir = runDir.appendingPathComponent("quantized")
        let weights = policySnapshot(version: 0)
        try QuantizedCheckpoint.save(directory: exportDir, config: decoder.config,
                                     // The init's transforms, unless training moved them.
                                     fullPrecision: (onlineTransforms?.tensors ?? [:]).merging(weights.fullPrecision) { $1 },
                                     quantized: weights.quantized, scheme: quantizer.scheme, method: "qat-\(quantizer.mode.rawValue)",
                                     extra: onlineTransforms.map { [RotationSpec.configKey: $0.rotation.jsonObject] } ?? [:],
                                     extraFiles: extraFiles, activationQuant: activationQuant)
        log("quantized model written to \(exportDir.path)")
    }
}

/// A student made ready to train on a data file: its model and the tokenized dataset.
package struct StudentSetup {
    package let spec: TrainingSpec
    package let model: StudentModel
    package let dataset: SFTDataset

    package init(model path: String, spec: TrainingSpec, log: (String) -> Void) throws {
        self.spec = spec
        model = try StudentModel(model: path, qat: spec.qat, lsq: spec.lsq, trainTransforms: spec.trainTransforms, log: log)
        dataset = try SFTDataset.load(URL(fileURLWithPath: spec.data), tokenizer: model.tokenizer, format: spec.format,
                                      template: model.template, seqLen: spec.options.seqLen, dropLong: spec.dropLong)
        if !dataset.droppedLines.isEmpty {
            log("dropped \(dataset.droppedLines.count) examples longer than \(spec.options.seqLen) tokens")
        }
    }

    package var checkpoint: Checkpoint { model.checkpoint }
    package var tokenizer: BPETokenizer { model.tokenizer }
    package var template: ChatTemplate { model.template }
    package var decoder: TrainableDecoder { model.decoder }
    package var quantizer: FakeQuantizer? { model.quantizer }
    package var padId: Int { model.padId }

    package func checkpointFiles(in runDir: URL, write: Bool) throws -> [URL] {
        try model.checkpointFiles(in: runDir, write: write)
    }

    /// Runs the trainer with one progress line per step (when `log` prints) and, after QAT,
    /// writes the result in the packed low-bit format to OUT/quantized.
    package func train(_ trainer: Trainer, log: (String) -> Void) throws {
        let o = spec.options
        let rows = o.batchTokens / o.seqLen
        log(String(format: "%d examples, %d steps of %d micro-batch(es) of %d x %d tokens (padding included); activations %.0f MB%@",
                   dataset.examples.count, o.steps, o.gradAccumulation, rows, o.seqLen,
                   Double(decoder.activationBytes(batch: rows, length: o.seqLen)) / 1e6,
                   trainer.step > 0 ? "; resuming at step \(trainer.step)" : ""))
        let first = trainer.step
        let start = Date()
        try trainer.run { r in
            let done = r.step - first, left = o.steps - r.step
            let eta = Date().timeIntervalSince(start) / Double(max(done, 1)) * Double(left)
            log(String(format: "step %d/%d  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  ETA %@%@",
                       r.step, o.steps, r.loss, r.lr, r.gradNorm, r.tokensPerSecond, formatDuration(eta),
                       r.skipped ? "  (skipped: non-finite)" : ""))
        }
        guard trainer.group?.writesCheckpoints ?? true else { return }
        log("done; final checkpoint \(TrainCheckpoint.latestCheckpoint(in: spec.runDir)?.path ?? "-")")
        try model.exportQuantized(runDir: spec.runDir, extraFiles: trainer.extraCheckpointFiles, log: log)
    }
}

/// Supervised fine-tuning (`rqat sft`): cross-entropy on the completion tokens, one process.
package struct SFTJob {
    package var model: String
    package var spec: TrainingSpec

    package init(model: String, spec: TrainingSpec) {
        self.model = model
        self.spec = spec
    }

    package func run(log: (String) -> Void) throws {
        let student = try StudentSetup(model: model, spec: spec, log: log)
        let trainer = try Trainer(model: student.decoder, dataset: student.dataset, padId: student.padId,
                                  options: spec.options, runDir: spec.runDir, quantizer: student.quantizer)
        trainer.extraCheckpointFiles = try student.checkpointFiles(in: spec.runDir, write: true)
        try student.train(trainer, log: log)
    }
}

/// `init.json` in a training checkpoint from a QuaRot or FlatQuant init: the init whose online
/// transforms (and activation record) the checkpoint's weights belong to.
package struct InitRecord: Codable, Equatable, Sendable {
    package static let fileName = "init.json"
    package var initModel: String
    package var method: String

    enum CodingKeys: String, CodingKey {
        case initModel = "init_model", method
    }

    /// The record in the checkpoint directory `checkpoint`, if any; an init it names that is not
    /// there is an error naming both.
    package static func read(checkpoint: String) throws -> InitRecord? {
        let url = URL(fileURLWithPath: checkpoint).appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let record: InitRecord
        do { record = try JSONDecoder().decode(InitRecord.self, from: Data(contentsOf: url)) } catch {
            throw FormatError(url.path, "unreadable init record (\(error)); pass the init with --init-model")
        }
        guard FileManager.default.fileExists(atPath: record.initModel) else {
            throw FormatError(url.path, "this checkpoint was trained from the \(record.method) init \(record.initModel), which is not there; pass it with --init-model")
        }
        return record
    }
}
