import Foundation
@testable import Jobs
import TestSupport
import XCTest

/// OUT/summary-rank<N>.json: what `rqat bench cluster` reads instead of the ranks' log lines.
final class TrainSummaryTests: XCTestCase {
    func testRoundTripKeepsEveryFigureAndUsesTheDocumentedKeys() throws {
        let dir = try makeScratchDirectory("rqat-summary")
        let teacher = TrainSummary(rank: 0, worldSize: 3, role: "teacher", roleIndex: 0,
                                   teacher: .init(tokens: 768, busySeconds: 0.117_345_6, wallSeconds: 0.452_01))
        let student = TrainSummary(rank: 1, worldSize: 3, role: "student", roleIndex: 0,
                                   student: .init(trainSeconds: 1.5, teacherWaitSeconds: 0.25, signalBytes: 3571,
                                                  allreduceMB: 0.453_888, allreduceWaitSeconds: 0.009))
        for summary in [teacher, student] { try summary.write(runDir: dir) }

        XCTAssertEqual(try TrainSummary.read(runDir: dir, rank: 0), teacher)
        XCTAssertEqual(try TrainSummary.read(runDir: dir, rank: 1), student)
        // Written under a temporary name and renamed: nothing else is left in the directory.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(),
                       ["summary-rank0.json", "summary-rank1.json"])

        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: TrainSummary.url(runDir: dir, rank: 1))) as! [String: Any]
        XCTAssertEqual(Set(object.keys), ["rank", "world_size", "role", "role_index", "student"])
        let figures = object["student"] as! [String: Any]
        XCTAssertEqual(Set(figures.keys), ["train_s", "teacher_wait_s", "signal_bytes", "allreduce_mb", "allreduce_wait_s"])
        XCTAssertEqual(figures["signal_bytes"] as? Int, 3571)
        let teacherFigures = try JSONSerialization.jsonObject(with: Data(contentsOf: TrainSummary.url(runDir: dir, rank: 0))) as! [String: Any]
        XCTAssertEqual(Set((teacherFigures["teacher"] as! [String: Any]).keys), ["tokens", "busy_s", "wall_s"])
    }

    func testRewritingReplacesTheWholeFile() throws {
        let dir = try makeScratchDirectory("rqat-summary")
        var summary = TrainSummary(rank: 2, worldSize: 3, role: "student", roleIndex: 1,
                                   student: .init(trainSeconds: 10, teacherWaitSeconds: 1, signalBytes: 123_456_789))
        try summary.write(runDir: dir)
        summary.student = .init(trainSeconds: 2, teacherWaitSeconds: 0, signalBytes: 1)
        try summary.write(runDir: dir)
        XCTAssertEqual(try TrainSummary.read(runDir: dir, rank: 2), summary)
    }

    func testMissingSummaryNamesTheFileAndTheRank() throws {
        let dir = try makeScratchDirectory("rqat-summary")
        XCTAssertThrowsError(try TrainSummary.read(runDir: dir, rank: 4)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(dir.appendingPathComponent("summary-rank4.json").path), text)
            XCTAssertTrue(text.contains("rank 4"), text)
            XCTAssertFalse(text.contains("\n"), text)
        }
        try Data("{\"rank\": 4}".utf8).write(to: TrainSummary.url(runDir: dir, rank: 4))
        XCTAssertThrowsError(try TrainSummary.read(runDir: dir, rank: 4)) { error in
            XCTAssertTrue("\(error)".contains("summary-rank4.json"), "\(error)")
        }
    }

    /// A NaN must not fail the job whose work is done: it is written as "NaN" and read back.
    func testNonFiniteFiguresSurviveTheFile() throws {
        let dir = try makeScratchDirectory("rqat-summary")
        let summary = TrainSummary(rank: 0, worldSize: 1, role: "student", roleIndex: 0,
                                   student: .init(trainSeconds: .infinity, teacherWaitSeconds: .nan, signalBytes: 0))
        try summary.write(runDir: dir)
        let back = try TrainSummary.read(runDir: dir, rank: 0)
        XCTAssertEqual(back.student?.trainSeconds, .infinity)
        XCTAssertTrue(back.student?.teacherWaitSeconds.isNaN ?? false)
    }
}
