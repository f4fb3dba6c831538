import Cluster
import Foundation
@testable import Jobs
import Quant
import TestSupport
import Train
import XCTest

/// `rqat train` as a library job in this process (a world of one rank, the teacher in-process).
/// MPI can start only once per process, so this is the only test here that joins the world.
final class DistillJobTests: XCTestCase {
    func testSingleProcessRunTrainsAndWritesTheStudentSummary() throws {
        let dir = try makeScratchDirectory("rqat-distill-job")
        try TinyModels.writeModel(at: dir.appendingPathComponent("teacher"), seed: 11)
        try TinyModels.writeModel(at: dir.appendingPathComponent("student"), seed: 7)
        try TinyModels.writeArithmeticData(to: dir.appendingPathComponent("train.jsonl"), count: 16)
        var options = TrainOptions()
        options.steps = 2
        options.batchTokens = 128
        options.seqLen = 64
        let out = dir.appendingPathComponent("out")
        let spec = TrainingSpec(data: dir.appendingPathComponent("train.jsonl").path, format: .chat, dropLong: false,
                                qat: nil, lsq: false, options: options, runDir: out)
        var signal = SignalOptions()
        signal.encoding = .topK(8)
        let job = DistillJob(teacher: dir.appendingPathComponent("teacher").path, student: dir.appendingPathComponent("student").path,
                             loss: .kd, signal: signal, teachers: 0, lookahead: 1, bucketMB: 16, syncCheckEvery: 10, spec: spec)
        var lines: [String] = []
        XCTAssertEqual(job.runInWorld { lines.append($0) }, 0, lines.joined(separator: "\n"))

        let summary = try TrainSummary.read(runDir: out, rank: 0)
        XCTAssertEqual(summary.role, "student")
        XCTAssertEqual(summary.worldSize, 1)
        XCTAssertNil(summary.teacher)
        let student = try XCTUnwrap(summary.student)
        XCTAssertGreaterThan(student.trainSeconds, 0)
        XCTAssertTrue(student.teacherWaitSeconds >= 0 && student.teacherWaitSeconds <= student.trainSeconds)
        XCTAssertGreaterThan(student.signalBytes, 0)
        XCTAssertNil(student.allreduceMB, "one student sums no gradients")
        // The progress line quotes the same bytes.
        XCTAssertTrue(lines.contains { $0.contains("\(student.signalBytes) bytes of teacher signal received") }, "\(lines)")
        XCTAssertNotNil(TrainCheckpoint.latestCheckpoint(in: out))
    }
}
