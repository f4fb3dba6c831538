import Cluster
import Eval
import Foundation
import Formats
import Jobs
import Model
import Quant
import Tensors
import Train

/// `rqat bench wire`: what each teacher-signal encoding costs on the wire, how far its KD loss
/// is from the full-vocabulary loss, and how well a student trains on it (docs/WIRE.md). The
/// stages run in order, each returning what the tool prints: `measureBeforeTraining` (held-out
/// KL of the untrained student, bytes and bias), `trainedPositions`, `train` once per encoding,
/// then `report`.
package final class WireBench {
    package struct Options {
        /// The full-precision teacher.
        package var teacher = "assets/SmolLM2-135M-Instruct.Q4_1.gguf"
        /// The student's starting weights (nil: the teacher's).
        package var student: String?
        /// Fake-quant scheme of the student's block linears (STE over min/max grids = the RTN
        /// student); nil keeps it full precision.
        package var scheme: QuantScheme?
        /// Prompt/completion JSONL (teacher traces).
        package var data = "runs/wire/traces.jsonl"
        /// Held-out JSONL; nil holds out the last `heldoutCount` examples of `data`.
        package var heldout: String?
        package var heldoutCount = 16
        package var format = SFTFormat.chat
        /// Longer examples are cut to it (their completion's end is dropped), or with
        /// `dropLong` skipped.
        package var seqLen = 256
        package var dropLong = false
        package var rows = 2
        /// Training micro-batches whose signal is measured for bytes and bias (0 = runs only).
        package var wireBatches = 8
        package var ks = [16, 64, 256]
        package var ms = [16, 64]
        /// Value types of the top-k log-probabilities measured for bytes and bias.
        package var valueTypes: [FrameDType] = [.float16, .bfloat16]
        package var zstdLevel = 3
        package var kdTemperature: Float = 1
        /// beta of the JSD whose bucketing bias is measured beside forward and reverse KL.
        package var jsdBeta: Float = 0.5
        package var steps = 30
        package var gradAccum = 1
        package var lr = 5e-5
        package var warmup = 2
        /// Data order and sampled draws: the same for every run.
        package var seed: UInt64 = 0
        /// The target: bytes per trained token, and held-out KL within this fraction of
        /// the full-logit run's.
        package var targetBytes = 300.0
        package var targetRelative = 0.02
        package init() {}

        /// The divergences whose bias is measured: forward KL (every encoding), reverse KL and
        /// JSD (full logits and top-k; sampled draws carry no teacher probabilities).
        package var divergences: [KDDivergence] { [.forwardKL, .reverseKL, .jsd(beta: jsdBeta)] }
    }

    package let options: Options
    package let teacher: LanguageModel
    package let studentCheckpoint: Checkpoint
    package let train: SFTDataset
    package let heldout: [SFTExample]
    package let padId: Int
    package var vocab: Int { teacher.config.vocabSize }
    /// The teacher's logits on the held-out examples, computed on first use and kept for
    /// every run's evaluation.
    package private(set) lazy var probe = HeldoutDistillation(teacher: teacher.decoder, examples: heldout, temperature: 1)

    /// Loads teacher, student checkpoint and data; says on `log` how many examples were cut.
    package init(_ options: Options, log: (String) -> Void) throws {
        self.options = options
        let o = options
        teacher = try LanguageModel(checkpoint: try Checkpoint.open(o.teacher))
        studentCheckpoint = try o.student.map(Checkpoint.open) ?? teacher.checkpoint
        let (tokenizer, template) = try studentCheckpoint.loadTokenizer()
        guard tokenizer.vocabSize == teacher.tokenizer.vocabSize,
              tokenizer.vocabularyFingerprint == teacher.tokenizer.vocabularyFingerprint,
              studentCheckpoint.config.vocabSize == teacher.config.vocabSize else {
            throw JobError("teacher \(o.teacher) and student \(o.student ?? o.teacher) have different vocabularies; KD needs the same tokenizer")
        }
        var cut = 0, skipped = 0
        // A prefix of a trace is still the teacher's text, so a long example is cut rather than lost.
        func load(_ path: String) throws -> [SFTExample] {
            let all = try SFTDataset.load(URL(fileURLWithPath: path), tokenizer: tokenizer, format: o.format, template: template,
                                          seqLen: Int(Int32.max))
            return all.examples.compactMap { e in
                guard e.tokens.count > o.seqLen else { return e }
                guard !o.dropLong, e.promptLength < o.seqLen - 1 else { skipped += 1; return nil }
                cut += 1
                return SFTExample(tokens: Array(e.tokens.prefix(o.seqLen)), promptLength: e.promptLength, line: e.line)
            }
        }
        var trainExamples = try load(o.data), heldoutExamples: [SFTExample]
        if let path = o.heldout {
            heldoutExamples = try load(path)
        } else {
            guard trainExamples.count > o.heldoutCount else {
                throw JobError("\(o.data) has \(trainExamples.count) usable examples; holding out \(o.heldoutCount) leaves none to train on")
            }
            heldoutExamples = Array(trainExamples.suffix(o.heldoutCount))
            trainExamples.removeLast(o.heldoutCount)
        }
        if cut + skipped > 0 {
            log("bench wire: \(cut) examples longer than \(o.seqLen) tokens cut to \(o.seqLen), \(skipped) skipped")
        }
        train = SFTDataset(path: o.data, examples: trainExamples)
        heldout = heldoutExamples
        padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0
    }

    /// A fresh student: the checkpoint's weights, fake-quantized (STE over a min/max grid).
    func makeStudent() throws -> (TrainableDecoder, FakeQuantizer?) {
        let decoder = try TrainableDecoder(config: studentCheckpoint.config, source: studentCheckpoint.weights)
        let quantizer = try options.scheme.map { try FakeQuantizer(decoder: decoder, scheme: $0, mode: .ste) }
        decoder.weightQuantizer = quantizer
        return (decoder, quantizer)
    }

    // MARK: - 1 + 2: the untrained student, wire bytes and KD-loss bias

    /// The held-out KL of the untrained student and (with `wireBatches` > 0) bytes and bias on
    /// the first training micro-batches, with that same student.
    package func measureBeforeTraining(log: (String) -> Void) throws -> (untrained: HeldoutKL, wire: WireMeasurement?) {
        var t0 = Date()
        let (student, _) = try makeStudent()   // released before the runs
        let untrained = probe.evaluate(student: student, rows: options.rows, seqLen: options.seqLen, padId: padId)
        log(String(format: "bench wire: held-out set %d positions; untrained student KL %.4f (%.0f s)",
                   untrained.positions, untrained.mean, Date().timeIntervalSince(t0)))
        guard options.wireBatches > 0 else { return (untrained, nil) }
        t0 = Date()
        let wire = try measureWire(student: student)
        log(String(format: "bench wire: wire and bias measured in %.0f s", Date().timeIntervalSince(t0)))
        return (untrained, wire)
    }

    /// One way of sending the signal: an encoding and the type of its values.
    struct Variant {
        let encoding: SignalEncoding
        /// full: the logits' type; top-k: the log-probabilities' type; sampled: unused (uint8 counts).
        let valueType: FrameDType

        func signalOptions(temperature: Float, seed: UInt64) -> SignalOptions {
            var o = SignalOptions()
            o.encoding = encoding
            o.temperature = temperature
            o.seed = seed
            if case .full = encoding { o.logitType = valueType } else { o.logProbType = valueType }
            return o
        }
    }

    func measureWire(student: TrainableDecoder) throws -> WireMeasurement {
        let o = options, v = vocab
        var variants = [Variant(encoding: .full, valueType: .float32), Variant(encoding: .full, valueType: .bfloat16)]
        for k in o.ks where k <= v { for t in o.valueTypes { variants.append(Variant(encoding: .topK(k), valueType: t)) } }
        for m in o.ms { variants.append(Variant(encoding: .sampled(m), valueType: .uint8)) }
        let codecs: [FrameCodec] = [.raw, .zstd(level: o.zstdLevel), .shuffledZstd(level: o.zstdLevel)]
        var bytes = [[Int]](repeating: Array(repeating: 0, count: codecs.count), count: variants.count)
        var times = [[Double]](repeating: Array(repeating: 0, count: codecs.count), count: variants.count)
        let divergences = o.divergences
        // bias[variant][divergence]; nil where the encoding cannot estimate the divergence.
        var bias = variants.map { variant in
            divergences.map { d -> KDBias? in variant.encoding.isSampled && !d.acceptsSampledSignal ? nil : KDBias() }
        }
        var positions = 0, batches = 0, fullKL = 0.0
        let lossOptions = divergences.map { KDLoss.Options(temperature: o.kdTemperature, scaleByTemperatureSquared: false, divergence: $0) }

        let service = TeacherService(decoder: teacher.decoder, options: SignalOptions())
        // The same micro-batches the first steps of every run train on.
        let batcher = try SFTBatcher(dataset: train, seqLen: o.seqLen, batchTokens: o.rows * o.seqLen, packing: false,
                                     padId: padId, seed: o.seed)
        for b in 0..<o.wireBatches {
            let batch = batcher.nextBatch()
            let request = SignalRequest(batchId: b, batch: batch)
            let n = request.positions.count
            guard n > 0 else { continue }
            positions += n
            batches += 1

            // Teacher logits at the trained positions, as the teacher service computes them: (n, V).
            let teacherLogits = service.logits(for: request)
            // The untrained student's logits at the same positions.
            let studentLogits = student.forward(tokens: batch.tokens, batch: o.rows, length: o.seqLen).gatherRows(request.positions)
            let exact = lossOptions.map {
                KDBias.reference(student: studentLogits, teacher: teacherLogits, vocab: v, rows: n, options: $0)
            }
            fullKL += exact[0].kl.reduce(0, +)

            for (vi, variant) in variants.enumerated() {
                let signalOptions = variant.signalOptions(temperature: o.kdTemperature, seed: o.seed)
                var decoded: TeacherSignal?
                for (c, codec) in codecs.enumerated() {
                    var message: [UInt8] = []
                    let time = seconds {
                        let signal = TeacherSignal.make(logits: teacherLogits.ptr, rows: n, vocab: v,
                                                        encoding: variant.encoding, temperature: o.kdTemperature) { i in
                            request.drawSeed(runSeed: o.seed, position: i)
                        }
                        message = TensorFrame.encodeMessage(signal.frames(batchId: b, vocab: v, options: signalOptions), codec: codec)
                    }
                    bytes[vi][c] += message.count
                    times[vi][c] += time
                    if decoded == nil {
                        decoded = try TeacherSignal(frames: try TensorFrame.decodeMessage(message, from: 0), batchId: b,
                                                    rows: n, vocab: v, encoding: variant.encoding, from: 0)
                    }
                }
                for di in divergences.indices where bias[vi][di] != nil {
                    bias[vi][di]!.add(signal: decoded!, student: studentLogits, vocab: v, rows: n, reference: exact[di].kl,
                                      entropy: exact[di].entropy, referenceGradient: exact[di].gradient, options: lossOptions[di])
                }
            }
        }
        guard positions > 0 else { throw JobError("the first \(o.wireBatches) micro-batches have no completion tokens") }

        let threads = Threads.count
        let results = variants.enumerated().map { i, variant -> WireMeasurement.Variant in
            let encoding = EncodingFields(variant.encoding)
            let byteRecords = codecs.enumerated().map { c, codec -> WireBytesRecord in
                let perToken = Double(bytes[i][c]) / Double(positions)
                return Flattened(encoding, WireBytes(
                    valueType: typeName(variant.valueType), codec: codecName(codec), bytesPerToken: perToken,
                    tokensPerS: Double(positions) / max(times[i][c], 1e-12), positions: positions, batches: batches,
                    vocab: v, threads: threads, ratioToRaw: c > 0 ? perToken / (Double(bytes[i][0]) / Double(positions)) : nil))
            }
            let biasRecords = divergences.indices.compactMap { di -> KDBiasRecord? in
                guard let s = bias[i][di]?.summary else { return nil }
                var beta: Double?
                if case .jsd(let b) = divergences[di] { beta = Double(b) }
                return Flattened(encoding, KDBiasFields(
                    divergence: divergences[di].description, jsdBeta: beta,
                    valueType: typeName(variant.valueType), kdEstimate: s.estimate, kdFull: s.reference, bias: s.bias,
                    biasSE: s.biasSE, biasNats: s.biasNats, gradCosine: s.gradCosine, gradCosineRowMean: s.gradCosineRowMean,
                    positions: s.positions, temperature: Double(o.kdTemperature),
                    tailMass: variant.encoding.isTopK ? s.tailMass : nil,
                    distinctIds: variant.encoding.isSampled ? s.distinctIds : nil))
            }
            return .init(bytes: byteRecords, biases: biasRecords)
        }
        return WireMeasurement(batches: batches, positions: positions, vocab: v, fullKL: fullKL / Double(positions),
                               codecs: codecs.map(codecName), variants: results)
    }

    // MARK: - 3: training runs

    /// `--runs` may not ask for more top-k ids than the vocabulary has.
    package func check(runs encodings: [SignalEncoding]) throws {
        for case .topK(let k) in encodings where k > vocab { throw JobError("--runs: top-\(k) exceeds the vocabulary of \(vocab)") }
    }

    /// Completion positions every run trains on (the runs draw the same batches).
    package func trainedPositions() throws -> Int {
        let o = options
        let replay = try SFTBatcher(dataset: train, seqLen: o.seqLen, batchTokens: o.rows * o.seqLen, packing: false,
                                    padId: padId, seed: o.seed)
        return (0..<o.steps * o.gradAccum).reduce(0) { n, _ in n + replay.nextBatch().predictedTokens }
    }

    /// `steps` KD steps from the untrained student with `encoding` through the Trainer,
    /// KDObjective and LocalTeacherLink path of `rqat train` (top-k log-probs fp16, shuffled
    /// zstd), then the held-out KL at T = 1 (`untrained` is only quoted in the progress line).
    package func train(_ encoding: SignalEncoding, trainedPositions: Int, untrained: HeldoutKL, log: (String) -> Void) throws -> KDRun {
        let o = options
        var trainOptions = TrainOptions()
        trainOptions.steps = o.steps
        trainOptions.batchTokens = o.rows * o.seqLen
        trainOptions.seqLen = o.seqLen
        trainOptions.gradAccumulation = o.gradAccum
        trainOptions.lr = o.lr
        trainOptions.warmupSteps = o.warmup
        trainOptions.seed = o.seed
        let (student, quantizer) = try makeStudent()
        var signal = SignalOptions()
        signal.encoding = encoding
        signal.temperature = o.kdTemperature
        signal.logProbType = .float16
        signal.codec = .shuffledZstd(level: o.zstdLevel)
        signal.seed = o.seed
        let link = LocalTeacherLink(service: TeacherService(decoder: teacher.decoder, options: signal))
        let objective = KDObjective(link: link, lossOptions: KDLoss.Options(temperature: o.kdTemperature), lookahead: 2)
        let runDir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-bench-wire-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: runDir) }
        let trainer = try Trainer(model: student, dataset: train, padId: padId, options: trainOptions, runDir: runDir,
                                  quantizer: quantizer, objective: objective)
        var losses: [Double] = [], tokens = 0, trainSeconds = 0.0
        let start = Date()
        try trainer.run { r in
            losses.append(r.loss)
            tokens += r.tokens
            trainSeconds = r.elapsedSeconds
            if r.step == 1 || r.step % 10 == 0 || r.step == o.steps {
                log(String(format: "bench wire: %@ step %d/%d loss %.4f lr %.2e |g| %.3f %.0f tok/s",
                           encoding.description, r.step, o.steps, r.loss, r.lr, r.gradNorm, r.tokensPerSecond))
            }
        }
        let seconds = Date().timeIntervalSince(start)
        let kl = probe.evaluate(student: student, rows: o.rows, seqLen: o.seqLen, padId: padId)
        log(String(format: "bench wire: %@ run done in %.0f s; held-out KL %.4f (untrained %.4f)",
                   encoding.description, seconds, kl.mean, untrained.mean))
        return KDRun(encoding: encoding, heldoutSums: kl.sums, heldoutCounts: kl.counts,
                     tokensPerSecond: Double(tokens) / max(trainSeconds, 1e-9),
                     bytesPerToken: Double(link.bytesReceived) / Double(max(trainedPositions, 1)),
                     trainedPositions: trainedPositions, firstLoss: losses.first ?? .nan, lastLoss: losses.last ?? .nan,
                     seconds: seconds, waitSeconds: link.waitSeconds)
    }

    /// The runs against the untrained student and the full-logit run (when there is one), and
    /// the target: the encoding of at most `targetBytes` B/token within `targetRelative` of the
    /// full run with the fewest bytes, else the closest one under the byte limit.
    package static func report(_ runs: [KDRun], untrained: HeldoutKL, options o: Options) -> WireRunReport {
        let full = runs.first { $0.encoding == .full }
        let records = runs.map { r -> KDRunRecord in
            let kl = r.heldoutKL
            var fields = KDRunFields(
                steps: o.steps, gradAccum: o.gradAccum, rows: o.rows, seqLen: o.seqLen, lr: o.lr, warmup: o.warmup,
                seed: Int(o.seed), temperature: Double(o.kdTemperature),
                valueType: r.encoding == .full ? "fp32" : r.encoding.isSampled ? "uint8" : "fp16",
                codec: codecName(.shuffledZstd(level: o.zstdLevel)), bytesPerToken: r.bytesPerToken, heldoutKL: kl.mean,
                heldoutKLUntrained: untrained.mean, positions: kl.positions, trainedPositions: r.trainedPositions,
                tokensPerS: r.tokensPerSecond, firstLoss: r.firstLoss, lastLoss: r.lastLoss, seconds: r.seconds,
                teacherSeconds: r.waitSeconds, threads: Threads.count)
            if let full {
                let reference = full.heldoutKL
                let (d, se) = kl.difference(from: reference)
                fields.relativeToFull = d / reference.mean
                fields.relativeToFullSE = se / reference.mean
                fields.gainFractionOfFull = (untrained.mean - kl.mean) / (untrained.mean - reference.mean)
            }
            return Flattened(EncodingFields(r.encoding), fields)
        }
        var target: WireTargetRecord?
        if let full {
            let reference = full.heldoutKL.mean
            let candidates = runs.filter { $0.encoding != .full }.map { r -> (KDRun, Double) in (r, r.heldoutKL.mean / reference - 1) }
            let small = candidates.filter { $0.0.bytesPerToken <= o.targetBytes }
            let met = small.filter { $0.1 <= o.targetRelative }.min { $0.0.bytesPerToken < $1.0.bytesPerToken }
            let closest = small.min { $0.1 < $1.1 }
            var record = WireTargetRecord(targetBytesPerToken: o.targetBytes, targetRelative: o.targetRelative, met: met != nil)
            if let (r, relative) = met ?? closest {
                record.encoding = r.encoding.description
                record.bytesPerToken = r.bytesPerToken
                record.relativeToFull = relative
            }
            target = record
        }
        return WireRunReport(untrained: KDRunUntrainedRecord(heldoutKL: untrained.mean, positions: untrained.positions),
                             runs: records, target: target)
    }
}

