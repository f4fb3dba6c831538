import Foundation
import Formats
import Tensors
import TestSupport
import XCTest

/// `rqat train --loss kd` end to end: the distributed run (teacher ranks + data-parallel
/// students under mpirun) trains the same student weights as one process on the same batches.
final class DistributedTrainTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try makeScratchDirectory("rqat-kd")
        try writeTinyModel(named: "teacher", seed: 11)
        try writeTinyModel(named: "student", seed: 7)
        try TinyModels.writeArithmeticData(to: dir.appendingPathComponent("train.jsonl"), count: 16)
    }

    /// A random tiny Qwen3 with the tiny BPE tokenizer, as a Hugging Face directory.
    func writeTinyModel(named name: String, seed: UInt64, vocabOverride: Int? = nil) throws {
        try TinyModels.writeModel(at: dir.appendingPathComponent(name), seed: seed, vocabOverride: vocabOverride)
    }

    /// `threads: false` leaves the thread count to the launcher (cluster/launch.sh sets it per role).
    func trainArguments(out: String, signal: String, steps: Int = 3, threads: Bool = true) -> [String] {
        ["train", "--teacher", dir.appendingPathComponent("teacher").path, "--student", dir.appendingPathComponent("student").path,
         "--data", dir.appendingPathComponent("train.jsonl").path, "--out", dir.appendingPathComponent(out).path,
         "--steps", "\(steps)", "--batch-tokens", "256", "--seq-len", "64", "--grad-accum", "2", "--signal", signal,
         "--kd-temperature", "2", "--lr", "1e-2", "--warmup", "0", "--bucket-mb", "0.01"] + (threads ? ["--threads", "1"] : [])
    }

    func finalWeights(_ out: String, step: Int = 3) throws -> SafeTensorsFile {
        try SafeTensorsFile(url: dir.appendingPathComponent(out).appendingPathComponent(String(format: "checkpoint-%06d", step))
                                .appendingPathComponent("model.safetensors"))
    }

    func runRQAT(_ arguments: [String], ranks: Int?) throws -> ProcessResult {
        let result = try MPIRun.run(executable: "rqat", ranks: ranks, arguments: arguments)
        XCTAssertEqual(result.status, 0, result.output)
        return result
    }

    func testDistributedKDMatchesSingleProcess() throws {
        for signal in ["top-8", "full", "sampled-8"] {
            _ = try runRQAT(trainArguments(out: "single-\(signal)", signal: signal), ranks: nil)
            let oneTeacher = try runRQAT(trainArguments(out: "t1s2-\(signal)", signal: signal) + ["--teachers", "1"], ranks: 3)
            XCTAssertTrue(oneTeacher.stderr.contains("layout: rank 0"), oneTeacher.stderr)
            XCTAssertTrue(oneTeacher.stderr.contains("student 1/2"), oneTeacher.stderr)
            _ = try runRQAT(trainArguments(out: "t2s2-\(signal)", signal: signal) + ["--teachers", "2"], ranks: 4)
            let single = try finalWeights("single-\(signal)")
            let student = try finalWeights("t1s2-\(signal)")
            let initial = try SafeTensorsFile(url: dir.appendingPathComponent("student/model.safetensors"))
            // The run must have moved the weights, or equality would prove nothing.
            XCTAssertGreaterThan(try maxRelativeDifference(single, initial), 1e-3, signal)
            // The data-parallel sum adds the two students' gradients in another order than one
            // process does; AdamW's normalised steps carry that rounding into the weights: 1.5e-5
            // relative at most (top-8) on an AMD EPYC machine's OpenBLAS kernels, under 1e-5 on others.
            XCTAssertLessThan(try maxRelativeDifference(student, single), 5e-5, "1 teacher + 2 students, \(signal)")
            XCTAssertLessThan(try maxRelativeDifference(try finalWeights("t2s2-\(signal)"), single), 5e-5, "2 teachers + 2 students, \(signal)")
        }
    }

    // MARK: - Layouts and inputs that must fail before any training, on every rank, without a hang

    func testTooFewRanksForTheTeachersFailsBeforeWork() throws {
        let r = try MPIRun.run(executable: "rqat", ranks: 2, arguments: trainArguments(out: "o", signal: "top-8") + ["--teachers", "2"])
        XCTAssertEqual(r.status, 2, r.output)
        XCTAssertTrue(r.stderr.contains("--teachers 2 leaves no student among the 2 ranks"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("o").path))
    }

    func testVocabularyMismatchNamesBothModels() throws {
        // A teacher whose tokenizer differs: one token string changed.
        let teacherTokenizer = dir.appendingPathComponent("teacher/tokenizer.json")
        let text = try String(contentsOf: teacherTokenizer, encoding: .utf8)
        try text.replacingOccurrences(of: "\"<|im_end|>\"", with: "\"<|im_stop|>\"")
            .write(to: teacherTokenizer, atomically: true, encoding: .utf8)
        for (ranks, extra) in [(nil, [String]()), (Optional(3), ["--teachers", "1"])] {
            let r = try MPIRun.run(executable: "rqat", ranks: ranks, arguments: trainArguments(out: "o", signal: "top-8") + extra)
            XCTAssertNotEqual(r.status, 0, r.output)
            XCTAssertTrue(r.stderr.contains("different vocabularies"), r.stderr)
            XCTAssertTrue(r.stderr.contains(dir.appendingPathComponent("teacher").path), r.stderr)
        }
    }

    /// `rqat generate --prompts` under mpirun: rank 0 hands each teacher rank a batch of the
    /// round; the completions (sampled, seeded per prompt) equal a single process's.
    func testDistributedGenerationMatchesSingleProcess() throws {
        let prompts = dir.appendingPathComponent("prompts.txt")
        try (0..<7).map { "What is \($0) + \($0 + 2)?" }.joined(separator: "\n").write(to: prompts, atomically: true, encoding: .utf8)
        func arguments(_ out: String) -> [String] {
            ["generate", "--model", dir.appendingPathComponent("teacher").path, "--prompts", prompts.path,
             "--out", dir.appendingPathComponent(out).path, "--batch", "2", "--temperature", "0.8", "--max-tokens", "12",
             "--seed", "5", "--threads", "1"]
        }
        _ = try runRQAT(arguments("single.jsonl"), ranks: nil)
        _ = try runRQAT(arguments("three.jsonl"), ranks: 3)
        let single = try String(contentsOf: dir.appendingPathComponent("single.jsonl"), encoding: .utf8)
        let three = try String(contentsOf: dir.appendingPathComponent("three.jsonl"), encoding: .utf8)
        XCTAssertEqual(single.split(separator: "\n").count, 7)
        XCTAssertEqual(three, single)
    }

    // MARK: - A rank dies

    /// The pid of the process whose command line mentions `marker` and whose MPI world rank is `rank`.
    func pid(ofRank rank: Int, marker: String) -> Int32? {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry),
                  let cmdline = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")),
                  String(decoding: cmdline, as: UTF8.self).contains(marker),
                  let environ = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ")) else { continue }
            let variables = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if variables.contains("OMPI_COMM_WORLD_RANK=\(rank)") && !String(decoding: cmdline, as: UTF8.self).hasPrefix("mpirun") {
                return pid
            }
        }
        return nil
    }

    /// Kills world rank `victim` of a 1 teacher + 2 students run once a checkpoint exists: every
    /// other rank is gone within 30 s, launch.sh names the dead rank and its role, and the
    /// checkpoint resumes.
    func killRankAndResume(victim: Int, role: String) throws {
        let out = "killed-\(victim)"
        let launch = TestPaths.root.appendingPathComponent("cluster/launch.sh")
        let arguments = ["--teachers", "1", "--students", "2", "--", try BuiltProducts.executable("rqat").path]
            + trainArguments(out: out, signal: "top-8", steps: 100_000, threads: false)
            + ["--save-every", "20", "--keep-last", "2"]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [launch.path] + arguments
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let runDir = dir.appendingPathComponent(out)
        let deadline = Date().addingTimeInterval(60)
        while !((try? FileManager.default.contentsOfDirectory(atPath: runDir.path)) ?? []).contains(where: { $0.hasPrefix("checkpoint-") }) {
            guard Date() < deadline, process.isRunning else { process.terminate(); return XCTFail("no checkpoint within 60 s") }
            usleep(100_000)
        }
        guard let victimPid = pid(ofRank: victim, marker: runDir.path) else { process.terminate(); return XCTFail("rank \(victim) not found") }
        let killed = Date()
        kill(victimPid, SIGKILL)
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let seconds = Date().timeIntervalSince(killed)
        let stderr = String(decoding: errData, as: UTF8.self)
        print(String(format: "killed rank %d: launch.sh exited after %.1f s", victim, seconds))
        XCTAssertLessThan(seconds, 30, stderr)
        XCTAssertNotEqual(process.terminationStatus, 0)
        XCTAssertTrue(stderr.contains("rank \(victim) (\(role))"), stderr)
        // No rank of the run is left.
        for rank in 0..<3 { XCTAssertNil(pid(ofRank: rank, marker: runDir.path), "rank \(rank) still running") }
        // The last checkpoint is intact: a resumed run starts from it and trains on.
        let last = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: runDir.path)
            .filter { $0.hasPrefix("checkpoint-") }.compactMap { Int($0.dropFirst("checkpoint-".count)) }.max())
        let resumed = try runRQAT(trainArguments(out: out, signal: "top-8", steps: last + 2), ranks: nil)
        XCTAssertTrue(resumed.stderr.contains("resuming at step \(last)"), resumed.stderr)
        XCTAssertNoThrow(try finalWeights(out, step: last + 2))
    }

    func testKilledStudentStopsEveryRankAndIsNamed() throws { try killRankAndResume(victim: 2, role: "student 1 of 2") }
    func testKilledTeacherStopsEveryRankAndIsNamed() throws { try killRankAndResume(victim: 0, role: "teacher 0 of 1") }
}
