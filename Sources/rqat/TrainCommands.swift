import ArgumentParser
import Cluster
import Foundation
import Formats
import Quant
import Model
import Tensors
import Train

/// The options every training command shares: data, schedule, optimizer, checkpoints, QAT.
struct TrainingFlags: ParsableArguments {
    @Option(help: "JSONL training data: one {\"prompt\": ..., \"completion\": ...} object per line.")
    var data: String
    @Option(help: "Run directory for checkpoints and metrics.jsonl.")
    var out: String
    @Option(help: "Optimizer steps.") var steps = 100
    @Option(help: "Tokens per micro-batch (rows x seq-len), summed over data-parallel ranks.") var batchTokens = 2048
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
    @Option(help: "Seed for data order (and the teacher's sampled draws).") var seed: UInt64 = 0
    @Option(help: "Save a checkpoint every N steps (0 = at the end only).") var saveEvery = 0
    @Option(help: "Checkpoints to keep.") var keepLast = 2
    @Option(parsing: .singleValue, help: "Freeze parameters whose name matches (glob with *, else substring); repeatable.")
    var freeze: [String] = []
    @Option(help: "QAT: fake-quantize the decoder-block linear layers with this scheme (e.g. w3g128).") var qat: String?
    @Flag(help: "QAT: learnable step size and zero point per group (LSQ) instead of min/max grids (STE).") var lsq = false

    func validate() throws {
        if let qat {
            guard let s = try? QuantScheme.parse(qat), s.weightBits != nil else {
                throw ValidationError("--qat: \((try? QuantScheme.parse(qat)) == nil ? "invalid scheme. Valid: \(QuantScheme.validForms)" : "the scheme needs weight bits")")
            }
            do { try s.requireImplemented(for: "QAT") } catch { throw ValidationError("--qat: \(error)") }
        }
        guard steps > 0 else { throw ValidationError("--steps must be positive") }
        guard gradAccum > 0 else { throw ValidationError("--grad-accum must be positive") }
        guard lr > 0 && lr.isFinite else { throw ValidationError("--lr must be positive") }
        guard SFTFormat(rawValue: format) != nil else { throw ValidationError("--format must be chat or plain") }
    }

    var options: TrainOptions {
        var o = TrainOptions()
        o.steps = steps
        o.batchTokens = batchTokens
        o.seqLen = seqLen
        o.gradAccumulation = gradAccum
        o.packing = packing
        o.lr = lr
        o.warmupSteps = warmup
        o.cosine = !constantLR
        o.minLRRatio = minLRRatio
        o.weightDecay = weightDecay
        o.maxGradNorm = maxGradNorm > 0 ? maxGradNorm : nil
        o.seed = seed
        o.saveEvery = saveEvery
        o.keepLast = keepLast
        o.freeze = freeze
        return o
    }

    var runDir: URL { URL(fileURLWithPath: out) }
}

/// A student made ready to train: its checkpoint, tokenizer, data, decoder and quantizer.
struct StudentSetup {
    let checkpoint: Checkpoint
    let tokenizer: BPETokenizer
    let template: ChatTemplate
    let dataset: SFTDataset
    let decoder: TrainableDecoder
    let quantizer: FakeQuantizer?

    init(model: String, flags: TrainingFlags, log: (String) -> Void) throws {
        checkpoint = try openCheckpoint(model)
        (tokenizer, template) = try checkpoint.loadTokenizer()
        dataset = try SFTDataset.load(URL(fileURLWithPath: flags.data), tokenizer: tokenizer,
                                      format: SFTFormat(rawValue: flags.format)!, template: template,
                                      seqLen: flags.seqLen, dropLong: flags.dropLong)
        if !dataset.droppedLines.isEmpty {
            log("dropped \(dataset.droppedLines.count) examples longer than \(flags.seqLen) tokens")
        }
        let decoder = try TrainableDecoder(config: checkpoint.config, source: checkpoint.weights)
        self.decoder = decoder
        quantizer = try flags.qat.map { text in
            try FakeQuantizer(decoder: decoder, scheme: try QuantScheme.parse(text), mode: flags.lsq ? .lsq : .ste)
        }
    }