// MARK: - Results

/// Bytes and bias of every encoding on the first training micro-batches.
package struct WireMeasurement: Codable {
    package struct Variant: Codable {
        /// One per codec, in the order of `codecs`.
        package var bytes: [WireBytesRecord]
        /// One per divergence of `Options.divergences` the encoding can estimate, in that order
        /// (forward KL first).
        package var biases: [KDBiasRecord]
    }
    package var batches: Int
    package var positions: Int
    package var vocab: Int
    /// The full-vocabulary forward KL per position (nats) on the untrained student.
    package var fullKL: Double
    package var codecs: [String]
    package var variants: [Variant]
}

/// One training run of `WireBench.train`.
package struct KDRun: Codable {
    package var encodingText: String
    /// The held-out KL per example (summed over its positions) and its positions.
    package var heldoutSums: [Double], heldoutCounts: [Int]
    package var tokensPerSecond: Double
    /// Teacher signal received per trained position.
    package var bytesPerToken: Double
    package var trainedPositions: Int
    package var firstLoss: Double, lastLoss: Double
    package var seconds: Double
    /// Seconds the student waited for the in-process teacher.
    package var waitSeconds: Double

    init(encoding: SignalEncoding, heldoutSums: [Double], heldoutCounts: [Int], tokensPerSecond: Double, bytesPerToken: Double,
         trainedPositions: Int, firstLoss: Double, lastLoss: Double, seconds: Double, waitSeconds: Double) {
        encodingText = encoding.description
        self.heldoutSums = heldoutSums
        self.heldoutCounts = heldoutCounts
        self.tokensPerSecond = tokensPerSecond
        self.bytesPerToken = bytesPerToken
        self.trainedPositions = trainedPositions
        self.firstLoss = firstLoss
        self.lastLoss = lastLoss
        self.seconds = seconds
        self.waitSeconds = waitSeconds
    }

    /// Always valid: the text came from a `SignalEncoding`.
    package var encoding: SignalEncoding { SignalEncoding(encodingText)! }
    package var heldoutKL: HeldoutKL { HeldoutKL(sums: heldoutSums, counts: heldoutCounts) }
}

