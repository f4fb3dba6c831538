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
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-kd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try writeTinyModel(named: "teacher", seed: 11)
        try writeTinyModel(named: "student", seed: 7)
        var lines: [String] = []
        for i in 0..<16 {
            let a = 3 + i, b = 2 * i + 1
            let record = ["prompt": "What is \(a) + \(b)?", "completion": "\(a) + \(b) = \(a + b). The answer is \(a + b)."]
            lines.append(String(decoding: try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]), as: UTF8.self))
        }
        try lines.joined(separator: "\n").write(to: dir.appendingPathComponent("train.jsonl"), atomically: true, encoding: .utf8)
    }

    override func tearDown() { if ProcessInfo.processInfo.environment["RQAT_KEEP_TEST_DIRS"] == nil { try? FileManager.default.removeItem(at: dir) } }

    /// A random tiny Qwen3 with the tiny BPE tokenizer, as a Hugging Face directory.
    func writeTinyModel(named name: String, seed: UInt64, vocabOverride: Int? = nil) throws {
        let model = dir.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        let tokenizer = TestPaths.fixture("tiny-tokenizer/tokenizer.json")
        try FileManager.default.copyItem(at: tokenizer, to: model.appendingPathComponent("tokenizer.json"))
        let vocab = try vocabOverride ?? BPETokenizer(tokenizerJSON: tokenizer).vocabSize
        let config = ModelConfig(modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: vocab,
                                 rmsNormEps: 1e-6, ropeTheta: 10_000, maxPositionEmbeddings: 128, tieWordEmbeddings: true)
        try JSONEncoder().encode(config).write(to: model.appendingPathComponent("config.json"))
        var rng = SeededRNG(seed: seed)
        let tensors = Checkpoint.expectedShapes(config).map { entry -> (name: String, tensor: Tensor, dtype: SafeTensorsDType) in
            let t = Tensor(shape: entry.shape)
            if entry.shape.count == 1 { t.fill(1) } else { rng.fillNormal(t, std: 0.2) }
            return (entry.name, t, .F32)
        }
        try SafeTensorsWriter.write(tensors, to: model.appendingPathComponent("model.safetensors"))
    }

    func trainArguments(out: String, signal: String, steps: Int = 3) -> [String] {
        ["train", "--teacher", dir.appendingPathComponent("teacher").path, "--student", dir.appendingPathComponent("student").path,
         "--data", dir.appendingPathComponent("train.jsonl").path, "--out", dir.appendingPathComponent(out).path,
         "--steps", "\(steps)", "--batch-tokens", "256", "--seq-len", "64", "--grad-accum", "2", "--signal", signal,
         "--kd-temperature", "2", "--lr", "1e-2", "--warmup", "0", "--threads", "1", "--bucket-mb", "0.01"]
    }

    func finalWeights(_ out: String, step: Int = 3) throws -> SafeTensorsFile {
        try SafeTensorsFile(url: dir.appendingPathComponent(out).appendingPathComponent(String(format: "checkpoint-%06d", step))
                                .appendingPathComponent("model.safetensors"))
    }

    /// Largest relative difference ||a - b|| / ||b|| over the tensors of two checkpoints.
    func maxRelativeDifference(_ a: SafeTensorsFile, _ b: SafeTensorsFile) throws -> Double {
        var worst = 0.0
        for name in b.tensorNames {
            let x = try a.tensor(name), y = try b.tensor(name)
            var diff = 0.0, norm = 0.0
            for i in 0..<y.count { diff += pow(Double(x.ptr[i] - y.ptr[i]), 2); norm += pow(Double(y.ptr[i]), 2) }
            worst = max(worst, (diff / max(norm, 1e-30)).squareRoot())
        }
        return worst
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
            XCTAssertLessThan(try maxRelativeDifference(student, single), 1e-5, "1 teacher + 2 students, \(signal)")
            XCTAssertLessThan(try maxRelativeDifference(try finalWeights("t2s2-\(signal)"), single), 1e-5, "2 teachers + 2 students, \(signal)")
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
}
