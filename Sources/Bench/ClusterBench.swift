import Foundation
import Formats
import Jobs
import Tensors
import Train

/// `rqat bench cluster`: the same `rqat train --loss kd` job under mpirun once per teacher-rank
/// count (and `repeats` times each, interleaved), read back from what the ranks leave in the
/// run directory (summary-rank<N>.json, metrics.jsonl), and compared (docs/SCALING.md).
package enum ClusterBench {
    package struct Options {
        /// A checkpoint, or "small": a random small model with the `vocabFrom` tokenizer.
        package var teacher = "assets/SmolLM2-135M-Instruct.Q4_1.gguf"
        package var student = "small"
        /// Tokenizer of "small" models (nil: the teacher's, or SmolLM2's when the teacher is small too).
        package var vocabFrom: String?
        package var smallHidden = 128
        package var smallLayers = 2
        /// The student's QAT scheme, or "none".
        package var qat = "w3g128"
        /// {prompt, completion} lines (nil: runs/demo/train-traces.jsonl if present, else
        /// generated arithmetic records).
        package var data: String?
        package var teacherCounts = [1, 2]
        package var students = 1
        package var repeats = 1
        package var signal = "top-64"
        package var steps = 8
        package var seqLen = 256
        package var batchTokens = 512
        package var gradAccum = 1
        package var lookahead = 2
        package var bucketMB = 16.0
        package var threads = 1
        package var extraMpirunArgs: [String] = []
        package var extraTrainArgs: [String] = []
        /// A program mpirun starts instead of rqat, with rqat's path and arguments after it.
        package var rankWrapper: String?
        /// nil: mpirun on PATH.
        package var mpirun: String?
        /// Generated models, data and run directories (nil: a temporary one, removed at the end).
        package var workDir: String?
        /// Also pass every rank's output to `log`.
        package var verbose = false
        package init() {}
    }

    /// What every run shares, known before the first one starts.
    package struct Setup: Codable, Equatable {
        package var teacherPath: String, studentPath: String
        /// The paths, or the shape of a generated model (its temporary directory is gone after the runs).
        package var teacherLabel: String, studentLabel: String
        package var teacherParameters: Int, studentParameters: Int
        package var dataPath: String
        /// Completion tokens of student 0's shard over the run: the positions the teacher answers.
        package var trainedTokens: Int
        package var cores: Int
    }

    /// Prepares models and data, tells `prepared`, then runs every teacher count under mpirun
    /// starting `rqat` (the path of the running binary, so the ranks run exactly this build).
    /// `log` gets each mpirun command line (and with `verbose` the ranks' output).
    package static func run(_ o: Options, rqat: String, log: (String) -> Void, prepared: (Setup) -> Void) throws -> ClusterReport {
        let fm = FileManager.default
        let work: URL
        if let workDir = o.workDir {
            work = URL(fileURLWithPath: workDir)
            try fm.createDirectory(at: work, withIntermediateDirectories: true)
        } else {
            work = fm.temporaryDirectory.appendingPathComponent("rqat-bench-cluster-\(UUID().uuidString)")
            try fm.createDirectory(at: work, withIntermediateDirectories: true)
        }
        defer { if o.workDir == nil { try? fm.removeItem(at: work) } }

        // Generated models share the tokenizer of the teacher (KD needs one vocabulary).
        let tokenizerSource = o.vocabFrom ?? (o.teacher == "small" ? "assets/SmolLM2-135M-Instruct.Q4_1.gguf" : o.teacher)
        let (tokenizer, template) = try Checkpoint.open(tokenizerSource).loadTokenizer()
        let small = SmallModel(hidden: o.smallHidden, layers: o.smallLayers, context: o.seqLen)
        let teacherPath = o.teacher == "small"
            ? try small.write(to: work.appendingPathComponent("small-teacher"), tokenizer: tokenizer, template: template, seed: 11).path
            : o.teacher
        let studentPath = o.student == "small"
            ? try small.write(to: work.appendingPathComponent("small-student"), tokenizer: tokenizer, template: template, seed: 7).path
            : o.student
        let dataPath: String
        if let data = o.data {
            dataPath = data
        } else if fm.fileExists(atPath: "runs/demo/train-traces.jsonl") {
            dataPath = "runs/demo/train-traces.jsonl"
        } else {
            dataPath = try writeArithmeticData(work.appendingPathComponent("arithmetic.jsonl")).path
        }
        let setup = Setup(
            teacherPath: teacherPath, studentPath: studentPath,
            teacherLabel: o.teacher == "small" ? small.label : teacherPath, studentLabel: o.student == "small" ? small.label : studentPath,
            teacherParameters: try Checkpoint.open(teacherPath).config.parameterCount,
            studentParameters: try Checkpoint.open(studentPath).config.parameterCount,
            dataPath: dataPath, trainedTokens: try trainedTokensOfStudent0(o, data: dataPath, tokenizer: tokenizer, template: template),
            cores: ProcessInfo.processInfo.activeProcessorCount)
        let launcher = try mpirunPath(o.mpirun)
        prepared(setup)

        var runs: [ClusterRun] = []
        for (rep, t) in (0..<o.repeats).flatMap({ rep in o.teacherCounts.map { (rep, $0) } }) {
            let out = work.appendingPathComponent("run-t\(t)-s\(o.students)")
            try? fm.removeItem(at: out)
            var train = ["train", "--teacher", teacherPath, "--student", studentPath, "--data", dataPath, "--out", out.path,
                         "--loss", "kd", "--signal", o.signal, "--teachers", "\(t)", "--lookahead", "\(o.lookahead)",
                         "--steps", "\(o.steps)", "--seq-len", "\(o.seqLen)", "--batch-tokens", "\(o.batchTokens)",
                         "--grad-accum", "\(o.gradAccum)", "--packing", "--drop-long", "--warmup", "0", "--lr", "1e-4",
                         "--bucket-mb", "\(o.bucketMB)", "--keep-last", "1", "--threads", "\(o.threads)"]
            if o.qat != "none" { train += ["--qat", o.qat] }
            train += o.extraTrainArgs
            var args = ["-np", "\(t + o.students)", "--oversubscribe", "--bind-to", "none",
                        "-x", "OPENBLAS_NUM_THREADS=\(o.threads)", "-x", "RQAT_NUM_THREADS=\(o.threads)"]
            // Waiting ranks yield the core instead of spinning on it (ranks outnumber cores here).
            args += ["--mca", "mpi_yield_when_idle", "1"]
            if getuid() == 0 { args.insert("--allow-run-as-root", at: 0) }
            args += o.extraMpirunArgs
            args += (o.rankWrapper.map { [$0] } ?? []) + [rqat] + train
            log("bench cluster: \(t) teacher(s) + \(o.students) student(s): \(launcher) \(args.joined(separator: " "))")
            let start = Date()
            let (status, text) = try runCapturing(launcher, args)
            let wall = Date().timeIntervalSince(start)
            if o.verbose { log(text) }
            guard status == 0 else {
                throw JobError("the run with \(t) teacher rank(s) failed (exit \(status)):\n\(text.split(separator: "\n").suffix(30).joined(separator: "\n"))")
            }
            var run = try readRun(out, teachers: t)
            run.repeatIndex = rep
            run.wallSeconds = wall
            runs.append(run)
            if o.workDir == nil { try? fm.removeItem(at: out) }
        }
        return ClusterReport(setup: setup, options: o, runs: runs)
    }

    /// A finished run from its directory: the summaries of teacher ranks 0..<teachers and of
    /// student 0 (world rank `teachers`), and student 0's per-step lines of metrics.jsonl.
    package static func readRun(_ runDir: URL, teachers: Int) throws -> ClusterRun {
        var r = ClusterRun(teacherCount: teachers)
        for rank in 0..<teachers {
            guard let t = try TrainSummary.read(runDir: runDir, rank: rank).teacher else {
                throw JobError("\(TrainSummary.url(runDir: runDir, rank: rank).path) has no teacher figures: the run had fewer than \(teachers) teacher ranks (check --extra-train-args)")
            }
            r.teachers.append(.init(rank: rank, tokens: t.tokens, busySeconds: t.busySeconds, wallSeconds: t.wallSeconds))
        }
        guard let s = try TrainSummary.read(runDir: runDir, rank: teachers).student else {
            throw JobError("\(TrainSummary.url(runDir: runDir, rank: teachers).path) has no student figures: rank \(teachers) should be student 0 (check --extra-train-args)")
        }
        r.waitSeconds = s.teacherWaitSeconds
        r.studentSeconds = s.trainSeconds
        r.signalMB = Double(s.signalBytes) / 1e6
        r.allreduceMB = s.allreduceMB
        r.allreduceWait = s.allreduceWaitSeconds

        let metrics = runDir.appendingPathComponent("metrics.jsonl")
        guard let lines = try? String(contentsOf: metrics, encoding: .utf8) else {
            throw JobError("\(metrics.path) missing after the run: student 0 did not train (its stderr says why)")
        }
        for line in lines.split(separator: "\n") {
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let tokens = object["tokens"] as? Int, let rate = object["tokens_per_s"] as? Double, rate > 0,
                  let elapsed = object["elapsed_s"] as? Double else { continue }
            r.stepSeconds.append(Double(tokens) / rate)
            r.stepTokens.append(tokens)
            r.loopSeconds = elapsed
        }
        guard !r.stepSeconds.isEmpty else { throw JobError("\(metrics.path) has no step lines: the run trained no step") }
        return r
    }

    /// Output of mpirun (both streams, interleaved as they came) and its exit status.
    static func runCapturing(_ program: String, _ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func mpirunPath(_ given: String?) throws -> String {
        if let given { return given }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/local/bin"
        for dir in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin"] {
            let candidate = "\(dir)/mpirun"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw JobError("mpirun not found on PATH (scripts/setup.sh installs openmpi-bin), or pass --mpirun")
    }

    /// The completion positions student 0 trains on over the whole run (the batches `rqat
    /// train` draws: same data, seed 0, packing, the same shard).
    static func trainedTokensOfStudent0(_ o: Options, data: String, tokenizer: BPETokenizer, template: ChatTemplate) throws -> Int {
        let dataset = try SFTDataset.load(URL(fileURLWithPath: data), tokenizer: tokenizer, format: .chat, template: template,
                                          seqLen: o.seqLen, dropLong: true)
        let batcher = try SFTBatcher(dataset: dataset, seqLen: o.seqLen, batchTokens: o.batchTokens, packing: true,
                                     padId: tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0, seed: 0)
        var total = 0
        for _ in 0..<(o.steps * o.gradAccum) { total += batcher.nextBatch().shard(0, of: o.students).predictedTokens }
        return total
    }

    /// GSM8K-like arithmetic records, when no teacher traces are at hand.
    static func writeArithmeticData(_ url: URL) throws -> URL {
        var lines: [String] = []
        for i in 0..<64 {
            let a = 12 + 7 * i, b = 3 + i % 9, c = 5 + i % 4
            let record = ["prompt": "A shop sells \(a) apples on Monday and \(b) times as many on Tuesday; \(c) apples are returned. How many apples were sold in total?",
                          "completion": "On Tuesday the shop sold \(b) x \(a) = \(a * b) apples. Together with Monday that is \(a) + \(a * b) = \(a + a * b). After \(c) returns, \(a + a * b) - \(c) = \(a + a * b - c). The answer is \(a + a * b - c)."]
            lines.append(String(decoding: try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]), as: UTF8.self))
        }
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }
}

