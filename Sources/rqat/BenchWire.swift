import ArgumentParser
import Cluster
import Foundation
import Jobs
import Formats
import Model
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
            cosine between each encoding's gradient w.r.t. the student logits and the exact one.
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
    func emit(_ name: String, _ fields: [(String, Any)], text: String) {
        output.emit(name, fields, text: text)
        writeJSON(name, fields)
    }

    /// A measurement without a line of its own in the table (the table prints it in a combined row).
    func emitJSONOnly(_ name: String, _ fields: [(String, Any)]) {
        output.emitJSONOnly(name, fields)
        writeJSON(name, fields)
    }

    func writeJSON(_ name: String, _ fields: [(String, Any)]) {
        guard let jsonOut else { return }
        let line = BenchOutput.jsonLine(name, fields) + "\n"
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

    // MARK: - Set-up

    struct Setup {
        let teacher: LanguageModel
        let studentCheckpoint: Checkpoint
        let scheme: QuantScheme?
        let train: SFTDataset
        let heldout: [SFTExample]
        let padId: Int
        var vocab: Int { teacher.config.vocabSize }

        /// A fresh student: the checkpoint's weights, fake-quantized (STE over a min/max grid).
        func makeStudent() throws -> (TrainableDecoder, FakeQuantizer?) {
            let decoder = try TrainableDecoder(config: studentCheckpoint.config, source: studentCheckpoint.weights)
            let quantizer = try scheme.map { try FakeQuantizer(decoder: decoder, scheme: $0, mode: .ste) }
            decoder.weightQuantizer = quantizer
            return (decoder, quantizer)
        }
    }

    func setUp() throws -> Setup {
        let teacherModel = try LanguageModel(checkpoint: try openCheckpoint(teacher))
        let studentCheckpoint = try student.map(openCheckpoint) ?? teacherModel.checkpoint
        let (tokenizer, template) = try studentCheckpoint.loadTokenizer()
        guard tokenizer.vocabSize == teacherModel.tokenizer.vocabSize,
              tokenizer.vocabularyFingerprint == teacherModel.tokenizer.vocabularyFingerprint,
              studentCheckpoint.config.vocabSize == teacherModel.config.vocabSize else {
            throw CLIError("teacher \(teacher) and student \(student ?? teacher) have different vocabularies; KD needs the same tokenizer")
        }
        let fmt = SFTFormat(rawValue: format)!
        var cut = 0, skipped = 0
        /// Examples of at most seqLen tokens: a longer one is cut to its first seqLen tokens (a
        /// prefix of a trace is still the teacher's text) or, with --drop-long, skipped.
        func load(_ path: String) throws -> [SFTExample] {
            let all = try SFTDataset.load(URL(fileURLWithPath: path), tokenizer: tokenizer, format: fmt, template: template,
                                          seqLen: Int(Int32.max))
            return all.examples.compactMap { e in
                guard e.tokens.count > seqLen else { return e }
                guard !dropLong, e.promptLength < seqLen - 1 else { skipped += 1; return nil }
                cut += 1
                return SFTExample(tokens: Array(e.tokens.prefix(seqLen)), promptLength: e.promptLength, line: e.line)
            }
        }
        var trainExamples = try load(data), heldoutExamples: [SFTExample]
        if let heldout {
            heldoutExamples = try load(heldout)
        } else {
            guard trainExamples.count > heldoutCount else {
                throw CLIError("\(data) has \(trainExamples.count) usable examples; holding out \(heldoutCount) leaves none to train on")
            }
            heldoutExamples = Array(trainExamples.suffix(heldoutCount))
            trainExamples.removeLast(heldoutCount)
        }
        if cut + skipped > 0 {
            printErr("bench wire: \(cut) examples longer than \(seqLen) tokens cut to \(seqLen), \(skipped) skipped")
        }
        return Setup(teacher: teacherModel, studentCheckpoint: studentCheckpoint,
                     scheme: scheme == "none" ? nil : try QuantScheme.parse(scheme),
                     train: SFTDataset(path: data, examples: trainExamples), heldout: heldoutExamples,
                     padId: tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0)
    }

    // MARK: - Measurement

    func measure() throws {
        let setup = try setUp()
        let v = setup.vocab
        let threads = Threads.count
        let ks = try parsedKs().filter { $0 <= v }, ms = try parsedMs(), valueTypes = try parsedValueTypes()
        if !output.json {
            say("""
                teacher \(teacher) (vocabulary \(v)); student \(student ?? teacher) with \(scheme == "none" ? "full-precision weights" : "\(scheme) fake-quant (min/max grid, STE: the RTN student)")
                data \(data): \(setup.train.examples.count) training examples, \(setup.heldout.count) held out\(heldout.map { " (\($0))" } ?? ""); \
                micro-batches of \(rows) x \(seqLen), KD temperature \(kdTemperature), \(threads) threads
                """)
        }

        // The untrained student and the held-out teacher logits (also used after every run).
        var t0 = Date()
        let probe = HeldoutDistillation(teacher: setup.teacher.decoder, examples: setup.heldout, temperature: 1)
        let (untrained, wire) = try { () throws -> (HeldoutKL, WireResult?) in
            let (student0, _) = try setup.makeStudent()   // released before the runs
            let untrained = probe.evaluate(student: student0, rows: rows, seqLen: seqLen, padId: setup.padId)
            printErr(String(format: "bench wire: held-out set %d positions; untrained student KL %.4f (%.0f s)",
                            untrained.positions, untrained.mean, Date().timeIntervalSince(t0)))
            // 1 + 2: bytes and bias on the first training micro-batches.
            guard wireBatches > 0 else { return (untrained, nil) }
            t0 = Date()
            let wire = try measureWire(setup, student: student0, ks: ks, ms: ms, valueTypes: valueTypes)
            printErr(String(format: "bench wire: wire and bias measured in %.0f s", Date().timeIntervalSince(t0)))
            return (untrained, wire)
        }()
        if let wire {
            reportWire(wire)
            reportBias(wire)
        }

        // 3: training runs.
        let encodings = try parsedRuns()
        for case .topK(let k) in encodings where k > v { throw CLIError("--runs: top-\(k) exceeds the vocabulary of \(v)") }
        let results = try trainRuns(setup, encodings: encodings, probe: probe, untrained: untrained)
        reportRuns(results, untrained: untrained)
    }

    // MARK: 1 + 2: wire bytes and KD-loss bias

    /// One way of sending the signal: an encoding and the type of its values.
    struct Variant: Hashable {
        let encoding: SignalEncoding
        /// full: the logits' type; top-k: the log-probabilities' type; sampled: unused (uint8 counts).
        let valueType: FrameDType
        func hash(into hasher: inout Hasher) { hasher.combine(encoding.description); hasher.combine(valueType) }
        func signalOptions(temperature: Float, seed: UInt64) -> SignalOptions {
            var o = SignalOptions()
            o.encoding = encoding
            o.temperature = temperature
            o.seed = seed
            if case .full = encoding { o.logitType = valueType } else { o.logProbType = valueType }
            return o
        }
    }

    struct BiasAccumulator {
        var estimate = 0.0, reference = 0.0, diffSquares = 0.0, diffs: [Double] = []
        var dot = 0.0, normSquared = 0.0, referenceNormSquared = 0.0
        var rowCosineSum = 0.0, rows = 0
        /// top-k: the teacher's mass outside the top-k; sampled: distinct ids drawn; summed over rows.
        var tailMass = 0.0, distinctIds = 0
    }

    struct WireResult {
        var variants: [Variant] = []
        var codecs: [FrameCodec] = []
        /// Bytes of all response messages, by variant and codec.
        var bytes: [Variant: [Int]] = [:]
        /// Seconds spent making the signal and encoding the message, by variant and codec.
        var seconds: [Variant: [Double]] = [:]
        var bias: [Variant: BiasAccumulator] = [:]
        var positions = 0
        var batches = 0
        var fullKL = 0.0
        var vocab = 0

        func bytesPerToken(_ v: Variant, codec: Int) -> Double { Double(bytes[v]![codec]) / Double(max(positions, 1)) }
    }

    func measureWire(_ setup: Setup, student: TrainableDecoder, ks: [Int], ms: [Int], valueTypes: [FrameDType]) throws -> WireResult {
        let v = setup.vocab
        var result = WireResult()
        result.vocab = v
        result.variants = [Variant(encoding: .full, valueType: .float32), Variant(encoding: .full, valueType: .bfloat16)]
        for k in ks { for t in valueTypes { result.variants.append(Variant(encoding: .topK(k), valueType: t)) } }
        for m in ms { result.variants.append(Variant(encoding: .sampled(m), valueType: .uint8)) }
        result.codecs = [.raw, .zstd(level: zstdLevel), .shuffledZstd(level: zstdLevel)]
        for variant in result.variants {
            result.bytes[variant] = Array(repeating: 0, count: result.codecs.count)
            result.seconds[variant] = Array(repeating: 0, count: result.codecs.count)
            result.bias[variant] = BiasAccumulator()
        }
        let lossOptions = KDLoss.Options(temperature: kdTemperature, scaleByTemperatureSquared: false)
        let invT = 1 / kdTemperature

        let teacher = TeacherService(decoder: setup.teacher.decoder, options: SignalOptions())
        // The same micro-batches the first steps of every run train on.
        let batcher = try SFTBatcher(dataset: setup.train, seqLen: seqLen, batchTokens: rows * seqLen, packing: false,
                                     padId: setup.padId, seed: seed)
        for b in 0..<wireBatches {
            let batch = batcher.nextBatch()
            let request = SignalRequest(batchId: b, batch: batch)
            let n = request.positions.count
            guard n > 0 else { continue }
            result.positions += n
            result.batches += 1

            // Teacher logits at the trained positions, as the teacher service computes them: (n, V).
            let teacherLogits = teacher.logits(for: request)
            // The untrained student's logits at the same positions.
            let studentLogits = student.forward(tokens: batch.tokens, batch: rows, length: seqLen).gatherRows(request.positions)

            // Exact reference: per-row KL, teacher entropy, and the full-logit gradient.
            var klRow = [Double](repeating: 0, count: n), entropyRow = [Double](repeating: 0, count: n)
            for r in 0..<n {
                klRow[r] = KDLoss.fullLogits(student: studentLogits.row(r), vocab: v, teacher: teacherLogits.row(r),
                                             weights: [1], normalizer: 1, options: lossOptions, gradient: nil)
                entropyRow[r] = Self.entropy(teacherLogits.row(r), v, invT: invT)
            }
            result.fullKL += klRow.reduce(0, +)
            let ones = [Float](repeating: 1, count: n)
            let referenceGradient = Tensor(shape: [n, v])
            referenceGradient.ptr.update(from: studentLogits.ptr, count: n * v)
            _ = KDLoss.fullLogits(student: referenceGradient.ptr, vocab: v, teacher: teacherLogits.ptr, weights: ones,
                                  normalizer: Double(n), options: lossOptions, gradient: referenceGradient.ptr)

            let runSeed = seed
            for variant in result.variants {
                let options = variant.signalOptions(temperature: kdTemperature, seed: runSeed)
                var decoded: TeacherSignal?
                for (c, codec) in result.codecs.enumerated() {
                    var message: [UInt8] = []
                    let time = seconds {
                        let signal = TeacherSignal.make(logits: teacherLogits.ptr, rows: n, vocab: v,
                                                        encoding: variant.encoding, temperature: kdTemperature) { i in
                            request.drawSeed(runSeed: runSeed, position: i)
                        }
                        message = TensorFrame.encodeMessage(signal.frames(batchId: b, vocab: v, options: options), codec: codec)
                    }
                    result.bytes[variant]![c] += message.count
                    result.seconds[variant]![c] += time
                    if decoded == nil {
                        decoded = try TeacherSignal(frames: try TensorFrame.decodeMessage(message, from: 0), batchId: b,
                                                    rows: n, vocab: v, encoding: variant.encoding, from: 0)
                    }
                }
                accumulateBias(&result.bias[variant]!, signal: decoded!, student: studentLogits, vocab: v, rows: n,
                               reference: klRow, entropy: entropyRow, referenceGradient: referenceGradient,
                               options: lossOptions)
            }
        }
        guard result.positions > 0 else { throw CLIError("the first \(wireBatches) micro-batches have no completion tokens") }
        return result
    }

    /// Entropy of softmax(x / T) in nats.
    static func entropy(_ x: UnsafePointer<Float>, _ v: Int, invT: Float) -> Double {
        var m = -Float.infinity
        for j in 0..<v { m = max(m, x[j] * invT) }
        var z = 0.0, s = 0.0
        for j in 0..<v {
            let a = Double(x[j] * invT - m)
            let e = exp(a)
            z += e
            s += e * a
        }
        return log(z) - s / z
    }

    /// Per-row estimate against the exact KL, and the gradient against the exact gradient.
    func accumulateBias(_ acc: inout BiasAccumulator, signal: TeacherSignal, student: Tensor, vocab v: Int, rows n: Int,
                        reference: [Double], entropy: [Double], referenceGradient: Tensor, options: KDLoss.Options) {
        switch signal {
        case .topK(_, _, _, let tail): acc.tailMass += tail.reduce(0) { $0 + Double($1) }
        case .sampled(_, _, let counts): acc.distinctIds += counts.reduce(0) { $0 + ($1 > 0 ? 1 : 0) }
        case .full: break
        }
        for r in 0..<n {
            var estimate = Self.row(r, of: signal).kdLoss(student: student.row(r), vocab: v, weights: [1], normalizer: 1,
                                                          options: options, gradient: false)
            if case .sampled = signal { estimate -= entropy[r] }
            acc.estimate += estimate
            acc.reference += reference[r]
            let d = estimate - reference[r]
            acc.diffs.append(d)
            acc.diffSquares += d * d
        }
        let gradient = Tensor(shape: [n, v])
        gradient.ptr.update(from: student.ptr, count: n * v)
        _ = signal.kdLoss(student: gradient.ptr, vocab: v, weights: [Float](repeating: 1, count: n), normalizer: Double(n),
                          options: options, gradient: true)
        for r in 0..<n {
            let g = gradient.row(r), f = referenceGradient.row(r)
            var dot = 0.0, gg = 0.0, ff = 0.0
            for j in 0..<v { dot += Double(g[j]) * Double(f[j]); gg += Double(g[j]) * Double(g[j]); ff += Double(f[j]) * Double(f[j]) }
            acc.dot += dot
            acc.normSquared += gg
            acc.referenceNormSquared += ff
            if gg > 0 && ff > 0 { acc.rowCosineSum += dot / (gg * ff).squareRoot() }
            acc.rows += 1
        }
    }

    /// Row r of a signal as a one-row signal.
    static func row(_ r: Int, of signal: TeacherSignal) -> TeacherSignal {
        switch signal {
        case .full(let logits, let v):
            return .full(logits: Array(logits[r * v..<(r + 1) * v]), vocab: v)
        case .topK(let k, let ids, let logProbs, let tail):
            return .topK(k: k, ids: Array(ids[r * k..<(r + 1) * k]), logProbs: Array(logProbs[r * k..<(r + 1) * k]), tailMass: [tail[r]])
        case .sampled(let m, let ids, let counts):
            return .sampled(draws: m, ids: Array(ids[r * m..<(r + 1) * m]), counts: Array(counts[r * m..<(r + 1) * m]))
        }
    }

    // MARK: 3: training runs

    struct RunResult {
        let encoding: SignalEncoding
        let kl: HeldoutKL
        let tokensPerSecond: Double
        let bytesPerToken: Double
        let trainedPositions: Int
        let firstLoss: Double
        let lastLoss: Double
        let seconds: Double
        let waitSeconds: Double
    }

    func trainRuns(_ setup: Setup, encodings: [SignalEncoding], probe: HeldoutDistillation, untrained: HeldoutKL) throws -> [RunResult] {
        guard !encodings.isEmpty else { return [] }
        var options = TrainOptions()
        options.steps = steps
        options.batchTokens = rows * seqLen
        options.seqLen = seqLen
        options.gradAccumulation = gradAccum
        options.lr = lr
        options.warmupSteps = warmup
        options.seed = seed
        // Completion positions the runs train on (the same batches for every run).
        let replay = try SFTBatcher(dataset: setup.train, seqLen: seqLen, batchTokens: rows * seqLen, packing: false,
                                    padId: setup.padId, seed: seed)
        let trainedPositions = (0..<steps * gradAccum).reduce(0) { n, _ in n + replay.nextBatch().predictedTokens }
        if !output.json {
            say("")
            say(String(format: "KD runs: %d steps of %d x %d x %d tokens (%d trained positions), lr %.1e (warm-up %d, cosine to 10%%), seed %llu, log-probs fp16, shuffled zstd %d",
                         steps, gradAccum, rows, seqLen, trainedPositions, lr, warmup, seed, zstdLevel))
        }
        var results: [RunResult] = []
        for encoding in encodings {
            let (student, quantizer) = try setup.makeStudent()
            var signal = SignalOptions()
            signal.encoding = encoding
            signal.temperature = kdTemperature
            signal.logProbType = .float16
            signal.codec = .shuffledZstd(level: zstdLevel)
            signal.seed = seed
            let link = LocalTeacherLink(service: TeacherService(decoder: setup.teacher.decoder, options: signal))
            let objective = KDObjective(link: link, lossOptions: KDLoss.Options(temperature: kdTemperature), lookahead: 2)
            let runDir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-bench-wire-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: runDir) }
            let trainer = try Trainer(model: student, dataset: setup.train, padId: setup.padId, options: options, runDir: runDir,
                                      quantizer: quantizer, objective: objective)
            var losses: [Double] = [], tokens = 0, trainSeconds = 0.0
            let start = Date()
            try trainer.run { r in
                losses.append(r.loss)
                tokens += r.tokens
                trainSeconds = r.elapsedSeconds
                if r.step == 1 || r.step % 10 == 0 || r.step == steps {
                    printErr(String(format: "bench wire: %@ step %d/%d loss %.4f lr %.2e |g| %.3f %.0f tok/s",
                                    encoding.description, r.step, steps, r.loss, r.lr, r.gradNorm, r.tokensPerSecond))
                }
            }
            let seconds = Date().timeIntervalSince(start)
            let kl = probe.evaluate(student: student, rows: rows, seqLen: seqLen, padId: setup.padId)
            let result = RunResult(encoding: encoding, kl: kl, tokensPerSecond: Double(tokens) / max(trainSeconds, 1e-9),
                                   bytesPerToken: Double(link.bytesReceived) / Double(max(trainedPositions, 1)),
                                   trainedPositions: trainedPositions, firstLoss: losses.first ?? .nan,
                                   lastLoss: losses.last ?? .nan, seconds: seconds, waitSeconds: link.waitSeconds)
            printErr(String(format: "bench wire: %@ run done in %.0f s; held-out KL %.4f (untrained %.4f)",
                            encoding.description, seconds, kl.mean, untrained.mean))
            results.append(result)
        }
        return results
    }

    // MARK: - Reports

    func reportWire(_ wire: WireResult) {
        if !output.json {
            say("")
            say("Bytes per trained token on the wire (teacher response messages of \(wire.batches) micro-batches, \(wire.positions) trained positions; encode = signal + frames + codec)")
            say(pad("encoding", 16) + pad("values", 8) + wire.codecs.map { pad(codecName($0), 16, right: true) }.joined()
                  + pad("encode tok/s (raw / zstd / shuffled)", 40, right: true))
        }
        for variant in wire.variants {
            var cells = ""
            var rates: [String] = []
            for (c, codec) in wire.codecs.enumerated() {
                let perToken = wire.bytesPerToken(variant, codec: c)
                let rate = Double(wire.positions) / max(wire.seconds[variant]![c], 1e-12)
                var fields = encodingFields(variant.encoding)
                fields += [("value_type", typeName(variant.valueType)), ("codec", codecName(codec)),
                           ("bytes_per_token", perToken), ("tokens_per_s", rate), ("positions", wire.positions),
                           ("batches", wire.batches), ("vocab", wire.vocab), ("threads", Threads.count)]
                if c > 0 { fields.append(("ratio_to_raw", perToken / wire.bytesPerToken(variant, codec: 0))) }
                emitJSONOnly("wire_bytes", fields)
                cells += pad(String(format: "%.1f", perToken), 16, right: true)
                rates.append(String(format: "%.0f", rate))
            }
            if !output.json {
                say(pad(variant.encoding.description, 16) + pad(valueLabel(variant), 8) + cells
                      + pad(rates.joined(separator: " / "), 40, right: true))
            }
        }
    }

    func reportBias(_ wire: WireResult) {
        let fullMean = wire.fullKL / Double(wire.positions)
        if !output.json {
            say("")
            say(String(format: "KD-loss estimate vs the full-vocabulary forward KL at T = %g on the untrained student (%d positions; full KL %.4f nats/token)",
                         kdTemperature, wire.positions, fullMean))
            say("sampled: estimate = cross-entropy on the draws - teacher entropy; ± is one standard error over positions")
            say(pad("encoding", 16) + pad("values", 8) + pad("estimate", 12, right: true) + pad("bias", 20, right: true)
                  + pad("grad cosine", 14, right: true) + pad("row mean", 12, right: true) + "   per position")
        }
        for variant in wire.variants {
            let a = wire.bias[variant]!
            let n = Double(a.diffs.count)
            let meanDiff = (a.estimate - a.reference) / n
            let sd = ((a.diffSquares / n - meanDiff * meanDiff) * n / max(n - 1, 1)).squareRoot()
            let relative = (a.estimate - a.reference) / a.reference
            let relativeSE = sd * n.squareRoot() / a.reference
            let cosine = a.dot / (a.normSquared * a.referenceNormSquared).squareRoot()
            let rowCosine = a.rowCosineSum / Double(max(a.rows, 1))
            var fields = encodingFields(variant.encoding)
            fields += [("value_type", typeName(variant.valueType)), ("kd_estimate", a.estimate / n), ("kd_full", a.reference / n),
                       ("bias", relative), ("bias_se", relativeSE), ("bias_nats", meanDiff), ("grad_cosine", cosine),
                       ("grad_cosine_row_mean", rowCosine), ("positions", Int(n)), ("temperature", Double(kdTemperature))]
            var extra = ""
            switch variant.encoding {
            case .topK:
                fields.append(("tail_mass", a.tailMass / n))
                extra = String(format: "tail mass %.4f", a.tailMass / n)
            case .sampled:
                fields.append(("distinct_ids", Double(a.distinctIds) / n))
                extra = String(format: "%.2f distinct ids", Double(a.distinctIds) / n)
            case .full: break
            }
            emit("kd_bias", fields,
                        text: pad(variant.encoding.description, 16) + pad(valueLabel(variant), 8)
                            + pad(String(format: "%.4f", a.estimate / n), 12, right: true)
                            + pad(String(format: "%+.2f%% ± %.2f%%", 100 * relative, 100 * relativeSE), 20, right: true)
                            + pad(String(format: "%.4f", cosine), 14, right: true)
                            + pad(String(format: "%.4f", rowCosine), 12, right: true) + "   " + extra)
        }
    }

    func reportRuns(_ results: [RunResult], untrained: HeldoutKL) {
        if !output.json {
            say("")
            say(String(format: "Held-out forward KL to the teacher at T = 1 (full vocabulary, %d completion positions of %d held-out examples); ± is one standard error over examples",
                         untrained.positions, untrained.sums.count))
            say(pad("run", 16) + pad("B/token", 10, right: true) + pad("held-out KL", 13, right: true)
                  + pad("vs full", 20, right: true) + pad("gain vs full", 14, right: true) + pad("loss first->last", 20, right: true)
                  + pad("train tok/s", 13, right: true) + pad("time", 8, right: true))
        }
        emit("kd_run", [("encoding", "untrained"), ("steps", 0), ("heldout_kl", untrained.mean), ("positions", untrained.positions)],
                    text: pad("untrained", 16) + pad("-", 10, right: true) + pad(String(format: "%.4f", untrained.mean), 13, right: true))
        let full = results.first { $0.encoding == .full }
        for r in results {
            var fields = encodingFields(r.encoding)
            fields += [("steps", steps), ("grad_accum", gradAccum), ("rows", rows), ("seq_len", seqLen), ("lr", lr),
                       ("warmup", warmup), ("seed", Int(seed)), ("temperature", Double(kdTemperature)),
                       ("value_type", r.encoding == .full ? "fp32" : r.encoding.isSampled ? "uint8" : "fp16"),
                       ("codec", codecName(.shuffledZstd(level: zstdLevel))), ("bytes_per_token", r.bytesPerToken),
                       ("heldout_kl", r.kl.mean), ("heldout_kl_untrained", untrained.mean), ("positions", r.kl.positions),
                       ("trained_positions", r.trainedPositions), ("tokens_per_s", r.tokensPerSecond),
                       ("first_loss", r.firstLoss), ("last_loss", r.lastLoss), ("seconds", r.seconds),
                       ("teacher_seconds", r.waitSeconds), ("threads", Threads.count)]
            var versus = "", gain = ""
            if let full {
                let (d, se) = r.kl.difference(from: full.kl)
                let relative = d / full.kl.mean, relativeSE = se / full.kl.mean
                let gainFraction = (untrained.mean - r.kl.mean) / (untrained.mean - full.kl.mean)
                fields += [("relative_to_full", relative), ("relative_to_full_se", relativeSE), ("gain_fraction_of_full", gainFraction)]
                versus = r.encoding == .full ? "(reference)" : String(format: "%+.2f%% ± %.2f%%", 100 * relative, 100 * relativeSE)
                gain = String(format: "%.1f%%", 100 * gainFraction)
            }
            emit("kd_run", fields,
                        text: pad(r.encoding.description, 16) + pad(String(format: "%.0f", r.bytesPerToken), 10, right: true)
                            + pad(String(format: "%.4f", r.kl.mean), 13, right: true) + pad(versus, 20, right: true)
                            + pad(gain, 14, right: true)
                            + pad(String(format: "%.3f->%.3f", r.firstLoss, r.lastLoss), 20, right: true)
                            + pad(String(format: "%.0f", r.tokensPerSecond), 13, right: true)
                            + pad(formatDuration(r.seconds), 8, right: true))
        }
        guard let full else { return }
        // The target: an encoding of <= targetBytes B/token within targetRelative of the full run.
        let candidates = results.filter { $0.encoding != .full }.map { r -> (RunResult, Double) in (r, r.kl.mean / full.kl.mean - 1) }
        let small = candidates.filter { $0.0.bytesPerToken <= targetBytes }
        let met = small.filter { $0.1 <= targetRelative }.min { $0.0.bytesPerToken < $1.0.bytesPerToken }
        let closest = small.min { $0.1 < $1.1 }
        var fields: [(String, Any)] = [("target_bytes_per_token", targetBytes), ("target_relative", targetRelative), ("met", met != nil)]
        var text = String(format: "Target (<= %.0f B/token, held-out KL within %.0f%% of the full-logit run): ", targetBytes, 100 * targetRelative)
        if let (r, rel) = met ?? closest {
            fields += [("encoding", r.encoding.description), ("bytes_per_token", r.bytesPerToken), ("relative_to_full", rel)]
            text += String(format: "%@ — %@ at %.0f B/token, %+.2f%% vs full", met != nil ? "MET" : "NOT MET; closest",
                           r.encoding.description, r.bytesPerToken, 100 * rel)
        } else {
            text += "NOT MET; no trained encoding fits in \(Int(targetBytes)) B/token"
        }
        if !output.json { say("") }
        emit("wire_target", fields, text: text)
    }

    // MARK: - Formatting

    func encodingFields(_ e: SignalEncoding) -> [(String, Any)] {
        switch e {
        case .full: return [("encoding", "full")]
        case .topK(let k): return [("encoding", e.description), ("k", k)]
        case .sampled(let m): return [("encoding", e.description), ("m", m)]
        }
    }

    func valueLabel(_ v: Variant) -> String {
        if case .sampled = v.encoding { return "ids+n" }
        return typeName(v.valueType)
    }

    func codecName(_ c: FrameCodec) -> String {
        switch c {
        case .raw: return "raw"
        case .zstd: return "zstd"
        case .shuffledZstd: return "shuffled-zstd"
        }
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

func typeName(_ t: FrameDType) -> String {
    switch t {
    case .float32: return "fp32"
    case .float16: return "fp16"
    case .bfloat16: return "bf16"
    default: return t.description
    }
}

extension SignalEncoding {
    var isSampled: Bool { if case .sampled = self { return true } else { return false } }
}
