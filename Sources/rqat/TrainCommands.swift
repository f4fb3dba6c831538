import ArgumentParser
import Foundation
import Formats
import Quant
import Model
import Tensors
import Train

struct SFT: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sft",
        abstract: "Supervised fine-tuning on a JSONL file of {\"prompt\", \"completion\"} records.",
        discussion: """
            The loss is cross-entropy on completion tokens only. Progress goes to stderr, one JSON \
            line per step to OUT/metrics.jsonl, checkpoints to OUT/checkpoint-NNNNNN (weights with \
            Hugging Face names + config.json + optimizer and data state). Running the same command \
            again with the same --out resumes from the latest checkpoint exactly.
            """)

    @Option(help: "A .gguf file or a Hugging Face model directory to start from.")
    var model: String
    @Option(help: "JSONL training data: one {\"prompt\": ..., \"completion\": ...} object per line.")
    var data: String
    @Option(help: "Run directory for checkpoints and metrics.jsonl.")
    var out: String
    @Option(help: "Optimizer steps.") var steps = 100
    @Option(help: "Tokens per micro-batch (rows x seq-len).") var batchTokens = 2048
    @Option(help: "Context length of a row.") var seqLen = 256
    @Option(help: "Micro-batches summed into one optimizer step.") var gradAccum = 1
    @Flag(help: "Pack several examples into each row instead of one padded example per row.") var packing = false
    @Option(help: "chat (prompt as a user turn in the chat template) or plain (prompt + completion).") var format = "chat"
    @Flag(help: "Skip examples longer than --seq-len instead of stopping with an error.") var dropLong = false
    @Option(help: "Peak learning rate.") var lr: Double = 1e-4
    @Option(help: "Linear warm-up steps.") var warmup = 0
    @Flag(help: "Constant learning rate after warm-up instead of cosine decay.") var constantLR = false
    @Option(help: "Cosine floor as a fraction of the peak.") var minLRRatio: Double = 0.1
    @Option(help: "Decoupled weight decay (not on norms and embeddings).") var weightDecay: Double = 0.01
    @Option(help: "Global gradient-norm clip (0 = off).") var maxGradNorm: Double = 1.0
    @Option(help: "Seed for data order.") var seed: UInt64 = 0
    @Option(help: "Save a checkpoint every N steps (0 = at the end only).") var saveEvery = 0
    @Option(help: "Checkpoints to keep.") var keepLast = 2
    @Option(parsing: .singleValue, help: "Freeze parameters whose name matches (glob with *, else substring); repeatable.")
    var freeze: [String] = []
    @Option(help: "QAT: fake-quantize the decoder-block linear layers with this scheme (e.g. w3g128).") var qat: String?
    @Flag(help: "QAT: learnable step size and zero point per group (LSQ) instead of min/max grids (STE).") var lsq = false
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        if let qat {
            guard let s = try? QuantScheme.parse(qat), s.weightBits != nil else {
                throw ValidationError("--qat: \((try? QuantScheme.parse(qat)) == nil ? "invalid scheme. Valid: \(QuantScheme.validForms)" : "the scheme needs weight bits")")
            }
        }
        guard steps > 0 else { throw ValidationError("--steps must be positive") }
        guard gradAccum > 0 else { throw ValidationError("--grad-accum must be positive") }
        guard lr > 0 && lr.isFinite else { throw ValidationError("--lr must be positive") }
        guard SFTFormat(rawValue: format) != nil else { throw ValidationError("--format must be chat or plain") }
    }

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let checkpoint = try openCheckpoint(model)
            let (tokenizer, template) = try checkpoint.loadTokenizer()
            let dataset = try SFTDataset.load(URL(fileURLWithPath: data), tokenizer: tokenizer,
                                              format: SFTFormat(rawValue: format)!, template: template,
                                              seqLen: seqLen, dropLong: dropLong)
            if !dataset.droppedLines.isEmpty {
                printErr("sft: dropped \(dataset.droppedLines.count) examples longer than \(seqLen) tokens")
            }
            let decoder = try TrainableDecoder(config: checkpoint.config, source: checkpoint.weights)
            var options = SFTOptions()
            options.steps = steps
            options.batchTokens = batchTokens
            options.seqLen = seqLen
            options.gradAccumulation = gradAccum
            options.packing = packing
            options.lr = lr
            options.warmupSteps = warmup
            options.cosine = !constantLR
            options.minLRRatio = minLRRatio
            options.weightDecay = weightDecay
            options.maxGradNorm = maxGradNorm > 0 ? maxGradNorm : nil
            options.seed = seed
            options.saveEvery = saveEvery
            options.keepLast = keepLast
            options.freeze = freeze
            let padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0
            let quantizer = try qat.map { text -> FakeQuantizer in
                let scheme = try QuantScheme.parse(text)
                return try FakeQuantizer(decoder: decoder, scheme: scheme, mode: lsq ? .lsq : .ste)
            }
            let trainer = try SFTTrainer(model: decoder, dataset: dataset, padId: padId, options: options,
                                         runDir: URL(fileURLWithPath: out), quantizer: quantizer)
            // Tokenizer files go into every checkpoint so `rqat generate --model <checkpoint>` works.
            let tokenizerDir = URL(fileURLWithPath: out).appendingPathComponent("tokenizer")
            try tokenizer.writeHuggingFaceFiles(to: tokenizerDir, chatTemplate: template,
                                                modelMaxLength: checkpoint.config.maxPositionEmbeddings)
            trainer.extraCheckpointFiles = ["tokenizer.json", "tokenizer_config.json"].map { tokenizerDir.appendingPathComponent($0) }
            let rows = batchTokens / seqLen
            printErr(String(format: "sft: %d examples, %d steps of %d micro-batch(es) of %d x %d tokens (padding included); activations %.0f MB%@",
                            dataset.examples.count, steps, gradAccum, rows, seqLen,
                            Double(decoder.activationBytes(batch: rows, length: seqLen)) / 1e6,
                            trainer.step > 0 ? "; resuming at step \(trainer.step)" : ""))
            let first = trainer.step
            let start = Date()
            try trainer.run { r in
                let done = r.step - first, left = steps - r.step
                let eta = Date().timeIntervalSince(start) / Double(max(done, 1)) * Double(left)
                printErr(String(format: "step %d/%d  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  ETA %@%@",
                                r.step, steps, r.loss, r.lr, r.gradNorm, r.tokensPerSecond, formatDuration(eta),
                                r.skipped ? "  (skipped: non-finite)" : ""))
            }
            printErr("sft: done; final checkpoint \(TrainCheckpoint.latestCheckpoint(in: URL(fileURLWithPath: out))?.path ?? "-")")
            if let quantizer {
                // The QAT result in the packed low-bit format, runnable by every rqat command.
                let exportDir = URL(fileURLWithPath: out).appendingPathComponent("quantized")
                let quantized = quantizer.exportQuantized()
                var fullPrecision: [String: Tensor] = [:]
                for p in decoder.parameters where quantized[p.name] == nil { fullPrecision[p.name] = p.value }
                try QuantizedCheckpoint.save(directory: exportDir, config: decoder.config, fullPrecision: fullPrecision,
                                             quantized: quantized, scheme: quantizer.scheme, method: "qat-\(quantizer.mode.rawValue)",
                                             extraFiles: trainer.extraCheckpointFiles)
                printErr("sft: quantized model written to \(exportDir.path)")
            }
        }
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s / 60 % 60) : String(format: "%dm%02ds", s / 60, s % 60)
}
