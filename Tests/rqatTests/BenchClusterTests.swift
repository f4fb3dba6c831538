import Foundation
import TestSupport
import XCTest

/// `rqat bench cluster` end to end on a tiny teacher/student pair: it starts mpirun itself with
/// 1 and 2 teacher ranks and reports sane numbers for both.
final class BenchClusterTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try makeScratchDirectory("rqat-bench-cluster")
        try TinyModels.writeModel(at: dir.appendingPathComponent("teacher"), seed: 11)
        try TinyModels.writeModel(at: dir.appendingPathComponent("student"), seed: 7)
        try TinyModels.writeArithmeticData(to: dir.appendingPathComponent("train.jsonl"), count: 16)
    }

    func testOneAndTwoTeachersReportPositiveFiniteFigures() throws {
        guard MPIRun.mpirun != nil else { throw XCTSkip("mpirun not installed (scripts/setup.sh installs openmpi-bin)") }
        let rqat = try BuiltProducts.executable("rqat")
        let result = try runProcess(rqat, [
            "bench", "cluster", "--json",
            "--teacher", dir.appendingPathComponent("teacher").path, "--student", dir.appendingPathComponent("student").path,
            "--qat", "none", "--data", dir.appendingPathComponent("train.jsonl").path, "--work-dir", dir.appendingPathComponent("work").path,
            "--teacher-counts", "1,2", "--students", "1", "--signal", "full", "--steps", "3", "--seq-len", "64",
            "--batch-tokens", "256", "--lookahead", "1", "--threads", "1",
        ])
        XCTAssertEqual(result.status, 0, result.output)
        let objects = result.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        XCTAssertFalse(objects.isEmpty, result.output)

        func positive(_ object: [String: Any], _ key: String, file: StaticString = #filePath, line: UInt = #line) {
            guard let value = object[key] as? Double else { return XCTFail("\(key) missing in \(object)", file: file, line: line) }
            XCTAssertTrue(value.isFinite && value > 0, "\(key) = \(value) in \(object)", file: file, line: line)
        }

        let runs = objects.filter { $0["name"] as? String == "cluster" }
        XCTAssertEqual(runs.compactMap { $0["teachers"] as? Int }.sorted(), [1, 2], result.output)
        for run in runs {
            XCTAssertEqual(run["students"] as? Int, 1)
            XCTAssertEqual(run["signal"] as? String, "full")
            for key in ["tokens_per_s", "teacher_tokens_per_s_busy_per_rank", "teacher_tokens_per_s_wall_per_rank", "step_s",
                        "train_s", "signal_bytes_per_step", "signal_bytes_per_trained_token", "trained_tokens_per_step"] {
                positive(run, key)
            }
            let wait = run["student_wait_fraction"] as? Double ?? -1
            XCTAssertTrue(wait >= 0 && wait <= 1, "student_wait_fraction \(wait)")
            // Every token the student trained on went through a teacher exactly once.
            XCTAssertEqual(run["teacher_tokens"] as? Int, 3 * 256, "\(run)")
        }
        let teachers = objects.filter { $0["name"] as? String == "cluster_teacher" }
        XCTAssertEqual(teachers.count, 3, "one line per teacher rank of both runs: \(result.output)")
        for teacher in teachers { positive(teacher, "tokens_per_s"); positive(teacher, "tokens_per_s_wall") }
        let scaling = objects.filter { $0["name"] as? String == "cluster_scaling" }
        XCTAssertEqual(scaling.count, 1, result.output)
        if let s = scaling.first { positive(s, "speedup") }

        // The figures came from the summaries every rank wrote (kept, as --work-dir was given).
        let run = dir.appendingPathComponent("work/run-t2-s1")
        for (rank, role) in [(0, "teacher"), (1, "teacher"), (2, "student")] {
            let url = run.appendingPathComponent("summary-rank\(rank).json")
            let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any]
            XCTAssertEqual(summary?["role"] as? String, role, url.path)
            XCTAssertEqual(summary?["world_size"] as? Int, 3, url.path)
        }
    }
}