/// A random Llama of `hidden` x `layers` (MLP 2x, head_dim 32, half as many KV heads) that
/// borrows a real tokenizer: a student small enough to make the teacher the bottleneck.
package struct SmallModel: Sendable {
    package var hidden: Int
    package var layers: Int
    /// The shortest context the model must have (it gets at least 2048).
    package var context: Int

    package var label: String { "small (random, hidden \(hidden), \(layers) layers)" }

    /// Writes a Hugging Face directory (config.json, model.safetensors, tokenizer files).
    package func write(to dir: URL, tokenizer: BPETokenizer, template: ChatTemplate, seed: UInt64) throws -> URL {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let headDim = 32, heads = max(1, hidden / headDim)
        let config = ModelConfig(modelType: .llama, hiddenSize: hidden, intermediateSize: 2 * hidden,
                                 numHiddenLayers: layers, numAttentionHeads: heads, numKeyValueHeads: max(1, heads / 2),
                                 headDim: headDim, vocabSize: tokenizer.vocabSize, rmsNormEps: 1e-5, ropeTheta: 100_000,
                                 maxPositionEmbeddings: max(2048, context), tieWordEmbeddings: true)
        try JSONEncoder().encode(config).write(to: dir.appendingPathComponent("config.json"))
        var rng = SeededRNG(seed: seed)
        let tensors = Checkpoint.expectedShapes(config).map { entry -> (name: String, tensor: Tensor, dtype: SafeTensorsDType) in
            let t = Tensor(shape: entry.shape)
            if entry.shape.count == 1 { t.fill(1) } else { rng.fillNormal(t, std: 0.05) }
            return (entry.name, t, .F32)
        }
        try SafeTensorsWriter.write(tensors, to: dir.appendingPathComponent("model.safetensors"))
        try tokenizer.writeHuggingFaceFiles(to: dir, chatTemplate: template, modelMaxLength: config.maxPositionEmbeddings)
        return dir
    }
}
