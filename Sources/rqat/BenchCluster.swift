import ArgumentParser
import Foundation
import Jobs
import Formats
import Tensors
import Train

/// The same KD work with 1 and then 2 (or any list of) teacher ranks: starts `mpirun` on this
/// very `rqat train`, parses what the ranks report, and puts the runs side by side.
struct BenchCluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Teacher tokens/s per rank, student wait and bytes on the wire of `rqat train --loss kd` under mpirun, with 1 and 2 teacher ranks.",
        discussion: """
            Each run is `mpirun -np T+S <this rqat> train --teachers T ...` on the same data, steps and \
            seed; only T changes. Reported per run: every teacher rank's tokens/s while busy and over \
            its wall time; the aggregate teacher tokens/s over the students' training loop; the \
            students' wait for the teacher (seconds and share of the loop); the step time; \
            bytes of teacher signal per step and per trained (completion) token on one student's \
            link; the gradient allreduce (S > 1). The default makes the teacher the bottleneck: \
            SmolLM2-135M teaches a small student (--student small: a random 2-layer, hidden-128 \
            Llama with the teacher's tokenizer, fake-quantized at --qat), so one teacher rank cannot \
            keep up and a second one should nearly double the rate — when the machine has a core for \
            every rank. With fewer cores than ranks the teachers share cores and the speedup is \
            bounded by the cores; the per-rank busy rate then falls, and the output says so. \
            Use --student PATH (e.g. the teacher's GGUF with --qat w3g128) for a realistic student. \
            Cost model and measurements on throttled links: docs/SCALING.md.
            """)

    @Option(help: "Teacher: a .gguf file, a Hugging Face directory, or `small` (a random small model with the --vocab-from tokenizer).")
    var teacher = "assets/SmolLM2-135M-Instruct.Q4_1.gguf"
    @Option(help: "Student: a .gguf file, a Hugging Face or GPTQ-packed directory, or `small` (random; see --small-hidden, --small-layers).")
    var student = "small"
    @Option(help: "Tokenizer of `small` models (default: the teacher, or SmolLM2 when the teacher is `small` too).")
    var vocabFrom: String?
    @Option(help: "Hidden size of `small` models (MLP 2x, head_dim 32).") var smallHidden = 128
    @Option(help: "Layers of `small` models.") var smallLayers = 2
    @Option(help: "QAT scheme for the student, or `none`.") var qat = "w3g128"
    @Option(help: "Training data, {prompt, completion} lines (default: runs/demo/train-traces.jsonl if present, else generated arithmetic records).")
    var data: String?
    @Option(help: "Comma-separated teacher rank counts, one run each.") var teacherCounts = "1,2"
    @Option(help: "Student (data-parallel) ranks in every run.") var students = 1
    @Option(help: "Runs of every teacher count, interleaved (1, 2, 1, 2, ...); the table and the scaling line use the fastest run of each.") var repeats = 1
    @Option(help: "Teacher signal (see rqat train --signal).") var signal = "top-64"
    @Option(help: "Optimizer steps per run.") var steps = 8
    @Option(help: "Context length of a row.") var seqLen = 256
    @Option(help: "Tokens per micro-batch over all students (rows x seq-len).") var batchTokens = 512
    @Option(help: "Micro-batches per optimizer step.") var gradAccum = 1
    @Option(help: "Micro-batches a student asks for ahead.") var lookahead = 2
    @Option(help: "Gradient allreduce bucket size in MB.") var bucketMB: Double = 16
    @Option(help: "Threads of every rank (OpenBLAS and ours).") var threads = 1
    @Option(parsing: .unconditional, help: "Extra arguments for mpirun, split at spaces (e.g. \"--hostfile H --mca btl self,tcp\").")
    var extraMpirunArgs = ""
    @Option(parsing: .unconditional, help: "Extra arguments for rqat train, split at spaces.") var extraTrainArgs = ""
    @Option(help: "A program mpirun starts instead of rqat, with rqat's path and arguments after it (e.g. numactl or a profiler). Not for network namespaces: a rank outside mpirun's namespace cannot reach its PMIx server (scripts/bench-cluster-netns.sh shows what works).")
    var rankWrapper: String?
    @Option(help: "The mpirun to use (default: mpirun on PATH).") var mpirun: String?
    @Option(help: "Directory for generated models, data and run directories (default: a temporary one, removed at the end).")
    var workDir: String?
    @Flag(help: "Copy every rank's output to stderr.") var verbose = false
    @OptionGroup var output: BenchOutput

    func validate() throws {
        guard !parsedTeacherCounts.isEmpty, parsedTeacherCounts.allSatisfy({ $0 > 0 }) else {
            throw ValidationError("--teacher-counts: a comma-separated list of positive numbers, e.g. 1,2")
        }
        guard students > 0 else { throw ValidationError("--students must be positive") }
        guard steps > 0, seqLen >= 2, batchTokens >= seqLen * students else {
            throw ValidationError("--steps must be positive and --batch-tokens at least --seq-len x --students")
        }
        guard threads > 0 else { throw ValidationError("--threads must be positive") }
        guard repeats > 0 else { throw ValidationError("--repeats must be positive") }
    }

    var parsedTeacherCounts: [Int] { teacherCounts.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func run() throws {
        try reportingErrors { try measure() }
    }

    // MARK: - One run

    /// What one `rqat train` under mpirun reported.
    struct RunResult {
        struct Teacher { let rank: Int; let tokens: Int; let busy: Double; let wall: Double }
        var teachers: [Teacher] = []
        var waitSeconds = 0.0, studentSeconds = 0.0, signalMB = 0.0
        var allreduceMB: Double?, allreduceWait: Double?
        var stepSeconds: [Double] = []
        var stepTokens: [Int] = []
        var loopSeconds = 0.0
        var wallSeconds = 0.0
    }

    func measure() throws {
        let fm = FileManager.default
        let work: URL
        if let workDir {
            work = URL(fileURLWithPath: workDir)
            try fm.createDirectory(at: work, withIntermediateDirectories: true)
        } else {
            work = fm.temporaryDirectory.appendingPathComponent("rqat-bench-cluster-\(UUID().uuidString)")
            try fm.createDirectory(at: work, withIntermediateDirectories: true)
        }
        defer { if workDir == nil { try? fm.removeItem(at: work) } }

        // Models: generated ones share the tokenizer of the teacher (KD needs one vocabulary).
        let tokenizerSource = vocabFrom ?? (teacher == "small" ? "assets/SmolLM2-135M-Instruct.Q4_1.gguf" : teacher)
        let (tokenizer, template) = try openCheckpoint(tokenizerSource).loadTokenizer()
        let teacherPath = teacher == "small"
            ? try writeSmallModel(work.appendingPathComponent("small-teacher"), tokenizer: tokenizer, template: template, seed: 11).path
            : teacher
        let studentPath = student == "small"
            ? try writeSmallModel(work.appendingPathComponent("small-student"), tokenizer: tokenizer, template: template, seed: 7).path
            : student
        let teacherParameters = try openCheckpoint(teacherPath).config.parameterCount
        let studentParameters = try openCheckpoint(studentPath).config.parameterCount

        let dataPath: String
        if let data {
            dataPath = data
        } else if fm.fileExists(atPath: "runs/demo/train-traces.jsonl") {
            dataPath = "runs/demo/train-traces.jsonl"
        } else {
            dataPath = try writeArithmeticData(work.appendingPathComponent("arithmetic.jsonl")).path
        }
        // Completion tokens of student 0's shard over the run: the positions the teacher answers.
        let trainedTokens = try trainedTokensOfStudent0(data: dataPath, tokenizer: tokenizer, template: template)

        let cores = ProcessInfo.processInfo.activeProcessorCount
        let launcher = try mpirunPath()
        let me = try ownExecutable()
        let qatScheme = qat == "none" ? nil : qat
        if !output.json {
            print("teacher \(teacher == "small" ? "small" : teacherPath) (\(teacherParameters) parameters), student \(student == "small" ? "small" : studentPath) (\(studentParameters) parameters\(qatScheme.map { ", QAT \($0)" } ?? ""))")
            print("data \(dataPath); \(steps) steps of \(gradAccum) x \(batchTokens / seqLen) x \(seqLen) tokens, signal \(signal), lookahead \(lookahead), \(students) student rank(s), \(threads) thread(s) per rank, \(cores) cores")
        }

        var results: [(teachers: Int, repeat: Int, result: RunResult)] = []
        for (rep, t) in (0..<repeats).flatMap({ rep in parsedTeacherCounts.map { (rep, $0) } }) {
            let out = work.appendingPathComponent("run-t\(t)-s\(students)")
            try? fm.removeItem(at: out)
            var train = ["train", "--teacher", teacherPath, "--student", studentPath, "--data", dataPath, "--out", out.path,
                         "--loss", "kd", "--signal", signal, "--teachers", "\(t)", "--lookahead", "\(lookahead)",
                         "--steps", "\(steps)", "--seq-len", "\(seqLen)", "--batch-tokens", "\(batchTokens)",
                         "--grad-accum", "\(gradAccum)", "--packing", "--drop-long", "--warmup", "0", "--lr", "1e-4",
                         "--bucket-mb", "\(bucketMB)", "--keep-last", "1", "--threads", "\(threads)"]
            if let qatScheme { train += ["--qat", qatScheme] }
            train += split(extraTrainArgs)
            var args = ["-np", "\(t + students)", "--oversubscribe", "--bind-to", "none",
                        "-x", "OPENBLAS_NUM_THREADS=\(threads)", "-x", "RQAT_NUM_THREADS=\(threads)"]
            // Waiting ranks yield the core instead of spinning on it (ranks outnumber cores here).
            args += ["--mca", "mpi_yield_when_idle", "1"]
            if getuid() == 0 { args.insert("--allow-run-as-root", at: 0) }
            args += split(extraMpirunArgs)
            args += (rankWrapper.map { [$0] } ?? []) + [me] + train
            if verbose || !output.json { printErr("bench cluster: \(t) teacher(s) + \(students) student(s): \(launcher) \(args.joined(separator: " "))") }
            let start = Date()
            let (status, text) = try runCapturing(launcher, args)
            let wall = Date().timeIntervalSince(start)
            if verbose { printErr(text) }
            guard status == 0 else {
                throw CLIError("the run with \(t) teacher rank(s) failed (exit \(status)):\n\(text.split(separator: "\n").suffix(30).joined(separator: "\n"))")
            }
            var result = try parse(text, runDir: out, teachers: t)
            result.wallSeconds = wall
            results.append((t, rep, result))
            if workDir == nil { try? fm.removeItem(at: out) }
        }
        // Generated models are named by their shape (their temporary directory is gone after the run).
        let smallName = "small (random, hidden \(smallHidden), \(smallLayers) layers)"
        report(results, trainedTokens: trainedTokens, cores: cores, teacherPath: teacher == "small" ? smallName : teacherPath,
               studentPath: student == "small" ? smallName : studentPath,
               teacherParameters: teacherParameters, studentParameters: studentParameters)
    }

    /// Output of mpirun (both streams, interleaved as they came) and its exit status.
    func runCapturing(_ program: String, _ arguments: [String]) throws -> (Int32, String) {
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

    func parse(_ text: String, runDir: URL, teachers: Int) throws -> RunResult {
        var r = RunResult()
        let teacherLine = try Regex(#"teacher rank (\d+) served (\d+) tokens in ([0-9.]+) s busy of ([0-9.]+) s"#)
        let studentLine = try Regex(#"student waited ([0-9.]+) s for the teacher of ([0-9.]+) s \([0-9.]+%\); ([0-9]+) bytes of teacher signal received"#)
        let reduceLine = try Regex(#"gradient allreduce: ([0-9.]+) MB per rank, ([0-9.]+) s waiting after backward"#)
        func number(_ m: Regex<AnyRegexOutput>.Match, _ i: Int) -> Double { m.output[i].substring.flatMap { Double($0) } ?? .nan }
        for line in text.split(separator: "\n") {
            if let m = try teacherLine.firstMatch(in: line) {
                r.teachers.append(.init(rank: Int(number(m, 1)), tokens: Int(number(m, 2)), busy: number(m, 3), wall: number(m, 4)))
            } else if let m = try studentLine.firstMatch(in: line) {
                (r.waitSeconds, r.studentSeconds, r.signalMB) = (number(m, 1), number(m, 2), number(m, 3) / 1e6)
            } else if let m = try reduceLine.firstMatch(in: line) {
                (r.allreduceMB, r.allreduceWait) = (number(m, 1), number(m, 2))
            }
        }
        r.teachers.sort { $0.rank < $1.rank }
        guard r.teachers.count == teachers, r.studentSeconds > 0 else {
            throw CLIError("could not find the report lines of \(teachers) teacher(s) and student 0 in the output of the run:\n\(text.split(separator: "\n").suffix(30).joined(separator: "\n"))")
        }
        let metrics = runDir.appendingPathComponent("metrics.jsonl")
        guard let lines = try? String(contentsOf: metrics, encoding: .utf8) else { throw CLIError("\(metrics.path) missing after the run") }
        for line in lines.split(separator: "\n") {
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let tokens = object["tokens"] as? Int, let rate = object["tokens_per_s"] as? Double, rate > 0,
                  let elapsed = object["elapsed_s"] as? Double else { continue }
            r.stepSeconds.append(Double(tokens) / rate)
            r.stepTokens.append(tokens)
            r.loopSeconds = elapsed
        }
        guard !r.stepSeconds.isEmpty else { throw CLIError("\(metrics.path) has no step lines") }
        return r
    }

    // MARK: - Report

    func report(_ results: [(teachers: Int, repeat: Int, result: RunResult)], trainedTokens: Int, cores: Int, teacherPath: String,
                studentPath: String, teacherParameters: Int, studentParameters: Int) {
        let common: [(String, Any)] = [
            ("students", students), ("signal", signal), ("steps", steps), ("seq_len", seqLen), ("batch_tokens", batchTokens),
            ("grad_accum", gradAccum), ("lookahead", lookahead), ("threads", threads), ("cores", cores),
            ("teacher", teacherPath), ("student", studentPath), ("teacher_parameters", teacherParameters),
            ("student_parameters", studentParameters), ("qat", qat),
        ]
        /// Aggregate teacher tokens/s over the students' training loop: the run's throughput.
        func aggregate(_ r: RunResult) -> Double { Double(r.teachers.reduce(0) { $0 + $1.tokens }) / max(r.loopSeconds, 1e-9) }
        func busyRate(_ t: RunResult.Teacher) -> Double { Double(t.tokens) / max(t.busy, 1e-9) }
        func meanBusy(_ r: RunResult) -> Double { r.teachers.map(busyRate).reduce(0, +) / Double(max(r.teachers.count, 1)) }

        var table: [(teachers: Int, rows: [(String, String)])] = []
        var bestRate: [Int: Double] = [:], bestBusy: [Int: Double] = [:]
        let counts = parsedTeacherCounts
        for t in counts {
            let runs = results.filter { $0.teachers == t }
            guard !runs.isEmpty else { continue }
            for (_, rep, r) in runs {
                let ranks = t + students
                let stepsDone = Double(r.stepSeconds.count)
                let later = r.stepSeconds.count > 1 ? Array(r.stepSeconds.dropFirst()) : r.stepSeconds
                let signalBytes = r.signalMB * 1e6
                let reduceWait = r.allreduceWait ?? 0
                for teacher in r.teachers {
                    output.emitJSONOnly("cluster_teacher", common + [
                        ("teachers", t), ("repeat", rep), ("rank", teacher.rank), ("tokens", teacher.tokens), ("busy_s", teacher.busy),
                        ("wall_s", teacher.wall), ("tokens_per_s", busyRate(teacher)),
                        ("tokens_per_s_wall", Double(teacher.tokens) / max(teacher.wall, 1e-9)),
                        ("busy_fraction", teacher.busy / max(teacher.wall, 1e-9)),
                    ])
                }
                var fields: [(String, Any)] = common + [
                    ("teachers", t), ("repeat", rep), ("ranks", ranks),
                    ("tokens_per_s", aggregate(r)),
                    ("teacher_tokens", r.teachers.reduce(0) { $0 + $1.tokens }),
                    ("teacher_tokens_per_s_busy_per_rank", meanBusy(r)),
                    ("teacher_tokens_per_s_wall_per_rank", r.teachers.map { Double($0.tokens) / max($0.wall, 1e-9) }.reduce(0, +) / Double(t)),
                    ("step_s", r.loopSeconds / stepsDone),
                    ("step_s_median", later.sorted()[later.count / 2]),
                    ("first_step_s", r.stepSeconds[0]),
                    ("train_s", r.loopSeconds),
                    ("wall_s", r.wallSeconds),
                    ("student_wait_s", r.waitSeconds),
                    ("student_wait_fraction", r.waitSeconds / max(r.loopSeconds, 1e-9)),
                    ("student_wait_s_per_step", r.waitSeconds / stepsDone),
                    ("student_compute_s_per_step", max(0, (r.loopSeconds - r.waitSeconds - reduceWait) / stepsDone)),
                    ("signal_mb", r.signalMB),
                    ("signal_bytes_per_step", signalBytes / stepsDone),
                    ("trained_tokens_per_step", Double(trainedTokens) / Double(steps)),
                ]
                if trainedTokens > 0 && signalBytes > 0 { fields.append(("signal_bytes_per_trained_token", signalBytes / Double(trainedTokens))) }
                if let mb = r.allreduceMB {
                    fields += [("allreduce_mb_per_rank", mb), ("allreduce_bytes_per_step", mb * 1e6 / stepsDone),
                               ("allreduce_wait_s", reduceWait), ("allreduce_wait_s_per_step", reduceWait / stepsDone)]
                }
                output.emitJSONOnly("cluster", fields)
            }

            // The table shows the fastest run of this teacher count (the least disturbed on a shared machine).
            let ordered = runs.sorted { aggregate($0.result) < aggregate($1.result) }
            let r = ordered.last!.result
            bestRate[t] = aggregate(r)
            bestBusy[t] = meanBusy(r)
            let ranks = t + students
            let stepsDone = Double(r.stepSeconds.count)
            let later = r.stepSeconds.count > 1 ? Array(r.stepSeconds.dropFirst()) : r.stepSeconds
            let signalBytes = r.signalMB * 1e6
            let reduceWait = r.allreduceWait ?? 0
            func perRank(_ f: (RunResult.Teacher) -> String) -> String { r.teachers.map(f).joined(separator: " / ") }
            var rows: [(String, String)] = [
                ("teacher ranks + student ranks", "\(t) + \(students)\(ranks > cores ? " (\(ranks) ranks > \(cores) cores)" : "")"),
                ("teacher tok/s per rank, while busy", perRank { String(format: "%.0f", busyRate($0)) }),
                ("teacher tok/s per rank, over wall", perRank { String(format: "%.0f", Double($0.tokens) / max($0.wall, 1e-9)) }),
                ("teacher busy share of wall", perRank { String(format: "%.0f%%", 100 * $0.busy / max($0.wall, 1e-9)) }),
                ("aggregate teacher tok/s (training loop)", String(format: "%.0f", aggregate(r))
                    + (runs.count > 1 ? String(format: " (%.0f-%.0f)", aggregate(ordered.first!.result), aggregate(ordered.last!.result)) : "")),
                ("student wait for teacher", String(format: "%.2f s = %.0f%% of %.1f s", r.waitSeconds, 100 * r.waitSeconds / max(r.loopSeconds, 1e-9), r.loopSeconds)),
                ("step time: mean / median after step 1", String(format: "%.2f s / %.2f s", r.loopSeconds / stepsDone, later.sorted()[later.count / 2])),
                ("student compute per step", String(format: "%.2f s", max(0, (r.loopSeconds - r.waitSeconds - reduceWait) / stepsDone))),
                ("teacher signal per step, one student", String(format: "%.2f MB", signalBytes / stepsDone / 1e6)),
                ("teacher signal per trained token", trainedTokens > 0 && signalBytes > 0 ? String(format: "%.0f B", signalBytes / Double(trainedTokens)) : "-"),
            ]
            if let mb = r.allreduceMB {
                rows.append(("gradient allreduce per step", String(format: "%.1f MB, %.2f s waiting", mb / stepsDone, reduceWait / stepsDone)))
            }
            table.append((t, rows))
        }
        let baseline = counts.first.flatMap { t in bestRate[t].map { (t, $0, bestBusy[t]!) } }
        if let (t0, a0, b0) = baseline {
            for t in counts.dropFirst() {
                guard let a = bestRate[t], let b = bestBusy[t] else { continue }
                output.emitJSONOnly("cluster_scaling", common + [
                    ("teachers", t), ("baseline_teachers", t0), ("ranks", t + students), ("repeats", repeats),
                    ("tokens_per_s", a), ("baseline_tokens_per_s", a0),
                    ("speedup", a / a0), ("ideal_speedup", Double(t) / Double(t0)),
                    ("busy_rate_per_rank_ratio", b / b0),
                    ("cores_limit_speedup", t + students > cores),
                ])
            }
        }
        guard !output.json else { return }
        // Side by side: one column per teacher count.
        let width = table.first?.rows.map(\.0.count).max() ?? 0
        print("".padding(toLength: width, withPad: " ", startingAt: 0)
              + table.map { "  " + "\($0.teachers) teacher rank(s)".padding(toLength: 28, withPad: " ", startingAt: 0) }.joined())
        for i in 0..<(table.first?.rows.count ?? 0) {
            var line = table[0].rows[i].0.padding(toLength: width, withPad: " ", startingAt: 0)
            for column in table where i < column.rows.count {
                line += "  " + column.rows[i].1.padding(toLength: max(28, column.rows[i].1.count), withPad: " ", startingAt: 0)
            }
            print(line)
        }
        if repeats > 1 { print("(\(repeats) runs of each, interleaved; each column shows the fastest run, the range of aggregate tok/s in brackets)") }
        if let (t0, a0, b0) = baseline {
            for t in counts.dropFirst() {
                guard let a = bestRate[t], let b = bestBusy[t] else { continue }
                print(String(format: "%d vs %d teacher ranks: aggregate teacher tok/s %.2fx (ideal %.1fx); busy tok/s per rank %.2fx",
                             t, t0, a / a0, Double(t) / Double(t0), b / b0))
                if t + students > cores {
                    print("note: \(t + students) ranks share \(cores) cores, so teacher ranks compete with each other and with the students for CPU: more teacher ranks cannot give \(t / t0)x here; the per-rank busy rate shows how much each one slowed down. On machines with a core set per rank the aggregate follows the rank count until the students become the bottleneck.")
                }
            }
        }
    }

    // MARK: - Inputs

    /// A random Llama of `--small-hidden` x `--small-layers` with the given tokenizer, as a
    /// Hugging Face directory (config.json, model.safetensors, tokenizer files).
    func writeSmallModel(_ dir: URL, tokenizer: BPETokenizer, template: ChatTemplate, seed: UInt64) throws -> URL {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let headDim = 32, heads = max(1, smallHidden / headDim)
        let config = ModelConfig(modelType: .llama, hiddenSize: smallHidden, intermediateSize: 2 * smallHidden,
                                 numHiddenLayers: smallLayers, numAttentionHeads: heads, numKeyValueHeads: max(1, heads / 2),
                                 headDim: headDim, vocabSize: tokenizer.vocabSize, rmsNormEps: 1e-5, ropeTheta: 100_000,
                                 maxPositionEmbeddings: max(2048, seqLen), tieWordEmbeddings: true)
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

    /// GSM8K-like arithmetic records, when no teacher traces are at hand.
    func writeArithmeticData(_ url: URL) throws -> URL {
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

    /// The completion positions student 0 trains on over the whole run (the batches `rqat
    /// train` draws: same data, seed 0, packing, the same shard).
    func trainedTokensOfStudent0(data: String, tokenizer: BPETokenizer, template: ChatTemplate) throws -> Int {
        let dataset = try SFTDataset.load(URL(fileURLWithPath: data), tokenizer: tokenizer, format: .chat, template: template,
                                          seqLen: seqLen, dropLong: true)
        let batcher = try SFTBatcher(dataset: dataset, seqLen: seqLen, batchTokens: batchTokens, packing: true,
                                     padId: tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0, seed: 0)
        var total = 0
        for _ in 0..<(steps * gradAccum) { total += batcher.nextBatch().shard(0, of: students).predictedTokens }
        return total
    }

    func split(_ s: String) -> [String] { s.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init) }

    func mpirunPath() throws -> String {
        if let mpirun { return mpirun }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/local/bin"
        for dir in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin"] {
            let candidate = "\(dir)/mpirun"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw CLIError("mpirun not found on PATH (scripts/setup.sh installs openmpi-bin), or pass --mpirun")
    }

    /// The path of the running rqat binary, so the ranks run exactly this build.
    func ownExecutable() throws -> String {
        if let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return link }
        if let path = Bundle.main.executablePath { return path }
        let arg0 = CommandLine.arguments[0]
        if arg0.contains("/") { return URL(fileURLWithPath: arg0).standardizedFileURL.path }
        throw CLIError("cannot find the path of the running rqat binary")
    }
}
