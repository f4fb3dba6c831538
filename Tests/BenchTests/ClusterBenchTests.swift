import Foundation
@testable import Bench
@testable import Jobs
import TestSupport
import XCTest

/// `bench cluster` without mpirun: a run read back from the files `rqat train` leaves, and the
/// report's figures worked out by hand from made-up runs.
final class ClusterBenchTests: XCTestCase {
    /// Two teacher ranks and one student (world rank 2), three steps of 256 tokens.
    func writeRun(_ dir: URL, studentRank: Int = 2) throws {
        try TrainSummary(rank: 0, worldSize: 3, role: "teacher", roleIndex: 0,
                         teacher: .init(tokens: 512, busySeconds: 0.25, wallSeconds: 1)).write(runDir: dir)
        try TrainSummary(rank: 1, worldSize: 3, role: "teacher", roleIndex: 1,
                         teacher: .init(tokens: 256, busySeconds: 0.5, wallSeconds: 1)).write(runDir: dir)
        try TrainSummary(rank: studentRank, worldSize: 3, role: "student", roleIndex: 0,
                         student: .init(trainSeconds: 1.2, teacherWaitSeconds: 0.3, signalBytes: 3_000_000)).write(runDir: dir)
        let steps = [(256, 512.0, 0.5), (256, 1024.0, 0.75), (256, 1024.0, 1.0)]
        let lines = steps.map { #"{"step": 1, "loss": 1, "lr": 1, "grad_norm": 1, "tokens": \#($0.0), "tokens_per_s": \#($0.1), "elapsed_s": \#($0.2), "skipped": false}"# }
        try lines.joined(separator: "\n").write(to: dir.appendingPathComponent("metrics.jsonl"), atomically: true, encoding: .utf8)
    }

    func testReadRunFromTheSummariesAndMetrics() throws {
        let dir = try makeScratchDirectory("rqat-cluster-run")
        try writeRun(dir)
        let run = try ClusterBench.readRun(dir, teachers: 2)
        XCTAssertEqual(run.teachers.map(\.rank), [0, 1])
        XCTAssertEqual(run.teachers.map(\.tokens), [512, 256])
        XCTAssertEqual(run.teachers[0].busyRate, 2048)
        XCTAssertEqual(run.waitSeconds, 0.3)
        XCTAssertEqual(run.studentSeconds, 1.2)
        XCTAssertEqual(run.signalMB, 3)
        XCTAssertNil(run.allreduceMB)
        XCTAssertEqual(run.stepSeconds, [0.5, 0.25, 0.25])
        XCTAssertEqual(run.stepTokens, [256, 256, 256])
        XCTAssertEqual(run.loopSeconds, 1.0)
        XCTAssertEqual(run.aggregateRate, 768)
        XCTAssertEqual(run.meanBusyRate, (2048 + 512) / 2)
    }

    func testAMissingOrWrongSummaryNamesTheFile() throws {
        let dir = try makeScratchDirectory("rqat-cluster-run")
        try writeRun(dir)
        // Asked for three teachers, rank 2 is a student.
        XCTAssertThrowsError(try ClusterBench.readRun(dir, teachers: 3)) {
            XCTAssertTrue("\($0)".contains("summary-rank2.json") && "\($0)".contains("teacher"), "\($0)")
        }
        try FileManager.default.removeItem(at: TrainSummary.url(runDir: dir, rank: 2))
        XCTAssertThrowsError(try ClusterBench.readRun(dir, teachers: 2)) {
            XCTAssertTrue("\($0)".contains(dir.appendingPathComponent("summary-rank2.json").path), "\($0)")
        }
    }

    func setup(cores: Int = 2) -> ClusterBench.Setup {
        ClusterBench.Setup(teacherPath: "t", studentPath: "s", teacherLabel: "t", studentLabel: "small (random, hidden 128, 2 layers)",
                           teacherParameters: 100, studentParameters: 10, dataPath: "d.jsonl", trainedTokens: 600, cores: cores)
    }

    /// A run of `teachers` ranks whose teachers served `tokens` each over a 2 s loop of 4 steps.
    func run(teachers: Int, repeatIndex: Int, tokens: Int, allreduce: Bool = false) -> ClusterRun {
        var r = ClusterRun(teacherCount: teachers)
        r.repeatIndex = repeatIndex
        r.teachers = (0..<teachers).map { .init(rank: $0, tokens: tokens, busySeconds: 1, wallSeconds: 4) }
        r.waitSeconds = 0.5
        r.studentSeconds = 2.1
        r.signalMB = 1.2
        if allreduce { (r.allreduceMB, r.allreduceWait) = (8, 0.25) }
        r.stepSeconds = [0.8, 0.4, 0.4, 0.4]
        r.stepTokens = [256, 256, 256, 256]
        r.loopSeconds = 2
        r.wallSeconds = 5
        return r
    }

    func testReportFiguresFastestRunsAndScaling() throws {
        var o = ClusterBench.Options()
        o.teacherCounts = [1, 2]
        o.repeats = 2
        o.steps = 4
        o.students = 1
        let runs = [run(teachers: 1, repeatIndex: 0, tokens: 1000), run(teachers: 2, repeatIndex: 0, tokens: 600),
                    run(teachers: 1, repeatIndex: 1, tokens: 1200), run(teachers: 2, repeatIndex: 1, tokens: 900, allreduce: true)]
        let report = ClusterReport(setup: setup(), options: o, runs: runs)

        // Every run, grouped by teacher count in the order of --teacher-counts, repeats in order.
        XCTAssertEqual(report.runs.map(\.run.teachers), [1, 1, 2, 2])
        XCTAssertEqual(report.runs.map(\.run.repeat), [0, 1, 0, 1])
        XCTAssertEqual(report.runs.map(\.teachers.count), [1, 1, 2, 2])
        let first = report.runs[0].run
        XCTAssertEqual(first.tokensPerS, 500)                      // 1000 tokens / 2 s loop
        XCTAssertEqual(first.teacherTokensPerSBusyPerRank, 1000)
        XCTAssertEqual(first.teacherTokensPerSWallPerRank, 250)
        XCTAssertEqual(first.stepS, 0.5)
        XCTAssertEqual(first.stepSMedian, 0.4)
        XCTAssertEqual(first.firstStepS, 0.8)
        XCTAssertEqual(first.studentWaitFraction, 0.25)
        XCTAssertEqual(first.studentComputeSPerStep, (2 - 0.5) / 4)
        XCTAssertEqual(first.signalBytesPerStep, 300_000)
        XCTAssertEqual(first.trainedTokensPerStep, 150)
        XCTAssertEqual(first.signalBytesPerTrainedToken, 2000)
        XCTAssertEqual(first.ranks, 2)
        XCTAssertNil(first.allreduceMBPerRank)
        let reduced = report.runs[3].run
        XCTAssertEqual(reduced.allreduceBytesPerStep, 2_000_000)
        XCTAssertEqual(reduced.allreduceWaitSPerStep, 0.0625)
        XCTAssertEqual(reduced.studentComputeSPerStep, (2 - 0.5 - 0.25) / 4)
        XCTAssertEqual(report.runs[2].teachers[1].busyFraction, 0.25)

        // The table's columns: the fastest run of each count, with the range.
        XCTAssertEqual(report.columns.map(\.teachers), [1, 2])
        XCTAssertEqual(report.columns.map(\.fastest.run.repeat), [1, 1])
        XCTAssertEqual(report.columns[1].slowestTokensPerS, 600)
        XCTAssertEqual(report.columns[1].fastestTokensPerS, 900)

        let s = try XCTUnwrap(report.scaling.first)
        XCTAssertEqual(report.scaling.count, 1)
        XCTAssertEqual(s.teachers, 2)
        XCTAssertEqual(s.baselineTeachers, 1)
        XCTAssertEqual(s.speedup, 900.0 / 600.0)
        XCTAssertEqual(s.idealSpeedup, 2)
        XCTAssertEqual(s.busyRatePerRankRatio, 900.0 / 1200.0)
        XCTAssertTrue(s.coresLimitSpeedup, "3 ranks on 2 cores")

        // Shared parameters and own fields in one flat line.
        let line = try jsonObject(report.runs[3].run.jsonLine())
        XCTAssertEqual(line["name"] as? String, "cluster")
        XCTAssertEqual(line["student"] as? String, "small (random, hidden 128, 2 layers)")
        XCTAssertEqual(line["qat"] as? String, "w3g128")
        for key in ["students", "signal", "steps", "seq_len", "batch_tokens", "grad_accum", "lookahead", "threads", "cores",
                    "teacher_parameters", "student_parameters", "tokens_per_s", "allreduce_mb_per_rank", "allreduce_wait_s"] {
            XCTAssertNotNil(line[key], key)
        }
        XCTAssertEqual(try jsonObject(report.runs[0].teachers[0].jsonLine())["name"] as? String, "cluster_teacher")
        XCTAssertEqual(try jsonObject(s.jsonLine())["cores_limit_speedup"] as? Bool, true)
    }
}
