import Foundation
import Formats
import Model
import Quant
import Tensors
import TestSupport
import Train
import XCTest

/// QAT through the SFT loop: fake-quant weights train, LSQ grids are optimizer parameters, and a
/// resumed QAT run is bit-identical to an uninterrupted one.
final class QATTests: XCTestCase {
    func run(_ dir: URL, name: String, steps: Int, until: Int? = nil, mode: FakeQuantizer.Mode) throws -> (Trainer, [Double]) {
        let tok = try BPETokenizer(tokenizerJSON: TestPaths.fixture("tiny-tokenizer/tokenizer.json"))
        let lines = (0..<8).map { i in #"{"prompt": "What is \#(i) + \#(i)?", "completion": "\#(i) + \#(i) = \#(2 * i)."}"# }
        let url = dir.appendingPathComponent("data.jsonl")
        try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        let data = try SFTDataset.load(url, tokenizer: tok, format: .chat, template: .chatML, seqLen: 48)
        let config = ModelConfig(modelType: .llama, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2,
                                 numAttentionHeads: 4, numKeyValueHeads: 2, vocabSize: tok.vocabSize,
                                 maxPositionEmbeddings: 64, tieWordEmbeddings: true)
        let model = TrainableDecoder(config: config, seed: 3)
        let quantizer = try FakeQuantizer(decoder: model, scheme: try QuantScheme.parse("w4g16"), mode: mode)
        var options = TrainOptions()
        options.steps = steps
        options.seqLen = 48
        options.batchTokens = 4 * 48
        options.lr = 3e-3
        options.saveEvery = 5
        let trainer = try Trainer(model: model, dataset: data, padId: 0, options: options,
                                     runDir: dir.appendingPathComponent(name), quantizer: quantizer)
        var losses: [Double] = []
        try trainer.run(untilStep: until) { losses.append($0.loss) }
        return (trainer, losses)
    }

    func testLSQTrainingResumesExactly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-qat-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        let (straight, straightLosses) = try run(dir, name: "a", steps: 10, mode: .lsq)
        XCTAssertLessThan(straightLosses.last!, straightLosses.first!)
        XCTAssertTrue(straight.parameters.contains { $0.name.hasSuffix("_scale") })
        XCTAssertFalse(straight.optimizer.decayed.contains { $0.hasSuffix("_scale") || $0.hasSuffix("_zero") },
                       "step sizes and zero points are not weight-decayed")

        let (_, firstHalf) = try run(dir, name: "b", steps: 10, until: 5, mode: .lsq)
        let (resumed, secondHalf) = try run(dir, name: "b", steps: 10, mode: .lsq)
        XCTAssertEqual(firstHalf + secondHalf, straightLosses)
        for (a, b) in zip(straight.parameters, resumed.parameters) {
            XCTAssertEqual(a.name, b.name)
            XCTAssertTrue(a.value.buffer.elementsEqual(b.value.buffer), "\(a.name) differs after resume")
        }
    }

    func testSTETrainingLowersTheLoss() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-qat-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let (_, losses) = try run(dir, name: "ste", steps: 30, mode: .ste)
        XCTAssertLessThan(losses.last!, 0.7 * losses.first!)
    }
}

extension QATTests {
    /// The packed export of a trained quantizer reproduces its fake-quant weights up to the fp16
    /// rounding of the scales (and the integer rounding of LSQ zero points).
    func testExportMatchesFakeQuantWeights() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-qat-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for mode in [FakeQuantizer.Mode.ste, .lsq] {
            let (trainer, _) = try run(dir, name: "export-\(mode)", steps: 5, mode: mode)
            let quantizer = try XCTUnwrap(trainer.quantizer as? FakeQuantizer)
            let exported = quantizer.exportQuantized()
            XCTAssertEqual(exported.count, 2 * 7)
            for name in quantizer.weightNames {
                let weight = quantizer.weight(named: name)
                let fake = Tensor(shape: weight.value.shape)
                quantizer.forwardWeight(of: weight, into: fake.ptr)
                let packed = try XCTUnwrap(exported[name]).dequantized()
                // Rounding the scale to fp16 (and an LSQ zero to an integer) can move a weight
                // that sat near a rounding boundary by one step; nothing may move further, and
                // such weights must be rare.
                let step = quantizer.grid(of: name).scales.max() ?? 1
                var worst: Float = 0, moved = 0
                for i in 0..<fake.count {
                    let d = abs(fake.ptr[i] - packed.ptr[i])
                    worst = max(worst, d)
                    if d > 0.5 * step { moved += 1 }   // a changed code, not just the fp16 scale
                }
                XCTAssertLessThanOrEqual(worst, 1.01 * step, "\(mode) \(name): export differs by \(worst)")
                XCTAssertLessThan(Double(moved) / Double(fake.count), 0.05, "\(mode) \(name): \(moved) of \(fake.count) weights moved")
            }
        }
    }

    /// The inference decoder decodes from the trainer's current Q(W) after optimizer updates,
    /// through a view that shares the trainer's tensors (no reload, no second layout).
    func testInferenceViewFollowsTheTrainedQuantizedWeights() throws {
        let dir = try makeScratchDirectory("rqat-view")
        let (trainer, _) = try run(dir, name: "view", steps: 4, until: 2, mode: .lsq)
        let model = trainer.model
        let view = model.inferenceWeights()
        XCTAssertTrue(view.embedding === model.parameter(DecoderArchitecture.name(.embedding))!.value, "the embedding is shared")
        let prompt = [5, 9, 2, 7, 11, 3]
        func agree(_ what: String) -> Tensor {
            let training = model.forward(tokens: prompt, batch: 1, length: prompt.count)
            let decoder = Decoder(weights: view)
            let inference = decoder.forward([SequenceChunk(sequence: 0, tokens: prompt)],
                                            cache: decoder.makeCache(capacities: [prompt.count]), allLogits: true)
            var worst: Float = 0, scale: Float = 0
            for i in 0..<training.count {
                worst = max(worst, abs(training.ptr[i] - inference.ptr[i]))
                scale = max(scale, abs(training.ptr[i]))
            }
            XCTAssertLessThan(worst, 1e-4 * scale, what)
            return inference
        }
        let before = agree("after 2 steps")
        // Two more optimizer steps move W and the LSQ grids; the same view follows after a sync.
        try trainer.run(untilStep: 4)
        model.syncInferenceWeights()
        let after = agree("after 4 steps")
        var moved: Float = 0
        for i in 0..<before.count { moved = max(moved, abs(before.ptr[i] - after.ptr[i])) }
        XCTAssertGreaterThan(moved, 1e-4, "the updates changed the logits, or the comparison proves nothing")
    }
}