package struct WireRunReport: Codable {
    package var untrained: KDRunUntrainedRecord
    package var runs: [KDRunRecord]
    /// nil without a full-logit run to compare with.
    package var target: WireTargetRecord?
}

// MARK: - Records

/// `encoding` and, for top-k and sampled signals, `k` or `m`.
package struct EncodingFields: Codable, Equatable, Sendable {
    package var encoding: String
    package var k: Int?
    package var m: Int?

    package init(_ e: SignalEncoding) {
        encoding = e.description
        switch e {
        case .full: break
        case .topK(let k): self.k = k
        case .sampled(let m): self.m = m
        }
    }
}

package typealias WireBytesRecord = Flattened<EncodingFields, WireBytes>
package typealias KDBiasRecord = Flattened<EncodingFields, KDBiasFields>
package typealias KDRunRecord = Flattened<EncodingFields, KDRunFields>

package struct WireBytes: BenchRecord, Equatable {
    package static let name = "wire_bytes"
    package var valueType: String, codec: String
    /// The teacher's response messages over the trained positions.
    package var bytesPerToken: Double
    /// Positions per second of making the signal, its frames and the codec's encoding.
    package var tokensPerS: Double
    package var positions: Int, batches: Int, vocab: Int, threads: Int
    /// Codecs other than raw.
    package var ratioToRaw: Double?

    enum CodingKeys: String, CodingKey {
        case codec, positions, batches, vocab, threads
        case valueType = "value_type"
        case bytesPerToken = "bytes_per_token"
        case tokensPerS = "tokens_per_s"
        case ratioToRaw = "ratio_to_raw"
    }
}

