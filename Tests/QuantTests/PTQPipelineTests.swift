import Foundation
import Formats
import Model
import Quant
import Tensors
import TestSupport
import XCTest

/// The whole PTQ path on the tiny Qwen3 checkpoint: sequential GPTQ over calibration data,
/// packed export, reload, and the same logits as the in-memory fake-quant model.
final class PTQPipelineTests: XCTestCase {
    func decoder() throws -> Decoder {
        let checkpoint = try Checkpoint.open(TestPaths.fixture("tiny-qwen3").path)
        return Decoder(weights: try DecoderWeights(config: checkpoint.config, source: checkpoint.weights))
    }

    func calibration(count: Int, length: Int, vocab: Int, seed: UInt64) -> [[Int]] {
        var rng = SeededRNG(seed: seed)
        return (0..<count).map { _ in (0..<length).map { _ in Int(rng.next() % UInt64(vocab)) } }
    }

    func logits(_ d: Decoder, _ tokens: [Int]) -> Tensor {
        d.forward([SequenceChunk(sequence: 0, tokens: tokens)], cache: d.makeCache(capacities: [tokens.count]), allLogits: true)
    }

    func testGPTQBeatsRTNAndExportReloadsBitIdentically() throws {
        let scheme = try QuantScheme.parse("w3g32")
        let calib = calibration(count: 8, length: 48, vocab: 256, seed: 5)

        let rtnModel = try decoder()
        let rtn = try PTQ.quantize(decoder: rtnModel, calibration: calib, options: PTQOptions(scheme: scheme, method: .rtn))
        let gptqModel = try decoder()
        let gptq = try PTQ.quantize(decoder: gptqModel, calibration: calib, options: PTQOptions(scheme: scheme, method: .gptq))
        XCTAssertEqual(gptq.quantized.count, 2 * 7)
        let rtnError = try XCTUnwrap(rtn.totalRelativeOutputError), gptqError = try XCTUnwrap(gptq.totalRelativeOutputError)
        XCTAssertLessThan(gptqError, rtnError, "GPTQ \(gptqError) vs RTN \(rtnError)")

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("rqat-ptq-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try QuantizedCheckpoint.save(directory: dir, config: gptqModel.config,
                                     fullPrecision: PTQ.fullPrecisionTensors(gptqModel.weights),
                                     quantized: gptq.quantized, scheme: scheme, method: "gptq")
        let reopened = try Checkpoint.open(dir.path)
        let reloaded = Decoder(weights: try DecoderWeights(config: reopened.config, source: reopened.weights))
        let tokens = calibration(count: 1, length: 20, vocab: 256, seed: 9)[0]
        let a = logits(gptqModel, tokens), b = logits(reloaded, tokens)
        XCTAssertTrue(a.buffer.elementsEqual(b.buffer), "reloaded packed model differs from the in-memory fake-quant model")
        // And quantization changed the model.
        let fp = logits(try decoder(), tokens)
        XCTAssertFalse(fp.buffer.elementsEqual(a.buffer))
    }

    func testGPTQWithoutCalibrationIsAnError() throws {
        XCTAssertThrowsError(try PTQ.quantize(decoder: try decoder(), calibration: [],
                                              options: PTQOptions(scheme: try QuantScheme.parse("w4g32"), method: .gptq))) {
            XCTAssertTrue("\($0)".contains("calibration"), "\($0)")
        }
    }
}
