import Formats
import ArgumentParser
import Cluster
import Foundation
import Jobs
import Quant
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
    @Flag(help: "From a FlatQuant init: train its transforms with the weights (default: kept fixed).") var trainTransforms = false

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

    /// Parsed by `validate()` already, so parsing again cannot fail.
    var spec: TrainingSpec {
        var spec = TrainingSpec(data: data, format: SFTFormat(rawValue: format)!, dropLong: dropLong,
                                qat: qat.map { try! QuantScheme.parse($0) }, lsq: lsq, options: options, runDir: URL(fileURLWithPath: out))
        spec.trainTransforms = trainTransforms
        return spec
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
            try SFTJob(model: model, spec: flags.spec).run { printErr("sft: " + $0) }
        }
    }
}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Knowledge distillation from a full-precision teacher into a (fake-quantized) student; single process or under mpirun.",
        discussion: """
            The loss (--loss) is a divergence to the teacher at --kd-temperature on completion \
            tokens: kd-fkl (the default; alias kd) the forward KL(teacher || student), kd-rkl the \
            reverse KL(student || teacher), kd-jsd the generalized JSD of GKD with --jsd-beta; or ce, \
            cross-entropy on the data without the teacher's signal. The teacher's signal is sent \
            as --signal (full logits, top-k log-probabilities plus tail mass, or sampled tokens; \
            kd-rkl and kd-jsd need full or top-k, and on top-k + tail are bucketed approximations, \
            see docs/WIRE.md). Under mpirun, world ranks 0..<--teachers run the \
            teacher and answer the students' requests --lookahead micro-batches ahead; the other \
            ranks are data-parallel students whose gradients are summed with MPI allreduce. \
            Without mpirun (or with --teachers 0) each process runs its teacher in-process. \
            Checkpoints, metrics and resume as in `rqat sft` (student rank 0 writes them). At its end \
            every rank writes OUT/summary-rank<N>.json (N = world rank): a teacher's tokens and busy and \
            wall seconds, a student's training seconds, wait for the teacher, bytes of teacher signal \
            and gradient allreduce.
            Example: mpirun -np 3 rqat train --teachers 1 --teacher T.gguf --student S --data traces.jsonl --out runs/kd
            """)

    @Option(help: "The full-precision teacher: a .gguf file or a Hugging Face model directory.")
    var teacher: String
    @Option(help: "The student to train: a .gguf file, a Hugging Face directory or a GPTQ-packed directory (rqat ptq).")
    var student: String
    @Option(help: "kd-fkl (forward KL to the teacher; alias kd), kd-rkl (reverse KL), kd-jsd (generalized JSD, see --jsd-beta) or ce (cross-entropy on the data; the teacher's signal is not used). kd-rkl and kd-jsd need --signal full or top-K.")
    var loss = "kd-fkl"
    @Option(help: "beta of --loss kd-jsd, in (0, 1): M = beta P_teacher + (1 - beta) P_student, loss = beta KL(P_teacher || M) + (1 - beta) KL(P_student || M).")
    var jsdBeta: Float = 0.5
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
        guard let parsedLoss = DistillJob.Loss(name: loss) else {
            throw ValidationError("--loss \(loss) is unknown: valid values are \(DistillJob.Loss.validNames)")
        }
        guard let encoding = SignalEncoding(signal) else { throw ValidationError("--signal: valid forms are \(SignalEncoding.validForms)") }
        if let problem = parsedLoss.problem(with: encoding, jsdBeta: jsdBeta) { throw ValidationError(problem) }
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
        let job = DistillJob(teacher: teacher, student: student, loss: DistillJob.Loss(name: loss)!, signal: signalOptions,
                             teachers: teachers, lookahead: lookahead, bucketMB: bucketMB, syncCheckEvery: syncCheckEvery,
                             spec: flags.spec, jsdBeta: jsdBeta)
        let status = job.runInWorld(printLine: printErr)
        if status != 0 { throw ExitCode(status) }
    }
}
