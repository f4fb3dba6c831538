import Formats
import ArgumentParser
import Bench
import Cluster
import Foundation
import Eval
import Jobs
import Quant
import Tensors
import Train

/// The teacher signal on the wire: what each encoding costs in bytes, how far its KD loss is
/// from the full-vocabulary loss, and how well a student trains on it.
struct BenchWire: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wire",
        abstract: "Teacher-signal encodings: bytes per trained token, bias of the KD loss, and short KD runs with each.",
        discussion: """
            Teacher: --teacher (full precision). Student: --student (default: the teacher's weights) with \
            its block linears fake-quantized at --scheme (min/max grid with STE, i.e. the RTN student; \
            `none` keeps it full precision). Data: prompt/completion JSONL (e.g. teacher traces from \
            `rqat generate --prompts ... --out`); the last --heldout-count examples are held out unless \
            --heldout names a file.
            1. wire_bytes: the response message of the teacher service (frames + headers) for the first \
            --wire-batches training micro-batches, per encoding, value type and codec, divided by the \
            trained (completion) positions.
            2. kd_bias: on the same batches and the untrained student's logits, each encoding's KD-loss \
            estimate (decoded from the wire) against the full-vocabulary forward KL at --kd-temperature; \
            for sampled signals the estimate is the cross-entropy minus the teacher's entropy. Also the \
            cosine between each encoding's gradient w.r.t. the student logits and the exact one. The same \
            for reverse KL and JSD(--jsd-beta) on full logits and top-k + tail (bucketed), against their \
            full-vocabulary values.
            3. kd_run: --steps KD steps with each of --runs through the Trainer, KDObjective and \
            LocalTeacherLink path of `rqat train` (in process), then the full-vocabulary KL at T = 1 to \
            the teacher over the completion tokens of the held-out examples; relative to the full-logit run.
            """)

    @Option(help: "The full-precision teacher: a .gguf file or a Hugging Face directory.")
    var teacher = "assets/SmolLM2-135M-Instruct.Q4_1.gguf"
    @Option(help: "The student's starting weights (default: the teacher's).")
    var student: String?
    @Option(help: "Fake-quant scheme of the student's block linears (min/max grid + STE = RTN), or none.")
    var scheme = "w3g128"
    @Option(help: "Training data: JSONL of {\"prompt\", \"completion\"} (teacher traces).")
    var data = "runs/wire/traces.jsonl"
    @Option(help: "Held-out JSONL (default: the last --heldout-count examples of --data).")
    var heldout: String?
    @Option(help: "Examples held out from --data when --heldout is not given.")
    var heldoutCount = 16
    @Option(help: "chat or plain (as rqat train --format).") var format = "chat"
    @Option(help: "Context length of a row; longer examples are cut to it (their completion's end is dropped).") var seqLen = 256
    @Flag(help: "Skip examples longer than --seq-len instead of cutting them.") var dropLong = false
    @Option(help: "Rows per micro-batch.") var rows = 2
    @Option(help: "Training micro-batches whose teacher signal is measured for bytes and bias (0 = runs only).") var wireBatches = 8
    @Option(help: "Top-k sizes, comma-separated.") var ks = "16,64,256"
    @Option(help: "Sampled draws per position, comma-separated (<= 255).") var ms = "16,64"
    @Option(help: "Value types measured for bytes and bias (top-k log-probs; full logits use fp32 and bf16): fp16, bf16, fp32.")
    var logprobTypes = "fp16,bf16"
    @Option(help: "zstd level of the zstd codecs.") var zstdLevel = 3
    @Option(help: "KD temperature (bias and training; held-out KL is always at T = 1).") var kdTemperature: Float = 1
    @Option(help: "beta of the JSD whose bias is measured, in (0, 1).") var jsdBeta: Float = 0.5
    @Option(help: "Encodings trained with, comma-separated (full, top-K, sampled-M; log-probs fp16, shuffled zstd); empty = no runs.")
    var runs = "full,top-16,top-64,top-256,sampled-16,sampled-64"
    @Option(help: "Optimizer steps per run.") var steps = 30
    @Option(help: "Micro-batches per step.") var gradAccum = 1
    @Option(help: "Peak learning rate (cosine to 10%).") var lr: Double = 5e-5
    @Option(help: "Warm-up steps.") var warmup = 2
    @Option(help: "Seed: data order and sampled draws (the same for every run).") var seed: UInt64 = 0
    @Option(help: "Target of the issue: bytes per trained token on the wire.") var targetBytes: Double = 300
    @Option(help: "Target of the issue: held-out KL within this fraction of the full-logit run's.") var targetRelative: Double = 0.02
    @Option(help: "Also append the JSON lines to this file (with the table on stdout).") var jsonOut: String?
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var output: BenchOutput

    /// `output.emit`, and the JSON line to --json-out as well.
    func emit<R: BenchRecord>(_ record: R, text: String) {
        output.emit(record, text: text)
        writeJSON(record)
    }

    /// A measurement without a line of its own in the table (the table prints it in a combined row).
    func emitJSONOnly<R: BenchRecord>(_ record: R) {
        output.emitJSONOnly(record)
        writeJSON(record)
    }

    func writeJSON<R: BenchRecord>(_ record: R) {
        guard let jsonOut else { return }
        let line = record.jsonLine() + "\n"
        if let handle = FileHandle(forWritingAtPath: jsonOut) {
            handle.seekToEndOfFile()
            handle.write(Data(line.utf8))
            handle.closeFile()
        } else {
            _ = FileManager.default.createFile(atPath: jsonOut, contents: Data(line.utf8))
        }
    }

    func validate() throws {
        guard (try? parsedKs()) != nil, (try? parsedMs()) != nil, (try? parsedValueTypes()) != nil, (try? parsedRuns()) != nil else {
            throw ValidationError("--ks, --ms, --logprob-types and --runs take comma-separated lists (\(SignalEncoding.validForms))")
        }
        guard format == "chat" || format == "plain" else { throw ValidationError("--format must be chat or plain") }
        guard seqLen >= 2, rows >= 1, wireBatches >= 0, steps >= 1, gradAccum >= 1 else {
            throw ValidationError("--seq-len >= 2, --rows, --steps and --grad-accum >= 1, --wire-batches >= 0")
        }
        guard jsdBeta > 0 && jsdBeta < 1 else { throw ValidationError("--jsd-beta must be in (0, 1)") }
        guard lr > 0, kdTemperature > 0, heldoutCount >= 1 else { throw ValidationError("--lr, --kd-temperature and --heldout-count must be positive") }
        guard (1...22).contains(zstdLevel) else { throw ValidationError("--zstd-level must be in 1...22") }
        guard scheme == "none" || (try? QuantScheme.parse(scheme))?.weightBits != nil else {
            throw ValidationError("--scheme: a weight scheme (\(QuantScheme.validForms)) or none")
        }
    }

    func parsedKs() throws -> [Int] { try intList(ks).map { guard $0 >= 1 else { throw CLIError("k") }; return $0 } }
    func parsedMs() throws -> [Int] { try intList(ms).map { guard (1...255).contains($0) else { throw CLIError("m") }; return $0 } }
    func intList(_ s: String) throws -> [Int] {
        try s.split(separator: ",").map { guard let v = Int($0.trimmingCharacters(in: .whitespaces)) else { throw CLIError("list") }; return v }
    }
    func parsedValueTypes() throws -> [FrameDType] {
        try logprobTypes.split(separator: ",").map {
            switch $0.trimmingCharacters(in: .whitespaces) {
            case "fp16": return .float16
            case "bf16": return .bfloat16
            case "fp32": return .float32
            default: throw CLIError("value type")
            }
        }
    }
    func parsedRuns() throws -> [SignalEncoding] {
        try runs.split(separator: ",").map {
            guard let e = SignalEncoding($0.trimmingCharacters(in: .whitespaces)) else { throw CLIError("encoding") }
            return e
        }
    }

    func run() throws {
        runtime.apply()
        try reportingErrors { try measure() }
    }

    var benchOptions: WireBench.Options {
        get throws {
            var o = WireBench.Options()
            o.teacher = teacher
            o.student = student
            o.scheme = scheme == "none" ? nil : try QuantScheme.parse(scheme)
            o.data = data
            o.heldout = heldout
            o.heldoutCount = heldoutCount
            o.format = SFTFormat(rawValue: format)!
            o.seqLen = seqLen
            o.dropLong = dropLong
            o.rows = rows
            o.wireBatches = wireBatches
            o.ks = try parsedKs()
            o.ms = try parsedMs()
            o.valueTypes = try parsedValueTypes()
            o.zstdLevel = zstdLevel
            o.kdTemperature = kdTemperature
            o.jsdBeta = jsdBeta
            o.steps = steps
            o.gradAccum = gradAccum
            o.lr = lr
            o.warmup = warmup
            o.seed = seed
            o.targetBytes = targetBytes
            o.targetRelative = targetRelative
            return o
        }
    }

    func measure() throws {
        let bench = try WireBench(try benchOptions, log: printErr)
        if !output.json {
            say("""
                teacher \(teacher) (vocabulary \(bench.vocab)); student \(student ?? teacher) with \(scheme == "none" ? "full-precision weights" : "\(scheme) fake-quant (min/max grid, STE: the RTN student)")
                data \(data): \(bench.train.examples.count) training examples, \(bench.heldout.count) held out\(heldout.map { " (\($0))" } ?? ""); \
                micro-batches of \(rows) x \(seqLen), KD temperature \(kdTemperature), \(Threads.count) threads
                """)
        }
        let (untrained, wire) = try bench.measureBeforeTraining(log: printErr)
        if let wire {
            reportWire(wire)
            reportBias(wire)
        }

        let encodings = try parsedRuns()
        try bench.check(runs: encodings)
        var runs: [KDRun] = []
        if !encodings.isEmpty {
            let trainedPositions = try bench.trainedPositions()
            if !output.json {
                say("")
                say(String(format: "KD runs: %d steps of %d x %d x %d tokens (%d trained positions), lr %.1e (warm-up %d, cosine to 10%%), seed %llu, log-probs fp16, shuffled zstd %d",
                             steps, gradAccum, rows, seqLen, trainedPositions, lr, warmup, seed, zstdLevel))
            }
            for encoding in encodings {
                runs.append(try bench.train(encoding, trainedPositions: trainedPositions, untrained: untrained, log: printErr))
            }
        }
        reportRuns(WireBench.report(runs, untrained: untrained, options: bench.options), untrained: untrained)
    }

    // MARK: - Reports

    func reportWire(_ wire: WireMeasurement) {
        if !output.json {
            say("")
            say("Bytes per trained token on the wire (teacher response messages of \(wire.batches) micro-batches, \(wire.positions) trained positions; encode = signal + frames + codec)")
            say(pad("encoding", 16) + pad("values", 8) + wire.codecs.map { pad($0, 16, right: true) }.joined()
                  + pad("encode tok/s (raw / zstd / shuffled)", 40, right: true))
        }
        for variant in wire.variants {
            var cells = ""
            var rates: [String] = []
            for record in variant.bytes {
                emitJSONOnly(record)
                cells += pad(String(format: "%.1f", record.bytesPerToken), 16, right: true)
                rates.append(String(format: "%.0f", record.tokensPerS))
            }
            if !output.json, let first = variant.bytes.first {
                say(pad(first.shared.encoding, 16) + pad(valueLabel(first.shared, first.valueType), 8) + cells
                      + pad(rates.joined(separator: " / "), 40, right: true))
            }
        }
    }

    func reportBias(_ wire: WireMeasurement) {
        var options = WireBench.Options()
        options.jsdBeta = jsdBeta
        for divergence in options.divergences {
            let rows = wire.variants.compactMap { $0.biases.first { $0.divergence == divergence.description } }
            guard let first = rows.first else { continue }
            if !output.json {
                say("")
                switch divergence {
                case .forwardKL:
                    say(String(format: "KD-loss estimate vs the full-vocabulary forward KL at T = %g on the untrained student (%d positions; full KL %.4f nats/token)",
                                 kdTemperature, wire.positions, wire.fullKL))
                    say("sampled: estimate = cross-entropy on the draws - teacher entropy; ± is one standard error over positions")
                default:
                    let name = divergence == .reverseKL ? "reverse KL(student || teacher)" : String(format: "JSD(beta = %g)", jsdBeta)
                    say(String(format: "%@ (%@): top-k + tail (bucketed) vs full vocabulary at T = %g (%d positions; full %.4f nats/token)",
                                 divergence.description, name, kdTemperature, first.positions, first.kdFull))
                }
                say(pad("encoding", 16) + pad("values", 8) + pad("estimate", 12, right: true) + pad("bias", 20, right: true)
                      + pad("grad cosine", 14, right: true) + pad("row mean", 12, right: true) + "   per position")
            }
            for b in rows {
                var extra = ""
                if let tail = b.tailMass { extra = String(format: "tail mass %.4f", tail) }
                if let distinct = b.distinctIds { extra = String(format: "%.2f distinct ids", distinct) }
                emit(b, text: pad(b.shared.encoding, 16) + pad(valueLabel(b.shared, b.valueType), 8)
                                + pad(String(format: "%.4f", b.kdEstimate), 12, right: true)
                                + pad(String(format: "%+.2f%% ± %.2f%%", 100 * b.bias, 100 * b.biasSE), 20, right: true)
                                + pad(String(format: "%.4f", b.gradCosine), 14, right: true)
                                + pad(String(format: "%.4f", b.gradCosineRowMean), 12, right: true) + "   " + extra)
            }
        }
    }

    func reportRuns(_ report: WireRunReport, untrained: HeldoutKL) {
        if !output.json {
            say("")
            say(String(format: "Held-out forward KL to the teacher at T = 1 (full vocabulary, %d completion positions of %d held-out examples); ± is one standard error over examples",
                         untrained.positions, untrained.sums.count))
            say(pad("run", 16) + pad("B/token", 10, right: true) + pad("held-out KL", 13, right: true)
                  + pad("vs full", 20, right: true) + pad("gain vs full", 14, right: true) + pad("loss first->last", 20, right: true)
                  + pad("train tok/s", 13, right: true) + pad("time", 8, right: true))
        }
        let u = report.untrained
        emit(u, text: pad(u.encoding, 16) + pad("-", 10, right: true) + pad(String(format: "%.4f", u.heldoutKL), 13, right: true))
        for r in report.runs {
            var versus = "", gain = ""
            if let relative = r.relativeToFull, let relativeSE = r.relativeToFullSE, let gainFraction = r.gainFractionOfFull {
                versus = r.shared.encoding == "full" ? "(reference)" : String(format: "%+.2f%% ± %.2f%%", 100 * relative, 100 * relativeSE)
                gain = String(format: "%.1f%%", 100 * gainFraction)
            }
            emit(r, text: pad(r.shared.encoding, 16) + pad(String(format: "%.0f", r.bytesPerToken), 10, right: true)
                            + pad(String(format: "%.4f", r.heldoutKL), 13, right: true) + pad(versus, 20, right: true)
                            + pad(gain, 14, right: true)
                            + pad(String(format: "%.3f->%.3f", r.firstLoss, r.lastLoss), 20, right: true)
                            + pad(String(format: "%.0f", r.tokensPerS), 13, right: true)
                            + pad(formatDuration(r.seconds), 8, right: true))
        }
        guard let target = report.target else { return }
        var text = String(format: "Target (<= %.0f B/token, held-out KL within %.0f%% of the full-logit run): ",
                          target.targetBytesPerToken, 100 * target.targetRelative)
        if let encoding = target.encoding, let bytes = target.bytesPerToken, let relative = target.relativeToFull {
            text += String(format: "%@ — %@ at %.0f B/token, %+.2f%% vs full", target.met ? "MET" : "NOT MET; closest",
                           encoding, bytes, 100 * relative)
        } else {
            text += "NOT MET; no trained encoding fits in \(Int(target.targetBytesPerToken)) B/token"
        }
        if !output.json { say("") }
        emit(target, text: text)
    }

    // MARK: - Formatting

    /// Sampled signals send ids with counts, whatever their value type field says.
    func valueLabel(_ encoding: EncodingFields, _ valueType: String) -> String {
        encoding.m != nil ? "ids+n" : valueType
    }

    func say(_ s: String) {
        print(s)
        fflush(stdout)
    }

    func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
        let n = max(width - s.count, 0)
        return right ? String(repeating: " ", count: n) + s : s + String(repeating: " ", count: n)
    }
}