package struct KDBiasFields: BenchRecord, Equatable {
    package static let name = "kd_bias"
    /// kd-fkl, kd-rkl or kd-jsd (`KDDivergence`), and the JSD's beta.
    package var divergence: String
    package var jsdBeta: Double?
    package var valueType: String
    package var kdEstimate: Double, kdFull: Double
    package var bias: Double, biasSE: Double, biasNats: Double
    package var gradCosine: Double, gradCosineRowMean: Double
    package var positions: Int
    package var temperature: Double
    package var tailMass: Double?
    package var distinctIds: Double?

    enum CodingKeys: String, CodingKey {
        case bias, positions, temperature, divergence
        case jsdBeta = "jsd_beta"
        case valueType = "value_type"
        case kdEstimate = "kd_estimate", kdFull = "kd_full"
        case biasSE = "bias_se", biasNats = "bias_nats"
        case gradCosine = "grad_cosine", gradCosineRowMean = "grad_cosine_row_mean"
        case tailMass = "tail_mass", distinctIds = "distinct_ids"
    }
}

package struct KDRunFields: BenchRecord, Equatable {
    package static let name = "kd_run"
    package var steps: Int, gradAccum: Int, rows: Int, seqLen: Int
    package var lr: Double
    package var warmup: Int, seed: Int
    package var temperature: Double
    package var valueType: String, codec: String
    package var bytesPerToken: Double
    package var heldoutKL: Double, heldoutKLUntrained: Double
    package var positions: Int, trainedPositions: Int
    package var tokensPerS: Double
    package var firstLoss: Double, lastLoss: Double
    package var seconds: Double, teacherSeconds: Double
    package var threads: Int
    /// With a full-logit run: the held-out KL relative to it, ± its standard error, and the
    /// share of the full run's KL reduction this run achieves.
    package var relativeToFull: Double?, relativeToFullSE: Double?, gainFractionOfFull: Double?

    enum CodingKeys: String, CodingKey {
        case steps, rows, lr, warmup, seed, temperature, codec, positions, seconds, threads
        case gradAccum = "grad_accum", seqLen = "seq_len", valueType = "value_type"
        case bytesPerToken = "bytes_per_token"
        case heldoutKL = "heldout_kl", heldoutKLUntrained = "heldout_kl_untrained"
        case trainedPositions = "trained_positions"
        case tokensPerS = "tokens_per_s"
        case firstLoss = "first_loss", lastLoss = "last_loss"
        case teacherSeconds = "teacher_seconds"
        case relativeToFull = "relative_to_full", relativeToFullSE = "relative_to_full_se"
        case gainFractionOfFull = "gain_fraction_of_full"
    }
}

