import Foundation
import Formats
@testable import Jobs
import Model
import Quant
import Tensors
import Train
import TestSupport
import XCTest

/// `rqat ptq` as a library job on a tiny Qwen3 whose matrices fit the packed format: the report
/// it returns and leaves in OUT/ptq-report.json.
final class PTQJobTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try makeScratchDirectory("rqat-ptq-job")
        try TinyModels.writeModel(at: dir.appendingPathComponent("model"), seed: 3, headDim: 32)
        let text = (0..<24).map { "Question \($0): a shop sells \(12 + $0) apples and \(3 + $0 % 5) pears; how many fruits are sold?" }
        try text.joined(separator: "\n").write(to: dir.appendingPathComponent("calib.txt"), atomically: true, encoding: .utf8)
    }

    func job(_ method: PTQMethod, calibration: Bool = true, out: String) throws -> PTQJob {
        PTQJob(model: dir.appendingPathComponent("model").path, scheme: try QuantScheme.parse("w4g32"), method: method,
               calibration: calibration ? dir.appendingPathComponent("calib.txt").path : nil, calibrationSamples: 6,
               seqLen: 32, clip: false, actOrder: false, damp: 0.01, out: dir.appendingPathComponent(out).path)
    }

    func testReportListsEveryMatrixWithItsErrorAndTheSum() throws {
        var lines: [String] = []
        let report = try job(.gptq, out: "gptq").run { lines.append($0) }
        // 2 layers x (q, k, v, o, gate, up, down).
        XCTAssertEqual(report.matrices.count, 14)
        XCTAssertEqual(report.matrices.first?.name, "model.layers.0.self_attn.q_proj.weight")
        XCTAssertEqual(report.calibrationWindows, 6)
        XCTAssertEqual(report.scheme, "w4g32-asym")
        XCTAssertEqual(report.method, "gptq")
        let errors = report.matrices.compactMap(\.relativeOutputError)
        XCTAssertEqual(errors.count, 14)
        XCTAssertTrue(errors.allSatisfy { $0 > 0 && $0 < 1 }, "\(errors)")
        XCTAssertEqual(try XCTUnwrap(report.sumRelativeOutputError), errors.reduce(0, +), accuracy: 1e-12)
        // The figure of the progress line is the report's sum.
        XCTAssertTrue(lines.contains(String(format: "ptq: sum of relative output errors over 14 matrices: %.4f", report.sumRelativeOutputError!)), "\(lines)")
        // The full-precision model's activation outliers on the same windows, every site of both blocks.
        let outliers = try XCTUnwrap(report.activationOutliers)
        XCTAssertEqual(outliers.map(\.site), Array(repeating: ["qkv", "output", "gateUp", "down"], count: 2).flatMap { $0 })
        XCTAssertTrue(outliers.allSatisfy { $0.maxToMedian >= 1 && $0.kurtosis > 0 && $0.maxAbs > 0 }, "\(outliers)")
        XCTAssertTrue(lines.contains { $0.hasPrefix("ptq: activation outliers of the model on the calibration windows") }, "\(lines)")

        let out = dir.appendingPathComponent("gptq")
        XCTAssertEqual(try PTQReport.read(out: out), report)
        // The report sits next to a checkpoint that still opens.
        XCTAssertEqual(try Checkpoint.open(out.path).config.numHiddenLayers, 2)
    }

    func testGPTQBeatsRTNOnTheCalibrationWindows() throws {
        let rtn = try job(.rtn, out: "rtn").run { _ in }
        let gptq = try job(.gptq, out: "gptq").run { _ in }
        XCTAssertLessThan(try XCTUnwrap(gptq.sumRelativeOutputError), try XCTUnwrap(rtn.sumRelativeOutputError))
    }

    func testRTNWithoutCalibrationHasNoErrors() throws {
        let report = try job(.rtn, calibration: false, out: "rtn-plain").run { _ in }
        XCTAssertEqual(report.matrices.count, 14)
        XCTAssertTrue(report.matrices.allSatisfy { $0.relativeOutputError == nil })
        XCTAssertNil(report.sumRelativeOutputError)
        XCTAssertNil(report.activationOutliers, "no calibration text, nothing to measure")
        XCTAssertNil(try PTQReport.read(out: dir.appendingPathComponent("rtn-plain")).sumRelativeOutputError)
    }

    /// A training job from a PTQ checkpoint (act-order GPTQ, as the SmolLM2 recipe's) starts
    /// QAT from that model: each fake-quant weight at step 0 is the checkpoint's weight, bit for
    /// bit. QAT at another scheme than the init's is refused, naming the checkpoint.
    func testQATFromAPTQCheckpointStartsFromItsWeights() throws {
        var j = try job(.gptq, out: "gptq-act-order")
        j.actOrder = true
        _ = try j.run { _ in }
        let initDir = dir.appendingPathComponent("gptq-act-order")
        try TinyModels.writeArithmeticData(to: dir.appendingPathComponent("train.jsonl"), count: 8)
        func spec(_ scheme: String) throws -> TrainingSpec {
            var options = TrainOptions()
            options.seqLen = 64
            return TrainingSpec(data: dir.appendingPathComponent("train.jsonl").path, format: .chat, dropLong: true,
                                qat: try QuantScheme.parse(scheme), lsq: false, options: options, runDir: dir.appendingPathComponent("qat"))
        }
        var lines: [String] = []
        let student = try StudentSetup(model: initDir.path, spec: try spec("w4g32"), log: { lines.append($0) })
        let quantizer = try XCTUnwrap(student.quantizer)
        XCTAssertTrue(student.decoder.weightQuantizer as AnyObject? === quantizer,
                      "the decoder runs through the quantizer before any trainer installs it (an RL probe samples from it)")
        let stored = try Checkpoint.open(initDir.path).weights
        for p in student.decoder.linearWeights {
            let out = Tensor(shape: p.value.shape)
            quantizer.forwardWeight(of: p, into: out.ptr)
            XCTAssertEqual(out.array, try stored.tensor(p.name).array, "\(p.name) at step 0 is not the init's")
        }
        XCTAssertTrue(lines.contains { $0.contains("grids of 14 quantized matrices") }, "\(lines)")
        XCTAssertThrowsError(try StudentSetup(model: initDir.path, spec: try spec("w3g32"), log: { _ in })) {
            XCTAssertTrue("\($0)".contains(initDir.path) && "\($0)".contains("--qat w4g32"), "\($0)")
        }
    }

    func testActivationOnlySchemeIsRefusedBeforeAnyWork() throws {
        var j = try job(.rtn, out: "never")
        j.scheme = try QuantScheme.parse("a8")
        XCTAssertThrowsError(try j.run { _ in }) { XCTAssertTrue("\($0)".contains("w<bits>"), "\($0)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("never").path))
    }

    /// QAT from a QuaRot or FlatQuant init trains the function the loaded init runs: the student's
    /// training decoder (online transforms fixed, fake-quant weights on the init's grid, activation
    /// and KV quantizers) gives the loaded model's logits; without the transforms it does not.
    /// The model it exports records the transforms again.
    func testStudentOfATransformedInitRunsTheLoadedModelsFunction() throws {
        let scheme = try QuantScheme.parse("w4a8kv8")
        let tokens = [5, 17, 42, 9, 33, 61, 2, 28, 14, 50]
        for transform in PTQTransform.allCases {
            var j = try job(.rtn, out: transform.rawValue)
            j.scheme = scheme
            j.transform = transform
            j.flatQuant.epochs = 2
            _ = try j.run { _ in }
            let path = dir.appendingPathComponent(transform.rawValue).path
            let loaded = try LanguageModel(path: path)
            let cache = loaded.decoder.makeCache(capacities: [tokens.count])
            let want = loaded.decoder.forward([SequenceChunk(sequence: 0, tokens: tokens)], cache: cache, allLogits: true)
            let student = try StudentModel(model: path, qat: scheme, lsq: false) { _ in }
            XCTAssertNotNil(student.onlineTransforms)
            let got = student.decoder.forward(tokens: tokens, batch: 1, length: tokens.count)
            func relative(_ a: Tensor, _ b: Tensor) -> Float {
                var d: Float = 0, m: Float = 0
                for i in 0..<a.count { d = max(d, abs(a.ptr[i] - b.ptr[i])); m = max(m, abs(a.ptr[i])) }
                return d / m
            }
            XCTAssertLessThan(relative(want, got), 1e-2, "\(transform)")
            let bare = try TrainableDecoder(config: loaded.config, source: loaded.checkpoint.weights)
            XCTAssertGreaterThan(relative(want, bare.forward(tokens: tokens, batch: 1, length: tokens.count)), 5e-2, "\(transform): the transforms matter")

            // Backward runs through the fixed transforms (a batch of two).
            let pair = tokens + tokens.reversed()
            let logits2 = student.decoder.forward(tokens: pair, batch: 2, length: tokens.count)
            student.decoder.backward(dLogits: Tensor(shape: logits2.shape))

            let runDir = dir.appendingPathComponent("qat-" + transform.rawValue)
            try student.exportQuantized(runDir: runDir, extraFiles: try student.tokenizerFiles(in: runDir, write: true)) { _ in }
            let exported = try Checkpoint.open(runDir.appendingPathComponent("quantized").path)
            XCTAssertEqual(exported.rotation, loaded.checkpoint.rotation)
            XCTAssertEqual(exported.activationQuant, loaded.checkpoint.activationQuant)
            let again = try LanguageModel(checkpoint: exported)
            let logits = again.decoder.forward([SequenceChunk(sequence: 0, tokens: tokens)], cache: again.decoder.makeCache(capacities: [tokens.count]), allLogits: true)
            XCTAssertLessThan(relative(want, logits), 1e-5, "\(transform): the export is the init")
        }
    }

    /// From a FlatQuant init with trainTransforms the transforms are parameters of training, and
    /// what they become is what the exported model runs.
    func testTrainedFlatQuantTransformsGoIntoTheExport() throws {
        var j = try job(.rtn, out: "flatquant")
        j.scheme = try QuantScheme.parse("w4a8kv8")
        j.transform = .flatquant
        j.flatQuant.epochs = 1
        _ = try j.run { _ in }
        let path = dir.appendingPathComponent("flatquant").path
        let fixed = try StudentModel(model: path, qat: j.scheme, lsq: false) { _ in }
        XCTAssertTrue(fixed.decoder.transformParameters.isEmpty)
        let student = try StudentModel(model: path, qat: j.scheme, lsq: false, trainTransforms: true) { _ in }
        let params = student.decoder.transformParameters
        XCTAssertEqual(params.count, 2 * 6 * 3, "L, R and s of 4 sites and the key and value transforms in 2 blocks")
        let left = try XCTUnwrap(params.first { $0.name == "model.layers.1.flatquant.down.left" })
        let keyLeft = try XCTUnwrap(params.first { $0.name == "model.layers.1.flatquant.k.left" })
        left.value.ptr[1] += 0.25   // as a training step would move them
        keyLeft.value.ptr[1] += 0.25
        let runDir = dir.appendingPathComponent("qat-trained")
        try student.exportQuantized(runDir: runDir, extraFiles: try student.tokenizerFiles(in: runDir, write: true)) { _ in }
        let exported = try Checkpoint.open(runDir.appendingPathComponent("quantized").path)
        XCTAssertEqual(try exported.weights.tensor("model.layers.1.flatquant.down.left").array, left.value.array)
        XCTAssertEqual(try exported.weights.tensor("model.layers.1.flatquant.k.left").array, keyLeft.value.array)
        let tokens = [5, 17, 42, 9, 33, 61, 2, 28]
        let want = student.decoder.forward(tokens: tokens, batch: 1, length: tokens.count)
        let lm = try LanguageModel(checkpoint: exported)
        let got = lm.decoder.forward([SequenceChunk(sequence: 0, tokens: tokens)], cache: lm.decoder.makeCache(capacities: [tokens.count]), allLogits: true)
        var d: Float = 0, m: Float = 0
        for i in 0..<want.count { d = max(d, abs(want.ptr[i] - got.ptr[i])); m = max(m, abs(want.ptr[i])) }
        XCTAssertLessThan(d / m, 1e-2, "the export runs the moved transform")
    }
}
