import Foundation
import Formats
import Model
import Tensors
import TestSupport
import Train
import XCTest

/// The SFT loop end to end on a tiny random model with a real (tiny) byte-level BPE tokenizer.
final class SFTTrainerTests: XCTestCase {
    func tokenizer() throws -> BPETokenizer {
        try BPETokenizer(tokenizerJSON: TestPaths.fixture("tiny-tokenizer/tokenizer.json"))
    }

    func tinyConfig(vocab: Int) -> ModelConfig {
        ModelConfig(modelType: .qwen3, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                    numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, vocabSize: vocab,
                    rmsNormEps: 1e-6, ropeTheta: 10_000, maxPositionEmbeddings: 128, tieWordEmbeddings: true)
    }

    /// 16 arithmetic examples as JSONL in a fresh directory.
    func dataset(_ tok: BPETokenizer, in dir: URL) throws -> SFTDataset {
        var lines: [String] = []
        for i in 0..<16 {
            let a = 3 + i, b = 2 * i + 1
            let record = ["prompt": "What is \(a) + \(b)?", "completion": "\(a) + \(b) = \(a + b). The answer is \(a + b)."]
            lines.append(String(decoding: try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]), as: UTF8.self))
        }
        let url = dir.appendingPathComponent("train.jsonl")
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        return try SFTDataset.load(url, tokenizer: tok, format: .chat, template: .chatML, seqLen: 64)
    }

    func scratch() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-sft-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func makeTrainer(_ dir: URL, options: TrainOptions, runName: String = "run") throws -> Trainer {
        let tok = try tokenizer()
        let data = try dataset(tok, in: dir)
        let model = TrainableDecoder(config: tinyConfig(vocab: tok.vocabSize), seed: 7)
        return try Trainer(model: model, dataset: data, padId: tok.id(of: "<|endoftext|>") ?? 0,
                              options: options, runDir: dir.appendingPathComponent(runName))
    }

    /// SFT on 16 examples drives the completion loss below 0.05.
    func testOverfitsSixteenExamples() throws {
        var options = TrainOptions()
        options.steps = 200
        options.seqLen = 64
        options.batchTokens = 16 * 64
        options.lr = 1e-2
        options.warmupSteps = 10
        options.weightDecay = 0
        let trainer = try makeTrainer(try scratch(), options: options)
        var losses: [Double] = []
        try trainer.run { losses.append($0.loss) }
        XCTAssertEqual(losses.count, 200)
        XCTAssertGreaterThan(losses.first!, 3, "a random model starts near log(vocab)")
        XCTAssertLessThan(losses.last!, 0.05, "loss after 200 steps: \(losses.last!)")
    }

    /// 20 uninterrupted steps equal 10 steps, a stop, a resume from the checkpoint and 10 more:
    /// same losses, bit-identical weights.
    func testResumeIsExact() throws {
        var options = TrainOptions()
        options.steps = 20
        options.seqLen = 64
        options.batchTokens = 4 * 64          // 4 batches an epoch: resuming crosses an epoch boundary
        options.gradAccumulation = 2
        options.lr = 3e-3
        options.warmupSteps = 3
        options.saveEvery = 10
        let dir = try scratch()

        let straight = try makeTrainer(dir, options: options, runName: "straight")
        var straightLosses: [Double] = []
        try straight.run { straightLosses.append($0.loss) }

        let first = try makeTrainer(dir, options: options, runName: "resumed")
        var resumedLosses: [Double] = []
        try first.run(untilStep: 10) { resumedLosses.append($0.loss) }
        let second = try makeTrainer(dir, options: options, runName: "resumed")   // a new process would do this
        XCTAssertEqual(second.step, 10)
        try second.run { resumedLosses.append($0.loss) }

        XCTAssertEqual(resumedLosses, straightLosses)
        for (a, b) in zip(straight.model.parameters, second.model.parameters) {
            XCTAssertEqual(a.name, b.name)
            XCTAssertTrue(a.value.buffer.elementsEqual(b.value.buffer), "\(a.name) differs after resume")
        }
        let lines = try String(contentsOf: dir.appendingPathComponent("resumed/metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n")
        XCTAssertEqual(lines.count, 20)
    }

    /// A non-finite loss skips the step; three in a row stop the run naming the last good
    /// checkpoint, which stays loadable and finite.
    func testNonFiniteLossStopsAfterThreeSkippedSteps() throws {
        var options = TrainOptions()
        options.steps = 10
        options.seqLen = 64
        options.batchTokens = 4 * 64
        options.saveEvery = 2
        let dir = try scratch()
        let trainer = try makeTrainer(dir, options: options)
        try trainer.run(untilStep: 2)
        trainer.model.parameters[0].value.ptr[0] = .nan   // poison the embedding
        XCTAssertThrowsError(try trainer.run()) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("non-finite"), message)
            XCTAssertTrue(message.contains("checkpoint-000002"), message)
        }
        XCTAssertEqual(trainer.step, 5, "steps 3, 4, 5 were skipped")
        let good = try XCTUnwrap(TrainCheckpoint.latestCheckpoint(in: dir.appendingPathComponent("run")))
        XCTAssertEqual(good.lastPathComponent, "checkpoint-000002")
        let fresh = TrainableDecoder(config: trainer.model.config, seed: 1)
        _ = try TrainCheckpoint.load(from: good, into: fresh.parameters, optimizer: nil)
        XCTAssertTrue(fresh.parameters.allSatisfy { $0.value.buffer.allSatisfy(\.isFinite) })
    }
}