/// The student before training, the reference of every run's gain.
package struct KDRunUntrainedRecord: BenchRecord, Equatable {
    package static let name = "kd_run"
    package var encoding = "untrained"
    package var steps = 0
    package var heldoutKL: Double
    package var positions: Int

    enum CodingKeys: String, CodingKey {
        case encoding, steps, positions
        case heldoutKL = "heldout_kl"
    }
}

package struct WireTargetRecord: BenchRecord, Equatable {
    package static let name = "wire_target"
    package var targetBytesPerToken: Double, targetRelative: Double
    package var met: Bool
    /// The encoding that meets the target with the fewest bytes, or the closest one under the byte limit.
    package var encoding: String?
    package var bytesPerToken: Double?
    package var relativeToFull: Double?

    enum CodingKeys: String, CodingKey {
        case met, encoding
        case targetBytesPerToken = "target_bytes_per_token", targetRelative = "target_relative"
        case bytesPerToken = "bytes_per_token", relativeToFull = "relative_to_full"
    }
}

// MARK: - Names

package func typeName(_ t: FrameDType) -> String {
    switch t {
    case .float32: return "fp32"
    case .float16: return "fp16"
    case .bfloat16: return "bf16"
    default: return t.description
    }
}

package func codecName(_ c: FrameCodec) -> String {
    switch c {
    case .raw: return "raw"
    case .zstd: return "zstd"
    case .shuffledZstd: return "shuffled-zstd"
    }
}

extension SignalEncoding {
    package var isSampled: Bool { if case .sampled = self { return true } else { return false } }
    package var isTopK: Bool { if case .topK = self { return true } else { return false } }
}
