import ArgumentParser
import Bench
import Foundation

/// The same KD work with 1 and then 2 (or any list of) teacher ranks: starts `mpirun` on this
/// very `rqat train`, reads what the ranks leave in the run directory, and puts the runs side by side.
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

    var benchOptions: ClusterBench.Options {
        var o = ClusterBench.Options()
        o.teacher = teacher
        o.student = student
        o.vocabFrom = vocabFrom
        o.smallHidden = smallHidden
        o.smallLayers = smallLayers
        o.qat = qat
        o.data = data
        o.teacherCounts = parsedTeacherCounts
        o.students = students
        o.repeats = repeats
        o.signal = signal
        o.steps = steps
        o.seqLen = seqLen
        o.batchTokens = batchTokens
        o.gradAccum = gradAccum
        o.lookahead = lookahead
        o.bucketMB = bucketMB
        o.threads = threads
        o.extraMpirunArgs = split(extraMpirunArgs)
        o.extraTrainArgs = split(extraTrainArgs)
        o.rankWrapper = rankWrapper
        o.mpirun = mpirun
        o.workDir = workDir
        o.verbose = verbose
        return o
    }

    func measure() throws {
        let quiet = output.json && !verbose
        let report = try ClusterBench.run(benchOptions, rqat: try ownExecutable(), log: { if !quiet { printErr($0) } }) { setup in
            guard !output.json else { return }
            print("teacher \(teacher == "small" ? "small" : setup.teacherPath) (\(setup.teacherParameters) parameters), student \(student == "small" ? "small" : setup.studentPath) (\(setup.studentParameters) parameters\(qat == "none" ? "" : ", QAT \(qat)"))")
            print("data \(setup.dataPath); \(steps) steps of \(gradAccum) x \(batchTokens / seqLen) x \(seqLen) tokens, signal \(signal), lookahead \(lookahead), \(students) student rank(s), \(threads) thread(s) per rank, \(setup.cores) cores")
        }
        show(report)
    }

    // MARK: - Report

    func show(_ report: ClusterReport) {
        for run in report.runs {
            for teacher in run.teachers { output.emitJSONOnly(teacher) }
            output.emitJSONOnly(run.run)
        }
        for scaling in report.scaling { output.emitJSONOnly(scaling) }
        guard !output.json else { return }

        // Side by side: one column per teacher count, each its fastest run.
        let cores = report.setup.cores
        let table = report.columns.map { column -> (teachers: Int, rows: [(String, String)]) in
            let r = column.fastest.run, teachers = column.fastest.teachers
            func perRank(_ f: (ClusterTeacherRecord) -> String) -> String { teachers.map(f).joined(separator: " / ") }
            var rows: [(String, String)] = [
                ("teacher ranks + student ranks", "\(column.teachers) + \(students)\(r.ranks > cores ? " (\(r.ranks) ranks > \(cores) cores)" : "")"),
                ("teacher tok/s per rank, while busy", perRank { String(format: "%.0f", $0.tokensPerS) }),
                ("teacher tok/s per rank, over wall", perRank { String(format: "%.0f", $0.tokensPerSWall) }),
                ("teacher busy share of wall", perRank { String(format: "%.0f%%", 100 * $0.busyFraction) }),
                ("aggregate teacher tok/s (training loop)", String(format: "%.0f", r.tokensPerS)
                    + (column.runs > 1 ? String(format: " (%.0f-%.0f)", column.slowestTokensPerS, column.fastestTokensPerS) : "")),
                ("student wait for teacher", String(format: "%.2f s = %.0f%% of %.1f s", r.studentWaitS, 100 * r.studentWaitFraction, r.trainS)),
                ("step time: mean / median after step 1", String(format: "%.2f s / %.2f s", r.stepS, r.stepSMedian)),
                ("student compute per step", String(format: "%.2f s", r.studentComputeSPerStep)),
                ("teacher signal per step, one student", String(format: "%.2f MB", r.signalBytesPerStep / 1e6)),
                ("teacher signal per trained token", r.signalBytesPerTrainedToken.map { String(format: "%.0f B", $0) } ?? "-"),
            ]
            if let perStep = r.allreduceBytesPerStep, let wait = r.allreduceWaitSPerStep {
                rows.append(("gradient allreduce per step", String(format: "%.1f MB, %.2f s waiting", perStep / 1e6, wait)))
            }
            return (column.teachers, rows)
        }
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
        for s in report.scaling {
            print(String(format: "%d vs %d teacher ranks: aggregate teacher tok/s %.2fx (ideal %.1fx); busy tok/s per rank %.2fx",
                               s.teachers, s.baselineTeachers, s.speedup, s.idealSpeedup, s.busyRatePerRankRatio))
            if s.coresLimitSpeedup {
                print("note: \(s.ranks) ranks share \(cores) cores, so teacher ranks compete with each other and with the students for CPU: more teacher ranks cannot give \(s.teachers / s.baselineTeachers)x here; the per-rank busy rate shows how much each one slowed down. On machines with a core set per rank the aggregate follows the rank count until the students become the bottleneck.")
            }
        }
    }

    // MARK: - Inputs

    func split(_ s: String) -> [String] { s.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init) }

    /// The path of the running rqat binary, so the ranks run exactly this build.
    func ownExecutable() throws -> String {
        if let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return link }
        if let path = Bundle.main.executablePath { return path }
        let arg0 = CommandLine.arguments[0]
        if arg0.contains("/") { return URL(fileURLWithPath: arg0).standardizedFileURL.path }
        throw CLIError("cannot find the path of the running rqat binary")
    }
}