    var padId: Int { tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0 }

    /// Tokenizer files go into every checkpoint so `rqat generate --model <checkpoint>` works.
    func tokenizerFiles(in runDir: URL, write: Bool) throws -> [URL] {
        let dir = runDir.appendingPathComponent("tokenizer")
        if write {
            try tokenizer.writeHuggingFaceFiles(to: dir, chatTemplate: template,
                                                modelMaxLength: checkpoint.config.maxPositionEmbeddings)
        }
        return ["tokenizer.json", "tokenizer_config.json"].map { dir.appendingPathComponent($0) }
    }

    /// Runs the trainer with one progress line per step (when `log` prints) and, after QAT,
    /// writes the result in the packed low-bit format to OUT/quantized.
    func train(_ trainer: Trainer, flags: TrainingFlags, log: (String) -> Void) throws {
        let rows = flags.batchTokens / flags.seqLen
        log(String(format: "%d examples, %d steps of %d micro-batch(es) of %d x %d tokens (padding included); activations %.0f MB%@",
                   dataset.examples.count, flags.steps, flags.gradAccum, rows, flags.seqLen,
                   Double(decoder.activationBytes(batch: rows, length: flags.seqLen)) / 1e6,
                   trainer.step > 0 ? "; resuming at step \(trainer.step)" : ""))
        let first = trainer.step
        let start = Date()
        try trainer.run { r in
            let done = r.step - first, left = flags.steps - r.step
            let eta = Date().timeIntervalSince(start) / Double(max(done, 1)) * Double(left)
            log(String(format: "step %d/%d  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  ETA %@%@",
                       r.step, flags.steps, r.loss, r.lr, r.gradNorm, r.tokensPerSecond, formatDuration(eta),
                       r.skipped ? "  (skipped: non-finite)" : ""))
        }
        guard trainer.group?.writesCheckpoints ?? true else { return }
        log("done; final checkpoint \(TrainCheckpoint.latestCheckpoint(in: flags.runDir)?.path ?? "-")")
        if let quantizer {
            // The QAT result in the packed low-bit format, runnable by every rqat command.
            let exportDir = flags.runDir.appendingPathComponent("quantized")
            let quantized = quantizer.exportQuantized()
            var fullPrecision: [String: Tensor] = [:]
            for p in decoder.parameters where quantized[p.name] == nil { fullPrecision[p.name] = p.value }
            try QuantizedCheckpoint.save(directory: exportDir, config: decoder.config, fullPrecision: fullPrecision,
                                         quantized: quantized, scheme: quantizer.scheme, method: "qat-\(quantizer.mode.rawValue)",
                                         extraFiles: trainer.extraCheckpointFiles)
            log("quantized model written to \(exportDir.path)")
        }
    }
}

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
    @OptionGroup var flags: TrainingFlags
    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.apply()
        try reportingErrors {
            let log: (String) -> Void = { printErr("sft: " + $0) }
            let student = try StudentSetup(model: model, flags: flags, log: log)
            let trainer = try Trainer(model: student.decoder, dataset: student.dataset, padId: student.padId,
                                      options: flags.options, runDir: flags.runDir, quantizer: student.quantizer)
            trainer.extraCheckpointFiles = try student.tokenizerFiles(in: flags.runDir, write: true)
            try student.train(trainer, flags: flags, log: log)
        }
    }
}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Knowledge distillation from a full-precision teacher into a (fake-quantized) student; single process or under mpirun.",
        discussion: """
            The loss is the forward KL(teacher || student) at --kd-temperature on completion \
            tokens, with the teacher's signal sent as --signal (full logits, top-k log-probabilities \
            plus tail mass, or sampled tokens). Under mpirun, world ranks 0..<--teachers run the \
            teacher and answer the students' requests --lookahead micro-batches ahead; the other \
            ranks are data-parallel students whose gradients are summed with MPI allreduce. \
            Without mpirun (or with --teachers 0) each process runs its teacher in-process. \
            Checkpoints, metrics and resume as in `rqat sft` (student rank 0 writes them).
            Example: mpirun -np 3 rqat train --teachers 1 --teacher T.gguf --student S --data traces.jsonl --out runs/kd
            """)

    @Option(help: "The full-precision teacher: a .gguf file or a Hugging Face model directory.")
    var teacher: String
    @Option(help: "The student to train: a .gguf file, a Hugging Face directory or a GPTQ-packed directory (rqat ptq).")
    var student: String
    @Option(help: "kd (distil from the teacher) or ce (cross-entropy on the data; the teacher is not used).")
    var loss = "kd"
    @Option(help: "Teacher signal on the wire: \(SignalEncoding.validForms).")
    var signal = "top-64"
    @Option(help: "KD temperature.") var kdTemperature: Float = 1
    @Option(help: "Ranks that serve the teacher under mpirun (world ranks 0..<N); 0 = a teacher inside every student.")
    var teachers = 0
    @Option(help: "Micro-batches a student sends to the teachers ahead of training on them.") var lookahead = 2
    @Option(help: "Gradient allreduce bucket size in MB.") var bucketMB: Double = 16
    @Option(help: "zstd level of tensor frames (0 = no compression).") var zstdLevel = 3
    @Option(help: "How top-k log-probabilities travel: fp16 or bf16.") var logprobType = "fp16"
    @Option(help: "Check every N steps that all students hold identical weights.") var syncCheckEvery = 10
    @OptionGroup var flags: TrainingFlags
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        guard loss == "kd" || loss == "ce" else { throw ValidationError("--loss must be kd or ce") }
        guard SignalEncoding(signal) != nil else { throw ValidationError("--signal: valid forms are \(SignalEncoding.validForms)") }
        guard kdTemperature > 0 else { throw ValidationError("--kd-temperature must be positive") }
        guard lookahead >= 0 else { throw ValidationError("--lookahead must be 0 or more") }
        guard logprobType == "fp16" || logprobType == "bf16" else { throw ValidationError("--logprob-type must be fp16 or bf16") }
        guard (0...22).contains(zstdLevel) else { throw ValidationError("--zstd-level must be in 0...22") }
    }

    var signalOptions: SignalOptions {
        var o = SignalOptions()
        o.encoding = SignalEncoding(signal)!
        o.temperature = kdTemperature
        o.logProbType = logprobType == "bf16" ? .bfloat16 : .float16
        o.codec = zstdLevel == 0 ? .raw : .shuffledZstd(level: zstdLevel)
        o.seed = flags.seed
        return o
    }

    func run() throws {
        runtime.apply()
        let world: Communicator
        do { world = try MPI.initialize() } catch { printErr("error: \(error)"); throw ExitCode.failure }
        defer { MPI.finalize() }
        let roles: Roles
        do { roles = try Roles(world: world, teachers: teachers) } catch {
            if world.rank == 0 { printErr("error: \(error)") }
            throw ExitCode(2)
        }
        do {
            try runRole(roles)
        } catch {
            // Any failure on one rank must stop the others, which would otherwise wait for it.
            let message = "error: rank \(world.rank) (\(roles.describe(rank: world.rank))): \(error)"
            if world.size > 1 { MPI.abort(message, code: 1) }
            printErr(message)
            throw ExitCode.failure
        }
    }

    private func runRole(_ roles: Roles) throws {
        let world = roles.world
        let isLead = world.rank == roles.teachers   // student 0 reports and writes
        let log: (String) -> Void = { if isLead { printErr("train: " + $0) } }
        let layout = try roles.layoutLine(threads: Threads.count)
        log(layout)

        // Teacher and student must share one vocabulary: compared on every rank before any work.
        var teacherModel: LanguageModel?
        if roles.role == .teacher || !roles.remoteTeachers { teacherModel = try LanguageModel(path: teacher) }
        let studentSetup = roles.role == .student ? try StudentSetup(model: student, flags: flags, log: log) : nil
        try checkVocabularies(world: world, teacher: teacherModel?.tokenizer, student: studentSetup?.tokenizer)

        if roles.role == .teacher {
            let service = TeacherService(decoder: teacherModel!.decoder, options: signalOptions, stopTokens: teacherModel!.stopTokens)
            let start = Date()
            try service.serve(world: world, students: roles.students)
            let seconds = Date().timeIntervalSince(start)
            printErr(String(format: "train: teacher rank %d served %d tokens in %.3f s busy of %.3f s (%.0f tok/s while busy)",
                            world.rank, service.tokensProcessed, service.busySeconds, seconds,
                            Double(service.tokensProcessed) / max(service.busySeconds, 1e-9)))
            return
        }

        let s = studentSetup!
        let group = roles.students > 1 ? StudentGroup(comm: roles.group, bucketBytes: Int(bucketMB * 1e6)) : nil
        let link: TeacherLink = roles.remoteTeachers
            ? RemoteTeacherLink(world: world, teacherRanks: roles.teacherRanks, studentIndex: roles.group.rank,
                                studentCount: roles.students, vocab: s.decoder.config.vocabSize, options: signalOptions)
            : LocalTeacherLink(service: TeacherService(decoder: teacherModel!.decoder, options: signalOptions))
        let objective: TrainingObjective = loss == "kd"
            ? KDObjective(link: link, lossOptions: KDLoss.Options(temperature: kdTemperature), lookahead: lookahead)
            : CrossEntropyObjective()
        let trainer = try Trainer(model: s.decoder, dataset: s.dataset, padId: s.padId, options: flags.options,
                                  runDir: flags.runDir, quantizer: s.quantizer, objective: objective, group: group)
        trainer.syncCheckEvery = syncCheckEvery
        trainer.extraCheckpointFiles = try s.tokenizerFiles(in: flags.runDir, write: isLead)
        let start = Date()
        try s.train(trainer, flags: flags, log: log)
        let seconds = Date().timeIntervalSince(start)
        if loss == "kd" {
            log(String(format: "student waited %.3f s for the teacher of %.3f s (%.1f%%); %d bytes of teacher signal received",
                       link.waitSeconds, seconds, 100 * link.waitSeconds / max(seconds, 1e-9), link.bytesReceived))
        }
        try link.close()   // remote teachers stop once every student has closed
        if let group { log(String(format: "gradient allreduce: %.3f MB per rank, %.3f s waiting after backward", Double(group.bytesReduced) / 1e6, group.reduceWaitSeconds)) }
    }

    private func checkVocabularies(world: Communicator, teacher teacherTokenizer: BPETokenizer?, student studentTokenizer: BPETokenizer?) throws {
        func entry(_ t: BPETokenizer?) -> String { t.map { "\($0.vocabSize):\($0.vocabularyFingerprint)" } ?? "-" }
        let mine = entry(teacherTokenizer) + " " + entry(studentTokenizer)
        let all = try world.allGather(Array(mine.utf8)).map { String(decoding: $0, as: UTF8.self).split(separator: " ").map(String.init) }
        let teachers = Set(all.map { $0[0] }.filter { $0 != "-" }), students = Set(all.map { $0[1] }.filter { $0 != "-" })
        if teachers.union(students).count > 1 {
            throw CLIError("the teacher \(teacher) and the student \(student) have different vocabularies (size:fingerprint teacher \(teachers.sorted()), student \(students.sorted())); KD needs the same tokenizer: pick a student of the teacher's family")
        }
    }
}

func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds.rounded())
    return s >= 3600 ? String(format: "%dh%02dm", s / 3600, s / 60 % 60) : String(format: "%dm%02ds", s / 60, s % 60)
}
